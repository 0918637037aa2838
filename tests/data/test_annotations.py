"""Labelling-tool exports end to end: check reports and fit trains each format (the readers:
tests/data/annotations/; predictions written back as pre-annotations: tests/infer/test_prelabels.py)."""

import json

import pytest
from click.testing import CliRunner

from fastseg.cli import main
from label_sets import make_coco, make_cvat, make_labelme
from layout_sets import snapshot

pytest.importorskip("pycocotools")  # the `coco` extra (in the test extra, so CI runs these)
pytestmark = pytest.mark.usefixtures("label_cache")  # rendered masks go under tmp, never ~/.cache


@pytest.mark.parametrize("make, layout, classes", [
    (make_coco, "coco", ["background", "cat", "dog", "(void)"]),
    (make_cvat, "cvat", ["background", "cat", "dog"]),
    (make_labelme, "labelme", ["background", "cat", "dog"]),
])
def test_check_reports_each_label_format(tmp_path, make, layout, classes):
    root = make(tmp_path / "d")
    before = snapshot(root)
    res = CliRunner().invoke(main, ["check", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["ok"] and rep["layout"] == layout and rep["counts"] == {"train": 5, "valid": 1}
    assert [c["name"] for c in rep["classes"]] == classes
    assert snapshot(root) == before  # nothing written into the data folder


@pytest.mark.slow
@pytest.mark.parametrize("make", [make_coco, make_cvat, make_labelme])
def test_each_label_format_trains(tmp_path, make):
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    root = make(tmp_path / "d")
    cfg = FitConfig(data=str(root), epochs=1, lr=1e-3, bs=4, weights="none", export=str(tmp_path / "m.pkl"),
                    runs_dir=str(tmp_path / "runs"), name="run")
    result = fit(cfg)
    assert result.export.is_file() and list(result.metrics["per_class"]) == ["background", "cat", "dog"]
