"""Run folders and checkpoints (fastseg.train.runs): never overwritten, plain-tensor payloads that load with
weights_only, versioned, best.pth settled against last.pth, config.json paths taken from where the run began."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fastseg.errors import ConfigError, TrainingError
from fastseg.train.runs import new_run_dir


def test_named_run_folder_is_never_overwritten(tmp_path):
    new_run_dir(tmp_path, "r")
    with pytest.raises(ConfigError, match="run folder already exists"):
        new_run_dir(tmp_path, "r")
    a, b = new_run_dir(tmp_path, None), new_run_dir(tmp_path, None)
    assert a != b and a.is_dir() and b.is_dir()


def test_run_state_payload_loads_with_weights_only(tmp_path):
    from fastseg.train.runs import CHECKPOINT_VERSION, RunState

    opt = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": np.float64(1e-3), "betas": (0.9, 0.99)}]}
    state = RunState(epoch=2, total_epochs=5, lr=1e-3, lr_source="given", best=np.float64(0.5), best_epoch=1,
                     cms=[np.eye(2, dtype=np.int64), None], model={"w": torch.ones(2)}, opt=opt,
                     data={"root": "/d", "codes": ["a", "b"], "files": "x", "train": 1, "valid": 1})
    torch.save(state.to_payload(), tmp_path / "last.pth")
    back = RunState.from_payload(torch.load(tmp_path / "last.pth", weights_only=True))
    assert back.version == CHECKPOINT_VERSION and back.epoch == 2 and back.best == 0.5 and back.data == state.data
    assert back.cms[0].dtype == torch.int64 and torch.equal(back.cms[0], torch.eye(2, dtype=torch.int64))
    assert back.cms[1] is None and back.opt["param_groups"][0]["lr"] == 1e-3


def test_newer_checkpoint_version_is_refused():
    from fastseg.train.runs import RunState

    with pytest.raises(TrainingError) as e:
        RunState.from_payload({"version": 99, "epoch": 1, "total_epochs": 2, "model": {}}, "runs/x/last.pth")
    assert str(e.value) == ("runs/x/last.pth: written by a newer fastseg (checkpoint version 99; this one reads up "
                            "to 2); upgrade fastseg to resume it")


@pytest.mark.parametrize("killed_after, best_epoch_in_last, held", [
    ("best-next", 0, 0),  # last.pth not rewritten: the new best is dropped
    ("last", 1, 1),  # last.pth names the new best: rolled forward
])
def test_settle_best_follows_last_pth(tmp_path, killed_after, best_epoch_in_last, held):
    from fastseg.train.runs import BEST, BEST_NEXT, RunState, load_best, save_epoch, settle_best

    model = {"w": torch.zeros(1)}
    save_epoch(tmp_path, RunState(epoch=1, total_epochs=3, lr=1.0, lr_source="given", best_epoch=0, model=model), model)
    (tmp_path / ".last.pth.abc.tmp").write_bytes(b"half")  # a write a kill interrupted
    torch.save({"version": 2, "epoch": 1, "model": {"w": torch.ones(1)}}, tmp_path / BEST_NEXT)
    state = RunState(epoch=1 + (killed_after == "last"), total_epochs=3, lr=1.0, lr_source="given",
                     best_epoch=best_epoch_in_last)
    settle_best(tmp_path, state)
    epoch, weights = load_best(tmp_path)
    assert epoch == held and float(weights["w"]) == held
    assert not (tmp_path / BEST_NEXT).exists() and not list(tmp_path.glob(".*.tmp")) and (tmp_path / BEST).is_file()


def test_best_pth_of_another_epoch_is_reported(tmp_path):
    from fastseg.train.runs import RunState, save_epoch, settle_best

    model = {"w": torch.zeros(1)}
    save_epoch(tmp_path, RunState(epoch=1, total_epochs=3, lr=1.0, lr_source="given", best_epoch=0, model=model), model)
    with pytest.raises(TrainingError) as e:
        settle_best(tmp_path, RunState(epoch=3, total_epochs=3, lr=1.0, lr_source="given", best_epoch=2))
    assert str(e.value) == (f"{tmp_path / 'best.pth'}: holds epoch 0, but last.pth says the best is epoch 2; the "
                            "checkpoints do not belong together (start the run again)")


def test_resume_from_another_folder_takes_relative_paths_from_where_the_run_started(tmp_path, monkeypatch):
    """config.json of earlier versions held paths relative to the folder fit ran in; new ones are absolute."""
    from fastseg.train.runs import read_run_config

    run = tmp_path / "proj" / "out" / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": "data", "export": "exports/m.pkl", "runs_dir": "out/runs"}))
    monkeypatch.chdir(tmp_path)
    said = []
    cfg = read_run_config(Path("proj/out/runs/r"), notify=said.append)
    proj = tmp_path / "proj"
    assert (cfg.data, cfg.export, cfg.runs_dir) == (str(proj / "data"), str(proj / "exports" / "m.pkl"),
                                                    str(proj / "out" / "runs"))
    assert said == [f"{Path('proj/out/runs/r/config.json')}: relative paths taken from {proj}, where the run was started"]
