"""Training output that reads well in a log file: no progress-bar frames, one line per epoch, --quiet, --json."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.train.console import epoch_line

REPO = Path(__file__).resolve().parents[2]


def test_epoch_line_has_the_metrics_and_the_count():
    row = {"epoch": 3, "train_loss": 0.41234, "valid_loss": 0.39811, "miou": 0.77123, "dice": 0.853, "time": "00:41"}
    assert epoch_line(3, 25, row) == ("epoch 3  train loss 0.4123  valid loss 0.3981  mIoU 0.7712  Dice 0.8530  "
                                      "time 00:41  (4/25)")


def _fit_args(data, tmp_path, *extra):
    return ["fit", "--data", str(data), "--epochs", "1", "--bs", "4", "--weights", "none", "--lr", "1e-3",
            "--runs-dir", str(tmp_path / "runs"), "--export", str(tmp_path / "model.pkl"), "--precision", "fp32", *extra]  # fp32: scores compared exactly


@pytest.mark.slow
def test_fit_into_a_log_file_has_one_line_per_epoch_and_no_bar_frames(tiny_data, tmp_path):
    log = tmp_path / "log.txt"
    args = _fit_args(tiny_data, tmp_path, "--name", "logged")
    args[args.index("--epochs") + 1] = "2"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as out:  # as `fastseg fit ... > log.txt`: stdout is a file
        done = subprocess.run([sys.executable, "-m", "fastseg", *args], stdout=out, stderr=subprocess.PIPE,
                              env=env, cwd=tmp_path, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert "\r" not in text and "\x1b" not in text and "\u2588" not in text  # no bar frames, ANSI or bar blocks
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    assert epochs[0].startswith("epoch 0  train loss ") and epochs[0].endswith("(1/2)")
    assert "mIoU" in epochs[1] and "Dice" in epochs[1] and " time " in epochs[1] and epochs[1].endswith("(2/2)")
    for line in ("best epoch", "valid mIoU", "exported", f"run folder {tmp_path / 'runs' / 'logged'}", "report"):
        assert any(ln.startswith(line) or line in ln for ln in text.splitlines()), line


@pytest.mark.slow
def test_fit_json_prints_one_object_and_sends_notices_to_stderr(tiny_data, tmp_path):
    res = CliRunner().invoke(main, _fit_args(tiny_data, tmp_path, "--json", "--name", "j"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the whole of stdout is the one object
    assert out["run"] == str(tmp_path / "runs" / "j") and out["best_epoch"] == 0 and out["epochs_run"] == 1
    assert set(out["metrics"]) == {"miou", "dice", "pixel_accuracy", "per_class"}
    assert out["full_resolution"]["miou"] == pytest.approx(out["metrics"]["miou"])
    assert out["report"].endswith("report.html") and any(f.endswith("per_image.csv") for f in out["files"])
    assert "run folder" in res.stderr and "epoch 0  train loss" in res.stderr


@pytest.mark.slow
def test_fit_quiet_prints_only_the_summary(tiny_data, tmp_path):
    res = CliRunner().invoke(main, _fit_args(tiny_data, tmp_path, "--quiet"))
    assert res.exit_code == 0, res.output
    assert res.stderr == ""
    lines = [ln for ln in res.stdout.splitlines() if ln]
    assert lines[0] == "best epoch 0" and lines[1].startswith("valid mIoU")
    assert not any(ln.startswith(("layout", "split", "learning rate", "epoch ")) for ln in lines)


def test_fit_summary_gives_the_whole_image_score_when_it_differs_from_the_crops(capsys, tmp_path):
    from types import SimpleNamespace

    from fastseg.cli import _echo_fit_summary

    scores = {"miou": 0.70, "dice": 0.80, "pixel_accuracy": 0.9, "per_class": {"a": {"iou": 0.7}}}
    outputs = SimpleNamespace(scores={**scores, "miou": 0.65, "dice": 0.75}, report=tmp_path / "report.html")
    result = SimpleNamespace(metrics=scores, outputs=outputs, best_epoch=3, stopped_early=False,
                             export=tmp_path / "m.pkl", run=tmp_path, model=tmp_path / "model.pkl")
    _echo_fit_summary(result)
    out = capsys.readouterr().out
    assert "valid mIoU 0.7000  Dice 0.8000" in out
    assert ("valid mIoU on whole images 0.6500  Dice 0.7500 (the best epoch was picked on centre crops; "
            "per_image.csv has each image)") in out
    assert out.rstrip().endswith(f"report {tmp_path / 'report.html'}")
    outputs.scores = scores  # the same numbers: one line is enough
    _echo_fit_summary(result)
    assert "whole images" not in capsys.readouterr().out
