from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastseg.data.dataset import IGNORE_INDEX, discover
from fastseg.train.loaders import MaskForImage
from fastseg.train.plan import auto_size
from fastseg.data.demo import DEMO_CODES
from fastseg.errors import DataError


def _write_pair(root: Path, name: str, mask: np.ndarray, size=None):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size or mask.shape
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{name}.png")


def test_discover_demo(tiny_data):
    spec = discover(tiny_data)
    assert spec.codes == DEMO_CODES
    assert len(spec.train) == 8 and len(spec.valid) == 2
    assert {s.image.stem for s in spec.valid} == {"shapes_008", "shapes_009"}
    assert spec.min_side == 64 and auto_size(spec.min_side, None)[0] == 64
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


# ---- layouts, mask formats, void (issue 3) ----------------------------------------------------

from fastseg.data.dataset import VOC_CODES, inspect_data, read_colors  # noqa: E402
from layout_sets import COLORS, make_camvid, make_colour, make_folders, make_segnet, make_voc, save_mask  # noqa: E402


def _decoded(spec, sample):
    return spec.decoder(sample.mask)


def test_layout_camvid_void_class_is_ignored(tmp_path):
    spec = discover(make_camvid(tmp_path / "cv"))
    assert spec.layout == "camvid" and spec.void_code == "Void"
    assert len(spec.train) == 4 and len(spec.valid) == 2
    y = _decoded(spec, spec.train[0])
    assert set(np.unique(y).tolist()) == {0, 1, 2, IGNORE_INDEX}  # raw 3 (Void) -> ignore


def test_layout_segnet_uses_its_own_split_and_ignore_index(tmp_path):
    root = make_segnet(tmp_path / "sn")
    (root / "valid.txt").write_text("train0.png\n")  # the layout's own split wins over valid.txt
    notes = []
    spec = discover(root, ignore_index=11, notify=notes.append)
    assert spec.layout == "segnet"
    assert (len(spec.train), len(spec.valid), len(spec.test)) == (4, 2, 2)
    assert {s.image.parent.name for s in spec.valid} == {"val"}
    assert spec.codes == ("class_0", "class_1", "class_2")
    y = _decoded(spec, spec.train[0])
    assert (y[:2] == IGNORE_INDEX).all() and set(np.unique(y[2:]).tolist()) == {0, 1, 2}
    assert any("mask value 11 is void" in n for n in notes)


def test_segnet_without_ignore_index_compacts_sparse_values(tmp_path):
    spec = discover(make_segnet(tmp_path / "sn"))
    assert spec.n_classes == 4  # values 0, 1, 2, 11 -> classes 0-3
    assert any("mask values 0, 1, 2, 11 mapped to classes 0-3" in m for m in spec.mapping)
    assert _decoded(spec, spec.train[0])[0, 0] == 3


def test_layout_voc_builtin_codes_and_border_void(tmp_path):
    spec = discover(make_voc(tmp_path / "VOCdevkit" / "VOC2012"))
    assert spec.layout == "voc" and spec.codes == VOC_CODES
    assert len(spec.train) == 4 and len(spec.valid) == 2  # the unlisted JPEG is not used
    y = _decoded(spec, spec.train[0])
    assert set(np.unique(y).tolist()) == {0, 15, IGNORE_INDEX}


def test_colour_masks_through_codes_csv(tmp_path):
    spec = discover(make_colour(tmp_path / "c"))
    assert spec.codes == tuple(COLORS) and spec.void_code == "void"
    y = _decoded(spec, spec.train[0])
    assert set(np.unique(y).tolist()) == {0, 1, 2, IGNORE_INDEX}


def test_colour_table_from_option_and_unknown_colour_names_file(tmp_path):
    root = make_colour(tmp_path / "c", table="mycolors.csv")
    with pytest.raises(DataError, match="colour \\(RGB\\) mask but no colour table"):
        discover(root)
    spec = discover(root, colors=str(root / "mycolors.csv"))
    assert spec.n_classes == 4
    bad = np.zeros((32, 32, 3), np.uint8)
    bad[0, 0] = (1, 2, 3)
    save_mask(root / "masks" / "c0.png", bad)
    with pytest.raises(DataError) as e:
        discover(root, colors=str(root / "mycolors.csv"))
    assert str(e.value).startswith(f"{root / 'masks' / 'c0.png'}: colour(s) (1,2,3) not in the colour table")


def test_read_colors_rejects_bad_lines(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("bg,0,0,0\nfg,300,0,0\n")
    with pytest.raises(DataError, match=r"t.csv: line 2 is not name,r,g,b"):
        read_colors(f)
    f.write_text("bg,0,0,0\nfg,0,0,0\n")
    with pytest.raises(DataError, match=r"duplicate colour"):
        read_colors(f)


def test_codes_inferred_with_void_255_and_void_option(tmp_path):
    root = make_folders(tmp_path / "d", n=4, n_classes=3)
    m = np.zeros((32, 32), np.uint8)
    m[0] = 255
    m[5:] = 2
    save_mask(root / "masks" / "im0.png", m)
    spec = discover(root)
    assert spec.codes == ("class_0", "class_1", "class_2") and spec.lut[255] == IGNORE_INDEX
    assert any("255 treated as void" in n for n in spec.mapping)
    (root / "codes.txt").write_text("bg\nunlabelled\nthing\n")
    assert discover(root).void_code == "unlabelled"
    spec = discover(root, void="thing")
    assert spec.void_code == "thing" and spec.lut[2] == IGNORE_INDEX and spec.lut[1] == 1
    with pytest.raises(DataError, match=r"--void 'nope' is not a class name \(choose one of: bg, unlabelled, thing\)"):
        discover(root, void="nope")


def test_warnings_for_unpaired_files_and_class_absent_from_training(tmp_path):
    root = make_folders(tmp_path / "d", n=5, n_classes=2, codes=["bg", "fg", "rare"], valid=["im4"])
    m = np.full((32, 32), 2, np.uint8)
    save_mask(root / "masks" / "im4.png", m)  # class 2 only in the validation image
    save_mask(root / "masks" / "orphan.png", m)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "lonely.png")
    spec = discover(root)
    text = "\n".join(spec.warnings)
    assert "1 image(s) without a mask skipped" in text and "lonely.png" in text
    assert "1 mask(s) without an image ignored" in text and "orphan.png" in text
    assert "class(es) rare absent from the training split" in text
    assert spec.class_pixels["train"][2] == 0 and spec.class_pixels["valid"][2] == 32 * 32


def test_inspect_reports_every_problem(tmp_path):
    root = make_folders(tmp_path / "d", n=4, codes=["bg", "a", "b"])
    save_mask(root / "masks" / "im0.png", np.full((32, 32), 7, np.uint8))
    (root / "images" / "im2.png").write_bytes(b"junk")
    spec, problems = inspect_data(root)
    assert len(problems) == 2
    assert any(p.startswith(f"{root / 'images' / 'im2.png'}: cannot read image") for p in problems)
    assert any(p.startswith(f"{root / 'masks' / 'im0.png'}: mask values [7] outside the 3 codes") for p in problems)


def test_colour_masks_reach_the_dataloaders_as_class_indices(tmp_path):
    from fastseg.train.loaders import Getters, make_dataloaders

    spec = discover(make_colour(tmp_path / "c", n=4))
    dls = make_dataloaders(spec, size=32, bs=2, getters=Getters.for_spec(spec, cache=False))
    _, y = dls.one_batch()
    assert set(np.unique(y.cpu().numpy()).tolist()) <= {0, 1, 2, IGNORE_INDEX}
    assert IGNORE_INDEX in np.unique(y.cpu().numpy())


def test_maskforimage_pickles_with_colour_decoder(tmp_path):
    import pickle

    spec = discover(make_colour(tmp_path / "c"))
    f = MaskForImage({str(s.image): str(s.mask) for s in spec.train}, spec.decoder)
    g = pickle.loads(pickle.dumps(f))
    assert np.array_equal(np.asarray(g(spec.train[0].image)), _decoded(spec, spec.train[0]))


def test_isbi_check_report(isbi):
    from fastseg.data.check import check

    report = check(isbi)
    assert report.ok and report.layout == "images+masks" and report.counts == {"train": 24, "valid": 6}
    assert [c.name for c in report.classes] == ["background", "foreground"]
    assert abs(sum(c.share for c in report.classes) - 1.0) < 1e-9 and report.classes[0].share > 0.05


@pytest.mark.slow
def test_fit_one_epoch_on_voc_layout_with_void_border(tmp_path):
    """VOC palette masks with a 255 border train end to end; void pixels stay out of the metrics."""
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    root = make_voc(tmp_path / "voc")
    cfg = FitConfig(data=str(root), epochs=1, lr=1e-3, bs=2, size=32, weights="none", export=str(tmp_path / "m.pkl"))
    result = fit(cfg)
    assert result.export.is_file() and list(result.metrics["per_class"]) == list(VOC_CODES)
    assert 0.0 <= result.metrics["pixel_accuracy"] <= 1.0


def test_void_name_and_ignore_index_both_apply(tmp_path):
    root = make_camvid(tmp_path / "cv")  # codes Sky, Road, Car, Void
    spec = discover(root, ignore_index=0)
    assert spec.lut[0] == IGNORE_INDEX and spec.lut[3] == IGNORE_INDEX and spec.lut[1] == 1
    assert spec.void_code == "Void"
