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


def test_seed_gives_same_metrics(tiny_data, tmp_path):
    from fastseg.config import FitConfig
    from fastseg.train import fit

    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none")
    a = fit(cfg.replace(export=str(tmp_path / "a.pkl")))
    b = fit(cfg.replace(export=str(tmp_path / "b.pkl")))
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"], rel=1e-5)
    assert a.metrics["miou"] == pytest.approx(b.metrics["miou"], rel=1e-5)
