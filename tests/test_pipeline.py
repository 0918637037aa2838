"""Fit, resume, dry run (fastseg.pipeline): the plan is made without training or writing anything, and
Ctrl-C's message says what is saved and how to continue at each stage of a run."""

from pathlib import Path

from fastseg.config import FitConfig
from fastseg.pipeline import _Where, plan_fit
from fastseg.train.runs import resume_command


def test_plan_fit_makes_every_choice_and_writes_nothing(tiny_data, tmp_path):
    before = sorted((p, p.stat().st_mtime_ns) for p in tiny_data.rglob("*"))
    said = []
    cfg = FitConfig(data=str(tiny_data), epochs=3, lr=1e-3, bs=4, weights="none", precision="fp32",
                    runs_dir=str(tmp_path / "runs"), export=str(tmp_path / "m.pkl"))
    plan = plan_fit(cfg, notify=said.append)
    assert plan.bs == 4 and plan.size == 64 and plan.precision == "fp32"
    assert list(tmp_path.iterdir()) == [] and sorted((p, p.stat().st_mtime_ns) for p in tiny_data.rglob("*")) == before


def test_ctrl_c_message_says_what_is_saved_at_each_stage(tmp_path):
    run = tmp_path / "runs" / "r"
    assert str(_Where().interrupted()) == "interrupted before the run folder was made; nothing was saved"
    e = _Where(run=run, total=5).interrupted()
    assert str(e) == f"interrupted: {run} has no epoch saved yet; nothing to resume, start the run again"
    assert (e.run, e.epoch) == (run, 0)
    e = _Where(run=run, total=5, resumed=2).interrupted()
    assert str(e) == f"interrupted after epoch 2 of 5 was saved in {run}; continue with: {resume_command(run)}"
    assert e.epoch == 2
    e = _Where(run=run, total=5, resumed=5, finishing=True).interrupted()
    assert str(e) == (f"interrupted while finishing {run} (its training is saved: 5 epochs); finish it with: "
                      f"{resume_command(run)}")
    assert resume_command(Path.cwd() / "runs" / "r") == "fastseg fit --resume runs/r"
