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
