"""Models and runs made by an older fastseg keep working with this one.

``tests/fixtures/fastseg-af8131d.tar.gz`` is the ``fastseg/`` package as of commit af8131d (the last
commit before the package was restructured). A subprocess runs THAT code to train a tiny model and
to leave a run interrupted after its first epoch; this process then loads, predicts and resumes with
the current code. A ``.pkl`` pickles fastseg's classes by module path, so this is what a user's old
export exercises.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parents[1] / "fixtures" / "fastseg-af8131d.tar.gz"

# Runs inside the old code: a finished 1-epoch run (export + bundle) and a 2-epoch run that stops
# for good right after its first checkpoint (as a kill -9 would).
DRIVER = """
import os, sys
from fastseg.config import FitConfig
from fastseg.train import fit
import fastseg.callbacks as cb

data, out = sys.argv[1], sys.argv[2]
common = dict(data=data, lr=1e-3, bs=4, weights="none", encoder="tu-test_efficientnet", runs_dir=out + "/runs")
fit(FitConfig(epochs=1, export=out + "/old.pkl", name="done", **common))
real = cb.save_checkpoint
def save_then_die(dest, learn, **state):
    real(dest, learn, **state)
    os._exit(0)
cb.save_checkpoint = save_then_die
fit(FitConfig(epochs=2, export=out + "/resumed.pkl", name="cut", **common))
"""


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, tiny_data) -> Path:
    """Artefacts written by the af8131d code: old.pkl, old/ (bundle), runs/done, runs/cut (1 of 2 epochs)."""
    root = tmp_path_factory.mktemp("old")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(root / "code", filter="data")
    env = {**os.environ, "PYTHONPATH": str(root / "code")}
    res = subprocess.run([sys.executable, "-c", DRIVER, str(tiny_data), str(root)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (root / "old.pkl").is_file() and (root / "runs" / "cut" / "last.pth").is_file()
    assert not (root / "runs" / "cut" / "metrics.json").exists()
    return root


def test_old_pkl_loads_with_load_learner_and_predicts(old_run, tiny_data, tmp_path):
    img = sorted((tiny_data / "images").iterdir())[0]
    code = (
        "import json\n"
        "from fastai.learner import load_learner\n"
        f"learn = load_learner({str(old_run / 'old.pkl')!r})\n"
        f"mask, _, probs = learn.predict({str(img)!r})\n"
        "print(json.dumps({'shape': list(mask.shape), 'classes': int(probs.shape[0])}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"shape": [64, 64], "classes": 4}


def test_old_pkl_and_bundle_predict_the_same_masks(old_run, tiny_data, tmp_path):
    from click.testing import CliRunner

    from fastseg.cli import main

    images = tiny_data / "images"
    masks = {}
    for name, model in (("pkl", old_run / "old.pkl"), ("bundle", old_run / "old")):
        out = tmp_path / name
        res = CliRunner().invoke(main, ["predict", str(model), str(images), "--out", str(out), "--backend", "torch"])
        assert res.exit_code == 0, res.output
        masks[name] = {p.name: np.asarray(__import__("PIL.Image").Image.open(p)) for p in sorted(out.glob("*.png"))}
    assert len(masks["pkl"]) == len(list(images.iterdir())) > 0
    for name, m in masks["pkl"].items():
        assert np.array_equal(m, masks["bundle"][name]), name


def test_old_interrupted_run_resumes(old_run):
    from fastseg.pipeline import resume

    result = resume(old_run / "runs" / "cut")
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert (old_run / "runs" / "cut" / "metrics.json").is_file()
    assert result.export.is_file()
