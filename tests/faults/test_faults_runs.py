"""Run folders, checkpoints, exports and resume under faults: kills, Ctrl-C, full disks, changed data,
destinations fastseg did not write. No trained model is ever lost, and every stopped run can be finished."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fake_runs import assert_pair, fake_run
from fault_driver import kill_at

from fastseg.export.bundle import INFO_FILE, bundle_path_for
from fastseg.cli import main
from fastseg.errors import ConfigError, TrainingError
from fastseg.io import sha256_file

TINY_FIT = ["--epochs", "3", "--lr", "1e-3", "--bs", "4", "--weights", "none"]


def _earlier_model(trained, dest: Path) -> None:
    """The session's trained model, as a previous `fastseg fit` left it at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained.export, dest)
    shutil.copytree(bundle_path_for(trained.export), bundle_path_for(dest))


# ---- the export destination --------------------------------------------------------------------------


def _destination_case(case: str, tmp: Path) -> tuple[Path, str]:
    """Set up a bad --export under ``tmp``; return it and the expected error line."""
    again = "move it away or choose another --export"
    if case == "folder":
        (tmp / "exp").mkdir()
        return tmp / "exp", f"{tmp / 'exp'}: is a folder; --export takes a file path, e.g. {tmp / 'exp' / 'model.pkl'}"
    if case == "under a file":
        (tmp / "exp").write_text("x")
        return tmp / "exp" / "m.pkl", (f"{tmp / 'exp'}: is a file, not a folder, so --export {tmp / 'exp' / 'm.pkl'} "
                                       "cannot be written; choose another --export")
    if case == "unrelated folder beside":
        (tmp / "m").mkdir()
        (tmp / "m" / "notes.txt").write_text("mine")
        return tmp / "m.pkl", (f"{tmp / 'm'}: exists and is not a fastseg bundle, and the export's bundle would "
                               f"replace it; {again}")
    if case == "unknown file":
        (tmp / "m.pkl").write_bytes(b"someone's model")
        return tmp / "m.pkl", (f"{tmp / 'm.pkl'}: exists and fastseg cannot tell that it wrote it (no fastseg bundle "
                               f"{tmp / 'm'} beside it); {again}")
    assert case == "not its bundle's"
    pkl = fake_run(tmp / "runs" / "a", "a")
    shutil.copytree(bundle_path_for(pkl), tmp / "m")
    (tmp / "m.pkl").write_bytes(b"replaced by hand")
    return tmp / "m.pkl", (f"{tmp / 'm.pkl'}: exists and fastseg cannot tell that it wrote it (it does not match "
                           f"the bundle {tmp / 'm'} beside it); {again}")


@pytest.mark.parametrize("case", ["folder", "under a file", "unrelated folder beside", "unknown file",
                                  "not its bundle's"])
def test_bad_export_destination_is_refused_before_training(tiny_data, tmp_path, case):
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    dest, message = _destination_case(case, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", export=str(dest),
                    runs_dir=str(tmp_path / "runs"), name="r")
    with pytest.raises(ConfigError) as e:
        fit(cfg)
    assert str(e.value) == message
    assert not (tmp_path / "runs" / "r").exists()  # before the run folder, so before any training
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_unwritable_export_folder_is_refused_before_training(runner_tiny):
    runner, tiny_data, tmp_path = runner_tiny
    try:
        with open("/sys/fastseg-probe", "w"):
            pytest.skip("/sys is writable here")
    except OSError:
        pass
    res = runner.invoke(main, ["fit", "--data", str(tiny_data), "--export", "/sys/m.pkl", "--runs-dir",
                               str(tmp_path / "runs"), *TINY_FIT])
    assert res.exit_code == 1 and not (tmp_path / "runs").exists()
    assert res.output.strip() == "Error: /sys: cannot write there (Permission denied); choose another --export"


@pytest.fixture
def runner_tiny(tiny_data, tmp_path):
    return CliRunner(), tiny_data, tmp_path


def test_publish_under_concurrent_fits_keeps_pairs_together(tmp_path):
    """Two processes copying their run's model to one --export, over and over: the .pkl and the bundle at the
    destination always come from the same run, and each publish says whose model it replaced."""
    import multiprocessing as mp

    runs = [fake_run(tmp_path / "runs" / tag, tag) for tag in ("a", "b")]
    dest = tmp_path / "exports" / "model.pkl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_publish_many, args=(pkl, dest, 15)) for pkl in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    info = json.loads((bundle_path_for(dest) / INFO_FILE).read_text())
    assert_pair(dest, Path(info["run"]) / "model.pkl")
    assert sorted(p.name for p in dest.parent.iterdir()) == [".model.pkl.lock", "model", "model.pkl"]


def _legacy_export(tmp_path: Path) -> tuple[Path, Path]:
    """exports/model.pkl + model/ as fastseg wrote them before runs kept their own model: the run folder has
    no model.pkl, and the bundle records no .pkl hash."""
    pkl = fake_run(tmp_path / "runs" / "old", "o")
    dest = tmp_path / "exports" / "model.pkl"
    dest.parent.mkdir()
    pkl.rename(dest)
    bundle_path_for(pkl).rename(bundle_path_for(dest))
    info = json.loads((bundle_path_for(dest) / INFO_FILE).read_text())
    del info["pkl_sha256"]
    (bundle_path_for(dest) / INFO_FILE).write_text(json.dumps(info))
    return dest, pkl.parent


def test_an_export_that_is_its_models_only_copy_moves_into_its_run_folder(tmp_path):
    from fastseg.export.publish import publish

    dest, old_run = _legacy_export(tmp_path)
    before = sha256_file(dest)
    new = fake_run(tmp_path / "runs" / "new", "n")
    said = []
    publish(new, dest, notify=said.append)
    assert said == [f"moved the previous model at {dest} into its run folder {old_run}",
                    f"replaced {dest} and {bundle_path_for(dest)}/ (the model of run {old_run})"]
    assert sha256_file(old_run / "model.pkl") == before and (old_run / "model" / INFO_FILE).is_file()
    assert_pair(dest, new)


def test_an_export_whose_run_folder_is_gone_is_not_replaced(tiny_data, tmp_path):
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    dest, old_run = _legacy_export(tmp_path)
    shutil.rmtree(old_run)
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", export=str(dest),
                    runs_dir=str(tmp_path / "runs"), name="r")
    with pytest.raises(ConfigError) as e:
        fit(cfg)
    assert str(e.value) == (f"{dest}: holds the only copy of the model of run {old_run}; move it away or choose "
                            "another --export")
    assert not (tmp_path / "runs" / "r").exists()


def _publish_many(pkl: Path, dest: Path, n: int) -> None:
    from fastseg.export.publish import publish

    for _ in range(n):
        said = []
        publish(pkl, dest, notify=said.append)
        assert len(said) <= 1 and all(m.startswith(f"replaced {dest} and {bundle_path_for(dest)}/ (the model of run "
                                                   f"{dest.parent.parent / 'runs'}/") for m in said)


# ---- fastseg export: never over its own source, and the right kind of destination ---------------------


@pytest.mark.parametrize("args, expected", [
    (["m.pkl", "--format", "onnx", "--out", "m.pkl", "--force"], "m.pkl: is the model being exported (m.pkl)"),
    (["m.pkl", "--format", "torchscript", "--out", "./link.pkl", "--force"],
     "link.pkl: is the model being exported (m.pkl)"),
    (["b", "--format", "onnx", "--out", "b/model.safetensors", "--force"],
     "b/model.safetensors: is the model being exported (b)"),
    (["b/fastseg.json", "--format", "safetensors", "--out", "b", "--force"], "b: is the model being exported (b/fastseg.json)"),
    (["m.pkl", "--format", "onnx", "--out", "m.pt"], "m.pt: --format onnx needs a path ending in .onnx"),
    (["m.pkl", "--format", "torchscript", "--out", "m.onnx"], "m.onnx: --format torchscript needs a path ending in .pt or .ts"),
    (["m.pkl", "--format", "safetensors", "--out", "m.onnx"],
     "m.onnx: --format safetensors writes a bundle folder, not a file; give a folder path"),
])
def test_export_refuses_its_source_and_wrong_suffixes(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    Path("m.pkl").write_bytes(b"model")
    os.symlink("m.pkl", "link.pkl")
    Path("b").mkdir()
    Path("b/fastseg.json").write_text("{}")
    Path("b/model.safetensors").write_bytes(b"w")
    before = {p: p.read_bytes() for p in (Path("m.pkl"), Path("b/fastseg.json"), Path("b/model.safetensors"))}
    res = CliRunner().invoke(main, ["export", *args])
    assert res.exit_code == 1
    kinds = "onnx: a .onnx file, torchscript: a .pt or .ts file, safetensors: a folder"
    tail = "; --out must be a new path" if "being exported" in expected else ""
    assert res.output.strip() == f"Error: {expected}{tail} ({kinds})"
    assert {p: p.read_bytes() for p in before} == before


# ---- training runs (in-process) ------------------------------------------------------------------------


@pytest.mark.slow
def test_second_fit_keeps_the_first_model_and_a_failed_finish_can_be_resumed(trained, tiny_data, tmp_path,
                                                                            monkeypatch):
    """The earlier model at --export stays until this run's copy replaces it (saying whose it was), its run
    folder keeps its own copy; a disk-full copy after the last epoch leaves a run that --resume finishes."""
    import fastseg.export.publish
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit, resume

    dest = tmp_path / "exports" / "model.pkl"
    _earlier_model(trained, dest)
    earlier = sha256_file(trained.run / "model.pkl")
    copy = fastseg.export.publish.atomic_dir

    def full_disk(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(fastseg.export.publish, "atomic_dir", full_disk)
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", export=str(dest),
                    runs_dir=str(tmp_path / "runs"), name="second")
    run = tmp_path / "runs" / "second"
    with pytest.raises(TrainingError) as e:
        fit(cfg)
    assert str(e.value) == (f"{run}: cannot finish the run (No space left on device: {bundle_path_for(dest)}); its "
                            f"training is saved (1 epoch), so once that is fixed: fastseg fit --resume {run}")
    assert (run / "metrics.json").is_file() and not (run / "finished.json").exists()
    monkeypatch.setattr(fastseg.export.publish, "atomic_dir", copy)
    said = []
    result = resume(run, notify=said.append)
    assert f"{run}: every epoch is trained; finishing the run (export, metrics.json, plots)" in said
    assert (f"replaced {dest} and {bundle_path_for(dest)}/ (the model of run {trained.run}; the last export there was "
            "interrupted)") in said
    assert [row["epoch"] for row in result.history] == [0] and (run / "finished.json").is_file()
    assert result.model == run / "model.pkl" and result.export == dest
    assert_pair(dest, run / "model.pkl")
    assert sha256_file(trained.run / "model.pkl") == earlier  # the first model is still there
    with pytest.raises(TrainingError, match="this run already finished"):
        resume(run)


def _legacy_checkpoint(run: Path) -> None:
    """Rewrite last.pth/best.pth as fastseg wrote them before RunState: numpy confusion matrices, numpy
    scalars in the optimiser, no version; best.pth a bare state dict."""
    state = torch.load(run / "last.pth", weights_only=True)
    opt = state["opt"]
    for group in opt["param_groups"]:
        group["lr"] = np.float64(group["lr"])
    old = {"model": state["model"], "opt": opt, "epoch": state["epoch"], "best": state["best"],
           "best_epoch": state["best_epoch"], "wait": 0, "lr": state["lr"], "lr_source": state["lr_source"],
           "total_epochs": state["total_epochs"], "cms": [cm.numpy() for cm in state["cms"]]}
    torch.save(old, run / "last.pth")
    torch.save(torch.load(run / "best.pth", weights_only=True)["model"], run / "best.pth")
    with pytest.raises(Exception):
        torch.load(run / "last.pth", weights_only=True)  # numpy inside: plain weights_only refuses it


@pytest.mark.slow
def test_ctrl_c_changed_data_old_checkpoint_and_full_disk_all_resume(tiny_data, tmp_path, monkeypatch):
    from fastai.callback.core import Callback

    import fastseg.train.callbacks
    import fastseg.train.loop
    from fastseg.pipeline import resume

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    run = tmp_path / "runs" / "r"

    class CtrlC(Callback):
        def after_batch(self):
            if self.epoch == 1:
                raise KeyboardInterrupt

    cbs = fastseg.train.loop.training_cbs
    monkeypatch.setattr(fastseg.train.loop, "training_cbs", lambda cfg: [*cbs(cfg), CtrlC()])
    res = CliRunner().invoke(main, ["fit", "--data", str(data), *TINY_FIT, "--runs-dir", str(tmp_path / "runs"),
                                    "--name", "r", "--export", str(tmp_path / "m.pkl")])
    assert res.exit_code == 130
    assert res.output.strip().splitlines()[-1] == (f"Error: interrupted after epoch 1 of 3 was saved in {run}; "
                                                   f"continue with: fastseg fit --resume {run}")
    monkeypatch.setattr(fastseg.train.loop, "training_cbs", cbs)

    moved = [data / "images" / "shapes_000.jpg", data / "masks" / "shapes_000.png"]
    for f in moved:
        f.rename(tmp_path / f.name)
    with pytest.raises(TrainingError) as e:
        resume(run)
    assert str(e.value) == (f"{run}: the images or masks in {data} changed (then 8 train / 2 valid images, now 7 / 2, "
                            "or other files); restore the run's data, or start a new run")
    for f in moved:
        (tmp_path / f.name).rename(f)
    (data / "codes.txt").write_text("background\ndisc\nsquare\ntriangle\nstar\n")
    with pytest.raises(TrainingError) as e:
        resume(run)
    assert str(e.value) == (f"{run}: the data's classes changed since the run started (then background, disc, square, "
                            "triangle; now background, disc, square, triangle, star); resume only on the run's own "
                            "data, or start a new run")
    shutil.copyfile(tiny_data / "codes.txt", data / "codes.txt")

    _legacy_checkpoint(run)
    save = fastseg.train.callbacks.save_epoch

    def full_disk(folder, state, best=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fastseg.train.callbacks, "save_epoch", full_disk)
    with pytest.raises(TrainingError) as e:
        resume(run)
    assert str(e.value) == (f"{run}: cannot write the checkpoint of epoch 2 (No space left on device); the run can be "
                            f"resumed after epoch 1, its last good checkpoint: fastseg fit --resume {run} once there "
                            "is room")
    monkeypatch.setattr(fastseg.train.callbacks, "save_epoch", save)
    result = resume(run)  # still the old-format checkpoint: epoch 1 saved
    assert [row["epoch"] for row in result.history] == [0, 1, 2]
    assert (run / "finished.json").is_file() and torch.load(run / "last.pth", weights_only=True)["epoch"] == 3


# ---- SIGKILL at exact points (a driver subprocess blocks there) ----------------------------------------


@pytest.mark.slow
def test_sigkill_at_every_write_then_resume_finishes_the_same_run(trained, tiny_data, tmp_path):
    """Killed inside each checkpoint write and between the halves of each export (the fit, then a resume
    per point, each killed there), the run still resumes to the same kind of result: each epoch once, a best
    checkpoint that metrics.json and the exported model describe, its model in the run folder and at --export
    as one pair; the model that was at --export before is still in its run folder."""
    from fastseg.export.bundle import read_bundle
    from fastseg.train.runs import BEST_NEXT, load_best, load_run_state
    from fastseg.pipeline import resume

    dest = tmp_path / "exports" / "model.pkl"
    _earlier_model(trained, dest)
    earlier = sha256_file(trained.run / "model.pkl")
    run = tmp_path / "runs" / "k"
    fit = ["--data", str(tiny_data), "--epochs", "2", "--lr", "1e-3", "--bs", "4", "--weights", "none", "--runs-dir", str(run.parent), "--name", "k",
           "--export", str(dest)]
    resume_run = ["--resume", str(run)]
    kill_at("in-best-write", fit, tmp_path)  # epoch 2's best.pth half-written
    assert load_run_state(run).epoch == 1 and not (run / BEST_NEXT).exists()
    kill_at("in-last-write", resume_run, tmp_path)  # its new best written, last.pth half-written
    assert load_run_state(run).epoch == 1 and (run / BEST_NEXT).is_file()
    kill_at("before-promote", resume_run, tmp_path)  # last.pth written, best not yet in place
    assert load_run_state(run).epoch == 2 and (run / BEST_NEXT).is_file()
    kill_at("export-run", resume_run, tmp_path)  # the run's model.pkl written, not its bundle
    assert (run / "model.pkl").is_file() and not (run / "model").exists()
    assert sha256_file(dest) == sha256_file(trained.export)
    kill_at("export-copy", resume_run, tmp_path)  # the --export .pkl copied, not its bundle
    assert sha256_file(dest) == sha256_file(run / "model.pkl") and not (run / "finished.json").exists()

    said = []
    result = resume(run, notify=said.append)
    assert [row["epoch"] for row in result.history] == [0, 1] and (run / "finished.json").is_file()
    assert (f"replaced {dest} and {bundle_path_for(dest)}/ (the model of run {trained.run}; the last export there was "
            "interrupted)") in said
    metrics = json.loads((run / "metrics.json").read_text())
    epoch, weights = load_best(run)
    assert epoch == metrics["best"]["epoch"] == result.best_epoch
    model, info = read_bundle(bundle_path_for(dest))
    assert info.best_epoch == epoch and info.run == str(run)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert_pair(dest, run / "model.pkl")
    assert sha256_file(trained.run / "model.pkl") == earlier
    assert not list(run.glob(".*.tmp")) and not list(dest.parent.glob(".*.tmp"))


def test_resume_takes_another_export_destination(tmp_path):
    """A finish that cannot write its --export can be pointed elsewhere; other options stay refused."""
    res = CliRunner().invoke(main, ["fit", "--resume", str(tmp_path), "--export", str(tmp_path / "elsewhere.pkl")])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {tmp_path}: not a run folder (no config.json; pass a folder under runs/)"


@pytest.mark.slow
def test_a_run_stopped_by_patience_resumes_to_its_finish_not_to_more_epochs(tiny_data, tmp_path, monkeypatch):
    import fastseg.pipeline
    import fastseg.train.callbacks
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit, resume

    init = fastseg.train.callbacks.Patience.__init__

    def never_improves(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.comp = lambda value, best: False

    monkeypatch.setattr(fastseg.train.callbacks.Patience, "__init__", never_improves)
    monkeypatch.setattr(fastseg.pipeline, "_write_outputs", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    cfg = FitConfig(data=str(tiny_data), epochs=3, lr=1e-3, bs=4, weights="none", patience=1,
                    export=str(tmp_path / "m.pkl"), runs_dir=str(tmp_path / "runs"), name="p")
    run = tmp_path / "runs" / "p"
    with pytest.raises(TrainingError) as e:
        fit(cfg)
    assert str(e.value) == (f"interrupted while finishing {run} (its training is saved: 1 epoch); finish it with: "
                            f"fastseg fit --resume {run}")
    monkeypatch.undo()
    said = []
    result = resume(run, notify=said.append)
    assert f"{run}: every epoch is trained; finishing the run (export, metrics.json, plots)" in said
    assert [row["epoch"] for row in result.history] == [0] and result.stopped_early
    assert json.loads((run / "metrics.json").read_text())["stopped_early"] is True
