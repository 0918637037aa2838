"""Shared fixtures: tiny generated data sets in tmp folders, and one model trained once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fastseg.data.demo import make_demo_data

ISBI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012-membrane"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """10 demo images of 64x64 (8 train, 2 valid via valid.txt), 4 classes."""
    return make_demo_data(tmp_path_factory.mktemp("tiny") / "data", n=10, size=64, seed=1, n_valid=2)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_data):
    """One epoch on the tiny set with random init; returns the FitResult (export under tmp)."""
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    out = tmp_path_factory.mktemp("export") / "model.pkl"
    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", export=str(out), precision="fp32",
                    runs_dir=str(out.parent / "runs"), name="trained")  # run folder under tmp, not ./runs
    return fit(cfg)


@pytest.fixture(scope="session")
def tracked(tiny_data, tmp_path_factory):
    """One 2-epoch fit logged to every installed tracker, all offline (one run for the three tests of
    fastseg.train.track_*); returns (FitResult, MLflow store URI, the trackers logged to)."""
    installed = [n for n in ("tensorboard", "mlflow", "wandb") if importlib.util.find_spec(n) is not None]
    if not installed:
        pytest.skip("no tracker package installed (pip install -e '.[test]')")
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    tmp = tmp_path_factory.mktemp("tracked")
    store = (tmp / "mlruns").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store)
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store for local use behind this flag
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        cfg = FitConfig(data=str(tiny_data), epochs=2, lr=1e-3, bs=4, weights="none", export=str(tmp / "model.pkl"),
                        runs_dir=str(tmp / "runs"), name="tracked", log=tuple(installed))
        return fit(cfg, progress=False), store, installed


@pytest.fixture
def label_cache(tmp_path, monkeypatch) -> Path:
    """Masks rendered from labelling-tool exports go to a cache under tmp, never to ~/.cache during tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fastseg" / "labels"


@pytest.fixture
def isbi() -> Path:
    if not (ISBI / "images").is_dir():
        pytest.skip(f"ISBI data not present at {ISBI}")
    return ISBI
