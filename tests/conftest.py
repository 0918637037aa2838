"""Shared fixtures: tiny generated data sets in tmp folders, and one model trained once per session."""

from __future__ import annotations

import os
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
