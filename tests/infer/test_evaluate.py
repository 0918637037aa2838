"""fastseg evaluate: full-resolution scores from one confusion matrix, table and JSON output."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.export.bundle import bundle_path_for
from fastseg.cli import main

pytestmark = pytest.mark.slow


def _numpy_iou(pred, truth, k):
    inter = np.logical_and(pred == k, truth == k).sum()
    union = np.logical_or(pred == k, truth == k).sum()
    return inter / union if union else None


def test_evaluate_matches_an_independent_count(trained, tiny_data, tmp_path):
    import fastseg
    from fastseg.infer.evaluate import evaluate

    res = evaluate(trained.export, tiny_data, split="valid", plot=tmp_path / "cm.png")
    assert res.n_images == 2 and (tmp_path / "cm.png").is_file()
    from fastseg.data.dataset import discover

    valid = discover(tiny_data).valid
    preds = fastseg.load(trained.export).predict([s.image for s in valid])
    truths = [np.asarray(Image.open(s.mask)) for s in valid]  # demo masks hold class indices
    pred, truth = np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in truths])
    for k, name in enumerate(["background", "disc", "square", "triangle"]):
        want = _numpy_iou(pred, truth, k)
        got = res.scores["per_class"][name]["iou"]
        assert (got is None and want is None) or got == pytest.approx(want)
        assert res.scores["per_class"][name]["support"] == int((truth == k).sum())
    assert res.scores["pixel_accuracy"] == pytest.approx((pred == truth).mean())


def test_evaluate_json_has_the_documented_keys(trained, tiny_data, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(bundle_path_for(trained.export)), "--data", str(tiny_data), "--split", "all",
                                    "--json", "--plot", str(tmp_path / "cm.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert set(out) == {"miou", "dice", "pixel_accuracy", "per_class"}
    assert set(out["per_class"]) == {"background", "disc", "square", "triangle"}
    assert all(set(v) == {"iou", "dice", "support"} for v in out["per_class"].values())
    assert sum(v["support"] for v in out["per_class"].values()) == 10 * 64 * 64  # every pixel of every image


def test_evaluate_table(trained, tiny_data, tmp_path):
    res = CliRunner().invoke(main, ["evaluate", str(trained.export), "--data", str(tiny_data),
                                    "--plot", str(tmp_path / "cm.png")])
    assert res.exit_code == 0, res.output
    assert "2 image(s), split valid" in res.output and "mIoU" in res.output and "triangle" in res.output


def test_evaluate_test_split_needs_test_txt(trained, tiny_data):
    res = CliRunner().invoke(main, ["evaluate", str(bundle_path_for(trained.export)), "--data", str(tiny_data), "--split", "test"])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {tiny_data / 'test.txt'}: no test.txt (list the test images there, "
                                  "one name per line, or use --split valid|all)")


def test_evaluate_refuses_data_with_other_classes(trained, tmp_path):
    from fastseg.data.demo import make_demo_data

    other = make_demo_data(tmp_path / "other", n=3, size=32, seed=2, n_valid=1)
    (other / "codes.txt").write_text("background\ndisc\nsquare\nstar\n")
    res = CliRunner().invoke(main, ["evaluate", str(bundle_path_for(trained.export)), "--data", str(other)])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {other}: classes background, disc, square, star do not match the model's "
                                  "background, disc, square, triangle (evaluate on data labelled like the training set)")


def test_evaluate_help_has_example():
    res = CliRunner().invoke(main, ["evaluate", "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "fastseg evaluate" in res.output
