"""Train -> export -> load (fresh process, other directory) -> predict, on a tiny generated set."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def test_fit_exports_and_reports(trained):
    assert trained.export.is_file()
    m = trained.metrics
    assert 0.0 <= m["miou"] <= 1.0 and 0.0 <= m["pixel_accuracy"] <= 1.0
    assert set(m["per_class"]) == {"background", "disc", "square", "triangle"}
    assert len(trained.history) == 1 and {"train_loss", "valid_loss", "miou", "dice"} <= set(trained.history[0])
    assert not trained.weights.loaded
    assert trained.bs == 4 and trained.aug == "none"  # the given bs; aug auto: 2 optimiser steps < 1000
    assert not list(trained.export.parent.glob(".*.tmp"))  # atomic write left nothing behind


def test_load_learner_in_fresh_process_from_other_dir(trained, tiny_data, tmp_path):
    img = sorted((tiny_data / "images").iterdir())[0]
    code = (
        "import json, sys\n"
        "from fastai.learner import load_learner\n"
        f"learn = load_learner({str(trained.export)!r})\n"
        f"mask, idx, probs = learn.predict({str(img)!r})\n"
        "print(json.dumps({'shape': list(mask.shape), 'max': int(mask.max()), 'min': int(mask.min()),"
        " 'classes': int(probs.shape[0]), 'codes': learn.fastseg_info.meta['codes']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["shape"] == [64, 64] and res["classes"] == 4
    assert 0 <= res["min"] <= res["max"] < 4
    assert res["codes"] == ["background", "disc", "square", "triangle"]


def test_fastseg_load_predicts_batches_of_mixed_sizes(trained, tiny_data):
    import fastseg

    p = fastseg.load(trained.export)
    imgs = sorted((tiny_data / "images").iterdir())[:3]
    big = np.asarray(Image.open(imgs[0]).convert("RGB").resize((100, 75)))
    masks, probs = p.predict([*imgs, big], bs=2, probs=True)
    assert [m.shape for m in masks] == [(64, 64)] * 3 + [(75, 100)]
    assert all(m.dtype == np.uint8 and m.max() < 4 for m in masks)
    assert probs[3].shape == (4, 75, 100) and probs[3].dtype == np.float16
    assert np.allclose(probs[0].astype(np.float32).sum(0), 1.0, atol=1e-2)
    # batching does not change the answer
    single = p.predict([imgs[1]], bs=1)[0]
    assert np.array_equal(single, masks[1])


def test_predictor_agrees_with_learn_predict(trained, tiny_data):
    import warnings

    import fastseg
    from fastai.learner import load_learner

    img = sorted((tiny_data / "images").iterdir())[2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(trained.export)
    ref = np.asarray(learn.predict(img)[0])
    ours = fastseg.load(trained.export).predict([img])[0]
    assert (ref == ours).mean() > 0.999


def test_learn_predict_on_the_export_segments_the_whole_of_a_large_image(trained, tiny_data, tmp_path):
    """Training crops to 64 px and validates on centre crops; the exported learner's predict must
    still see all of a 100x75 image (padded to 128x96 at the right/bottom), not its 64x64 centre."""
    import warnings

    import fastseg
    from fastai.learner import load_learner

    from fastseg.train.transforms import SegCrop

    big = tmp_path / "big.png"
    Image.open(sorted((tiny_data / "images").iterdir())[2]).convert("RGB").resize((100, 75)).save(big)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(trained.export)
    crops = [t for t in learn.dls.valid.after_item.fs if isinstance(t, SegCrop)]
    assert len(crops) == 1 and crops[0].whole
    mask = np.asarray(learn.predict(big)[0])
    assert mask.shape == (96, 128)
    ours = fastseg.load(trained.export).predict([big])[0]
    assert ours.shape == (75, 100) and (mask[:75, :100] == ours).mean() > 0.99


def test_seed_gives_same_metrics(tiny_data, tmp_path):
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    # precision fixed: --precision auto times a step, and on a loaded machine two runs may choose differently
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", runs_dir=str(tmp_path / "runs"),
                    precision="fp32")
    a = fit(cfg.replace(export=str(tmp_path / "a.pkl")))
    b = fit(cfg.replace(export=str(tmp_path / "b.pkl")))
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-5)
    assert a.metrics["miou"] == pytest.approx(b.metrics["miou"], rel=1e-5)


def test_run_folder_has_config_history_metrics_plots_checkpoints(trained):
    from fastseg.config import FitConfig

    run = trained.run
    assert run.name == "trained"
    for f in ("config.json", "history.csv", "metrics.json", "losses.png", "metrics.png", "samples.png",
              "confusion.png", "best.pth", "last.pth"):
        assert (run / f).is_file(), f
    assert not (run / "lr_find.png").exists()  # lr was given: no finder, no plot
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["epoch"] == 0 and metrics["final"]["epoch"] == 0
    assert metrics["best"]["miou"] == pytest.approx(trained.metrics["miou"])
    assert metrics["best"]["miou"] == pytest.approx(trained.history[0]["miou"])
    cfg = FitConfig.from_file(run / "config.json")  # fed back, it is a valid config for a new run
    assert cfg.name is None and cfg.epochs == 1 and cfg.lr == 1e-3 and cfg.size == 64 and cfg.loss == "ce+dice"
    assert Image.open(run / "samples.png").size[1] > 300


def test_export_holds_the_best_epoch_weights(trained):
    import torch

    import fastseg

    best = torch.load(trained.run / "best.pth", map_location="cpu", weights_only=True)
    assert best["epoch"] == trained.best_epoch
    best = best["model"]
    model = fastseg.load(trained.export).model.state_dict()
    assert all(torch.equal(best[k].cpu(), model[k].cpu()) for k in best)


def test_named_run_folder_is_never_overwritten(trained):
    from fastseg.errors import ConfigError
    from fastseg.train.runs import new_run_dir

    with pytest.raises(ConfigError, match="run folder already exists"):
        new_run_dir(trained.run.parent, "trained")
    a, b = new_run_dir(trained.run.parent, None), new_run_dir(trained.run.parent, None)
    assert a != b and a.is_dir() and b.is_dir()


def test_resumed_schedule_continues_the_one_cycle_curve():
    from fastai.callback.schedule import combined_cos

    from fastseg.train.callbacks import ResumedSchedule

    f = combined_cos(0.25, 1e-4, 1e-2, 1e-7)
    done, total = 2, 5
    g = ResumedSchedule(f, done / total)
    for pos in (0.0, 0.1, 0.5, 0.9):
        assert float(g(pos)) == pytest.approx(float(f(done / total + pos * (1 - done / total))))


def test_resume_after_sigkill_loses_at_most_one_epoch(tiny_data, tmp_path):
    """SIGKILL in the middle of the second epoch (the fault driver blocks there and says so, so no CPU is
    too fast for it): the resumed run repeats at most that epoch and logs every epoch exactly once."""
    import torch
    from fault_driver import kill_at

    from fastseg.pipeline import resume

    runs = tmp_path / "runs"
    kill_at("mid-epoch", ["--data", str(tiny_data), "--epochs", "3", "--lr", "1e-3", "--bs", "4", "--weights", "none",
                          "--runs-dir", str(runs), "--name", "r", "--export", str(tmp_path / "m.pkl")], tmp_path)
    last = runs / "r" / "last.pth"
    started = 2  # the kill came inside the second epoch
    done = torch.load(last, weights_only=True)["epoch"]
    assert started - done <= 1 and not (runs / "r" / "finished.json").exists()
    result = resume(runs / "r")
    assert [row["epoch"] for row in result.history] == [0, 1, 2]  # epoch 0 not repeated, none missing
    assert torch.load(last, weights_only=True)["epoch"] == 3
    assert (tmp_path / "m.pkl").is_file() and (runs / "r" / "metrics.json").is_file()


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_data, tmp_path):
    from fastseg.config import FitConfig
    from fastseg.errors import TrainingError
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(tiny_data), epochs=2, lr=1e12, bs=4, weights="none", loss="ce",
                    runs_dir=str(tmp_path / "runs"), name="nan", export=str(tmp_path / "m.pkl"))
    with pytest.raises(TrainingError, match=r"training loss became (nan|inf|-inf) at epoch \d, batch \d+; stopped") as e:
        fit(cfg)
    assert "lower --lr, try --grad-clip 1, or check the data" in str(e.value)
    assert not (tmp_path / "m.pkl").exists()


def test_progressive_choice_is_validated():
    from fastseg.config import FitConfig
    from fastseg.errors import ConfigError

    with pytest.raises(ConfigError, match="progressive must be one of auto, on, off, got 'yes'"):
        FitConfig(progressive="yes")


def test_run_phases_switches_loaders_and_resumes_inside_a_later_phase(monkeypatch):
    """Each phase trains on its own crop size; a resume after epoch 3 of 2+2 continues the full-size phase;
    the run's own DataLoaders are back in place afterwards."""
    from types import SimpleNamespace

    import fastseg.train.loop as T

    monkeypatch.setattr(T, "one_cycle_scheds", lambda learn, phase, lr, skip: {"skip": skip})
    monkeypatch.setattr(T, "ParamScheduler", lambda scheds: scheds)
    calls = []

    class Learn:
        dls, opt = "full", None

        def create_opt(self):
            self.opt = SimpleNamespace(load_state_dict=lambda s: calls.append("opt restored"))

        def freeze(self):
            calls.append("freeze")

        def unfreeze(self):
            calls.append("unfreeze")

        def fit(self, n, cbs):
            calls.append((self.dls, n, cbs[0]["skip"]))

    learn = Learn()
    phases = [T.Phase(2, (1.0,), 0.25, 25.0, False, size=32), T.Phase(2, (0.25,), 0.25, 25.0, False)]
    T.run_phases(learn, phases, 1e-3, done=3, cbs=[], opt_state={}, loaders={32: "small"})
    assert calls == ["unfreeze", "opt restored", ("full", 1, 1)] and learn.dls == "full"
    calls.clear()
    T.run_phases(learn, phases, 1e-3, done=1, cbs=[], opt_state=None, loaders={32: "small"})
    assert calls == ["unfreeze", ("small", 1, 1), "unfreeze", ("full", 2, 0)] and learn.dls == "full"
    calls.clear()  # the device data path: its own training loaders for the full-size phases too
    T.run_phases(learn, phases, 1e-3, done=1, cbs=[], opt_state=None, loaders={32: "small", None: "device"})
    assert calls == ["unfreeze", ("small", 1, 1), "unfreeze", ("device", 2, 0)] and learn.dls == "full"


def test_progressive_fit_trains_small_then_full_and_exports_full_size(tiny_data, tmp_path):
    from fastai.learner import load_learner

    from fastseg.config import FitConfig
    from fastseg.pipeline import fit
    from fastseg.train.transforms import SegCrop

    said = []
    cfg = FitConfig(data=str(tiny_data), epochs=4, lr=1e-3, bs=4, weights="none", progressive="on",
                    runs_dir=str(tmp_path / "runs"), name="prog", export=str(tmp_path / "m.pkl"))
    result = fit(cfg, notify=said.append)
    assert result.progressive == {"size": 32, "epochs": 2}
    assert any("progressive    32 px x4 per image for 2 epochs, then 64 px at LR/4" in m for m in said)
    assert [row["epoch"] for row in result.history] == [0, 1, 2, 3]
    assert json.loads((result.run / "metrics.json").read_text())["progressive"] == {"size": 32, "epochs": 2}
    seconds = json.loads((result.run / "finished.json").read_text())["seconds"]  # what --time plans, measured
    assert set(seconds) == {"prepare", "train", "finish"} and all(v > 0 for v in seconds.values())  # --lr given
    learn = load_learner(result.export)
    crops = [t for t in learn.dls.train.after_item.fs if isinstance(t, SegCrop)]
    assert crops and tuple(crops[0].size) == (64, 64)  # the export is the full-size pipeline


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_fit_clips_gradients_unless_turned_off(tiny_data, tmp_path, monkeypatch, clip):
    """--grad-clip reaches the training loop as fastai's GradientClip (after MixedPrecision's unscaling)."""
    from fastai.callback.fp16 import MixedPrecision
    from fastai.callback.training import GradientClip

    import fastseg.train.loop as T
    from fastseg.config import FitConfig
    from fastseg.errors import Interrupted
    from fastseg.pipeline import fit

    seen = {}

    def capture(learn, phases, lr, done, cbs, opt_state, loaders=None):
        seen["cbs"] = cbs
        raise KeyboardInterrupt  # stop before any training: only the callbacks matter here

    monkeypatch.setattr(T, "run_phases", capture)
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", grad_clip=clip,
                    runs_dir=str(tmp_path / "runs"), export=str(tmp_path / "m.pkl"))
    with pytest.raises(Interrupted):  # the run's Ctrl-C message
        fit(cfg)
    clips = [cb for cb in seen["cbs"] if isinstance(cb, GradientClip)]
    assert [cb.max_norm for cb in clips] == ([clip] if clip else [])
    assert all(cb.order > MixedPrecision.order for cb in clips)  # clips true (unscaled) gradients


def test_gradient_clip_bounds_the_step_gradient(tiny_data, tmp_path):
    """One real training step with a tiny max norm: the gradient the optimiser sees is clipped."""
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.training import GradientClip

    from fastseg.config import FitConfig
    from fastseg.train.loop import prepare

    learn = prepare(FitConfig(data=str(tiny_data), bs=4, weights="none", epochs=1), workdir=tmp_path).learn
    norms = []

    class Spy(Callback):
        order = GradientClip.order + 1

        def before_step(self):
            grads = [p.grad for p in self.learn.model.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    learn.fit(1, 1e-3, cbs=[GradientClip(1e-3), Spy()])
    assert norms and max(norms) <= 1e-3 * 1.01
