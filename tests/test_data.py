from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastseg.data import IGNORE_INDEX, discover, read_mask
from fastseg.loaders import MaskForImage, auto_size
from fastseg.demo import DEMO_CODES, make_demo_data
from fastseg.errors import DataError


def _write_pair(root: Path, name: str, mask: np.ndarray, size=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size or mask.shape
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{name}.png")


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
    repo_data = Path(__file__).resolve().parents[1] / "data"
    fresh = make_demo_data(tmp_path / "d")
    for sub in ("masks",):
        for f in sorted((fresh / sub).iterdir()):
            assert np.array_equal(read_mask(f), read_mask(repo_data / sub / f.name)), f.name
    assert (fresh / "valid.txt").read_text() == (repo_data / "valid.txt").read_text()
    total = sum(f.stat().st_size for f in repo_data.rglob("*") if f.is_file())
    assert total < 2 * 1024 * 1024


def test_discover_demo(tiny_data):
    spec = discover(tiny_data)
    assert spec.codes == DEMO_CODES
    assert len(spec.train) == 8 and len(spec.valid) == 2
    assert {s.image.stem for s in spec.valid} == {"shapes_008", "shapes_009"}
    assert spec.min_side == 64 and auto_size(spec, None) == 64
    lut = np.asarray(spec.lut)
    assert list(lut[:4]) == [0, 1, 2, 3] and lut[255] == IGNORE_INDEX


def test_binary_255_masks_map_to_0_1(tmp_path):
    for i in range(4):
        m = np.zeros((32, 32), np.uint8)
        m[8:20, 8:20] = 255
        _write_pair(tmp_path, f"im{i}", m)
    notes = []
    spec = discover(tmp_path, notify=notes.append)
    assert spec.codes == ("background", "foreground")
    assert any("255->1" in n for n in notes)
    y = np.asarray(MaskForImage({str(s.image): str(s.mask) for s in spec.train + spec.valid}, spec.lut)(spec.train[0].image))
    assert set(np.unique(y).tolist()) == {0, 1}


def test_random_split_is_seeded(tmp_path):
    for i in range(10):
        _write_pair(tmp_path, f"im{i}", np.eye(32, dtype=np.uint8))
    a, b, c = discover(tmp_path, seed=1), discover(tmp_path, seed=1), discover(tmp_path, seed=2)
    assert a.valid == b.valid and len(a.valid) == 2
    assert a.valid != c.valid or a.train != c.train


@pytest.mark.parametrize("case, expected", [
    ("missing", "data folder does not exist"),
    ("no_images_dir", "no images/ folder"),
    ("empty_images", "no images found"),
    ("no_masks_dir", "no masks folder found"),
    ("unpaired", "no mask matches any image"),
    ("size_mismatch", "must be the same size"),
    ("values_outside_codes", "outside the 2 codes"),
    ("codes_dupes", "duplicate class name"),
    ("valid_unknown", "names no image"),
    ("corrupt_image", "cannot read image"),
])
def test_bad_input_is_one_clear_error(tmp_path, case, expected):
    root = tmp_path / "d"
    if case != "missing":
        root.mkdir()
    if case in ("empty_images", "no_masks_dir", "unpaired"):
        (root / "images").mkdir()
        if case != "empty_images":
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "a.png")
        if case == "unpaired":
            (root / "masks").mkdir()
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / "zzz.png")
    elif case != "missing" and case != "no_images_dir":
        _write_pair(root, "a", np.zeros((32, 32), np.uint8), size=(40, 32) if case == "size_mismatch" else None)
        _write_pair(root, "b", np.ones((32, 32), np.uint8) * (3 if case == "values_outside_codes" else 1))
        if case in ("values_outside_codes",):
            (root / "codes.txt").write_text("bg\nfg\n")
        if case == "codes_dupes":
            (root / "codes.txt").write_text("bg\nfg\nbg\n")
        if case == "valid_unknown":
            (root / "valid.txt").write_text("nope\n")
        if case == "corrupt_image":
            (root / "images" / "a.png").write_bytes(b"not a png")
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError) as e:
        discover(root)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert str(root) in msg
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before  # nothing modified


def test_isbi_binary_masks(isbi):
    spec = discover(isbi)
    assert spec.codes == ("background", "foreground")
    assert len(spec.train) + len(spec.valid) == 30
    assert spec.min_side == 512
