"""Train, validation and test splits (fastseg.data.splits): valid.txt, test.txt, the layout's own lists,
a seeded random share, and the problems of a split that cannot work."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastseg.data.dataset import discover
from fastseg.data.layouts import Found, Sample
from fastseg.data.splits import check_splits, make_splits
from fastseg.errors import DataError


def _write_pair(root: Path, name: str, mask: np.ndarray):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*mask.shape, 3), 128, np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{name}.png")


def _samples(root: Path, n: int, folder: str = "images", stem: str = "im") -> list[Sample]:
    return [Sample(root / folder / f"{stem}{i}.png", root / "masks" / f"{stem}{i}.png") for i in range(n)]


def _stems(samples) -> list[str]:
    return [s.image.stem for s in samples]


def test_random_split_is_seeded(tmp_path):
    for i in range(10):
        _write_pair(tmp_path, f"im{i}", np.eye(32, dtype=np.uint8))
    a, b, c = discover(tmp_path, seed=1), discover(tmp_path, seed=1), discover(tmp_path, seed=2)
    assert a.valid == b.valid and len(a.valid) == 2
    assert a.valid != c.valid or a.train != c.train




def test_test_txt_comes_out_first_and_valid_txt_takes_names_or_stems(tmp_path):
    found = Found("images+masks", tmp_path, {"all": _samples(tmp_path, 6)})
    (tmp_path / "test.txt").write_text("im5.png\n\nim0\n")
    (tmp_path / "valid.txt").write_text("im2\n")
    s = make_splits(found, tmp_path, valid_pct=0.5, seed=0)
    assert (_stems(s.train), _stems(s.valid), _stems(s.test)) == (["im1", "im3", "im4"], ["im2"], ["im0", "im5"])
    assert s.source == "valid.txt (1 images); test.txt (2 images, never trained on)"
    (tmp_path / "valid.txt").write_text("im2\nnope\n")
    with pytest.raises(DataError, match=r"valid.txt: names no image in .* \(nope\) \(list image names or stems"):
        make_splits(found, tmp_path, valid_pct=0.5, seed=0)


def test_the_layouts_own_split_wins_and_test_txt_still_holds_out(tmp_path):
    train, valid = _samples(tmp_path, 4), _samples(tmp_path, 2, "val", "v")
    found = Found("segnet", tmp_path, {"train": train, "valid": valid}, split_source="the layout's folders")
    (tmp_path / "valid.txt").write_text("im3\n")  # ignored: the layout has its own validation split
    s = make_splits(found, tmp_path, valid_pct=0.5, seed=0)
    assert s.train == tuple(train) and s.valid == tuple(valid) and s.source == "the layout's folders"
    (tmp_path / "test.txt").write_text("im1\nv0.png\n")
    s = make_splits(found, tmp_path, valid_pct=0.5, seed=0)
    assert (_stems(s.train), _stems(s.valid), _stems(s.test)) == (["im0", "im2", "im3"], ["v1"], ["im1", "v0"])


def test_check_splits_names_an_empty_or_overlapping_validation_set(tmp_path):
    a, b = _samples(tmp_path, 2), _samples(tmp_path, 3, "other")
    assert "the validation set is empty" in check_splits(tmp_path, a, [])[0][0]
    assert "every image is in the validation set" in check_splits(tmp_path, [], a)[0][0]
    assert "the validation set is the training set (2 images" in check_splits(tmp_path, a, b[:2])[0][0]
    assert check_splits(tmp_path, a, b) == ([], [f"Warning: {tmp_path}: 2 validation image name(s) also in "
                                                 "training, e.g. im0"])
    assert check_splits(tmp_path, a[:1], a[1:]) == ([], [])
