"""The generated demo set (fastseg.data.demo): deterministic, small, the same as the repo's data/."""

from pathlib import Path

import numpy as np
import pytest

from fastseg.data.dataset import read_mask
from fastseg.data.demo import DEMO_CODES, make_demo_data
from fastseg.errors import DataError


def test_demo_data_is_deterministic_and_small(tmp_path):
    a = make_demo_data(tmp_path / "a", n=6, size=64, seed=3)
    b = make_demo_data(tmp_path / "b", n=6, size=64, seed=3)
    for f in sorted((a / "masks").iterdir()):
        assert np.array_equal(read_mask(f), read_mask(b / "masks" / f.name))
    assert (a / "codes.txt").read_text().split() == list(DEMO_CODES)
    values = np.unique(np.concatenate([np.unique(read_mask(f)) for f in (a / "masks").iterdir()]))
    assert set(values.tolist()) <= set(range(len(DEMO_CODES)))


def test_embedded_data_matches_generator(tmp_path):
    """data/ in the repo is exactly what `fastseg demo-data` writes."""
    repo_data = Path(__file__).resolve().parents[2] / "data"
    fresh = make_demo_data(tmp_path / "d")
    for sub in ("masks",):
        for f in sorted((fresh / sub).iterdir()):
            assert np.array_equal(read_mask(f), read_mask(repo_data / sub / f.name)), f.name
    assert (fresh / "valid.txt").read_text() == (repo_data / "valid.txt").read_text()
    total = sum(f.stat().st_size for f in repo_data.rglob("*") if f.is_file())
    assert total < 2 * 1024 * 1024




def test_demo_data_lists_the_last_images_as_validation_and_refuses_a_file(tmp_path):
    out = make_demo_data(tmp_path / "d", n=5, size=32, seed=0, n_valid=2)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"shapes_{i:03d}.jpg" for i in range(5)]
    assert (out / "valid.txt").read_text().split() == ["shapes_003", "shapes_004"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match=r"f is a file; give demo-data a new or empty folder"):
        make_demo_data(tmp_path / "f", n=1, size=32)
