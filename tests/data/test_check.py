"""`fastseg check` and the bad-input matrix: one exact `Error: <path>: ...` line, exit 1, folder untouched."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.data.check import check
from fastseg.cli import main
from layout_sets import make_camvid, make_colour, make_folders, make_segnet, make_voc, save_image, save_mask, snapshot


@pytest.fixture
def runner():
    return CliRunner()


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _bad(case, tmp_path):
    """Build one bad data folder; return (data folder, the exact error message expected)."""
    d = tmp_path / "d"
    if case == "missing_dir":
        return d, f"{d}: data folder does not exist (point --data at a folder with images/ and masks/)"
    d.mkdir()
    if case == "empty_dir":
        return d, (f"{d}: no images/ folder (expected images/ and masks/ side by side, or train/+trainannot/ (SegNet), "
                   "or JPEGImages/+SegmentationClass/ (VOC))")
    if case == "empty_images_dir":
        (d / "images").mkdir()
        (d / "images" / "notes.txt").write_text("not an image")
        return d, f"{d / 'images'}: no images found (looked for .png, .jpg, .jpeg, .tif, .tiff, .bmp)"
    if case == "no_masks_dir":
        save_image(d / "images" / "a.png", 0)
        return d, f"{d}: no masks folder found (expected one of: masks/, labels/, annotations/, gt/)"
    if case == "no_mask_matches":
        save_image(d / "images" / "a.png", 0)
        save_mask(d / "masks" / "zzz.png", np.zeros((32, 32), np.uint8))
        return d, f"{d / 'masks'}: no mask matches any image by name (image a.png needs mask a.png or a_mask.png)"
    make_folders(d, n=4, codes=["bg", "a", "b"])
    img, mask = d / "images" / "im2.png", d / "masks" / "im2.png"
    if case == "truncated_png":
        _truncate(img)
        return d, None  # PIL's own wording; checked by prefix below
    if case == "truncated_jpeg":
        img.unlink()
        save_image(d / "images" / "im2.jpg", 2)
        _truncate(d / "images" / "im2.jpg", 0.9)
        return d, f"{d / 'images' / 'im2.jpg'}: truncated JPEG (no end-of-image marker) (remove or replace the file)"
    if case == "non_image_file":
        img.write_text("hello, I am a text file")
        return d, None
    if case == "corrupt_mask":
        mask.write_bytes(b"\x89PNG garbage")
        return d, None
    if case == "size_mismatch":
        save_image(img, 2, side=40)
        return d, f"{mask}: mask is 32x32 but image im2.png is 40x40 (image and mask must be the same size)"
    if case == "values_outside_codes":
        save_mask(mask, np.full((32, 32), 9, np.uint8))
        return d, f"{mask}: mask values [9] outside the 3 codes (class indices must be 0-2; fix the mask or codes.txt)"
    if case == "codes_duplicates":
        (d / "codes.txt").write_text("bg\na\nbg\n")
        return d, f"{d / 'codes.txt'}: duplicate class name(s) bg (each class needs its own name)"
    if case == "codes_empty_line":
        (d / "codes.txt").write_text("bg\n\na\n")
        return d, f"{d / 'codes.txt'}: empty line 2 (one class name per line, line number = class index)"
    if case == "valid_unknown":
        (d / "valid.txt").write_text("im1.png\nnope.png\n")
        return d, f"{d / 'valid.txt'}: names no image in {d} (nope.png) (list image names or stems, one per line)"
    if case == "valid_empty":
        (d / "valid.txt").write_text("\n")
        return d, f"{d}: the validation set is empty (list images in valid.txt or raise --valid-pct)"
    if case == "valid_is_everything":
        (d / "valid.txt").write_text("im0\nim1\nim2\nim3\n")
        return d, f"{d}: every image is in the validation set (nothing is left to train on; shorten valid.txt)"
    raise AssertionError(case)


def _bad_layout(case, tmp_path):
    d = tmp_path / "d"
    if case == "valid_equals_train":
        make_segnet(d, {"train": 3, "val": 0})
        for f in (d / "train").iterdir():
            save_image(d / "val" / f.name, 0)
            save_mask(d / "valannot" / f.name, np.zeros((32, 32), np.uint8))
        return d, (f"{d}: the validation set is the training set (3 images with the same names) "
                   "(validate on images the model does not train on)")
    if case == "colour_mask_no_table":
        make_colour(d)
        (d / "codes.csv").unlink()
        return d, (f"{d / 'masks' / 'c0.png'}: colour (RGB) mask but no colour table (add codes.csv with lines "
                   "name,r,g,b to the data folder, or pass --colors FILE)")
    if case == "unknown_colour":
        make_colour(d)
        (d / "codes.csv").write_text("name,r,g,b\nsky,128,128,128\nroad,128,64,128\nvoid,0,0,0\n")
        return d, (f"{d / 'masks' / 'c0.png'}: colour(s) (64,0,128) not in the colour table "
                   "(add them to codes.csv / the --colors file, or fix the mask)")
    if case == "voc_list_names_missing":
        make_voc(d)
        (d / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000004\n2007_123456\n")
        return d, (f"{d / 'ImageSets' / 'Segmentation' / 'val.txt'}: names 1 image(s) without a file in JPEGImages/ "
                   "or SegmentationClass/, e.g. 2007_123456 (fix the list or add the files)")
    if case == "segnet_val_without_annot":
        make_segnet(d, {"train": 2, "val": 1})
        for f in (d / "valannot").iterdir():
            f.unlink()
        (d / "valannot").rmdir()
        return d, f"{d / 'val'}: no valannot/ folder beside it (SegNet layout: val/ + valannot/)"
    return _bad(case, tmp_path)


CASES = ["missing_dir", "empty_dir", "empty_images_dir", "no_masks_dir", "no_mask_matches", "truncated_png",
         "truncated_jpeg", "non_image_file", "corrupt_mask", "size_mismatch", "values_outside_codes",
         "codes_duplicates", "codes_empty_line", "valid_unknown", "valid_empty", "valid_is_everything",
         "valid_equals_train", "colour_mask_no_table", "unknown_colour", "voc_list_names_missing",
         "segnet_val_without_annot"]
PREFIX = {"truncated_png": ("images/im2.png: cannot read image (",), "non_image_file": ("images/im2.png: cannot read image (",),
          "corrupt_mask": ("masks/im2.png: cannot read mask (",)}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_matrix_fit_and_check(runner, tmp_path, case):
    root, expected = _bad_layout(case, tmp_path)
    before = snapshot(tmp_path)
    fit = runner.invoke(main, ["fit", "--data", str(root), "--epochs", "1", "--weights", "none", "--lr", "1e-3",
                               "--export", str(tmp_path / "out" / "m.pkl")])
    chk = runner.invoke(main, ["check", str(root)])
    for res in (fit, chk):
        assert res.exit_code == 1, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
        assert "Traceback" not in res.output
    lines = fit.output.splitlines()
    assert len(lines) == 1, fit.output
    line = lines[0]
    if expected is not None:
        assert line == f"Error: {expected}"
    else:
        assert line.startswith(f"Error: {root / PREFIX[case][0]}") and line.endswith("(remove or replace the file)")
    assert line in chk.output.splitlines()  # check reports the same problem
    assert "NOT trainable" in chk.output
    assert snapshot(tmp_path) == before and not (tmp_path / "out").exists()  # nothing written or modified


def test_check_reports_every_problem_not_just_the_first(runner, tmp_path):
    root = make_folders(tmp_path / "d", n=4, codes=["bg", "a", "b"])
    save_mask(root / "masks" / "im0.png", np.full((32, 32), 5, np.uint8))
    save_image(root / "images" / "im2.png", 0, side=16)
    res = runner.invoke(main, ["check", str(root)])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 2 and "NOT trainable: 2 problem(s)" in res.output


@pytest.mark.parametrize("make, layout, counts, n_classes", [
    (lambda p: make_folders(p, codes=["bg", "a", "b"], valid=["im5"]), "images+masks", {"train": 5, "valid": 1}, 3),
    (make_camvid, "camvid", {"train": 4, "valid": 2}, 4),
    (make_segnet, "segnet", {"train": 4, "valid": 2, "test": 2}, 4),
    (make_voc, "voc", {"train": 4, "valid": 2}, 21),
    (make_colour, "images+masks", {"train": 4, "valid": 1}, 4),
])
def test_check_each_layout_json(runner, tmp_path, make, layout, counts, n_classes):
    root = make(tmp_path / "d")
    before = snapshot(tmp_path)
    res = runner.invoke(main, ["check", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["ok"] and rep["layout"] == layout and rep["counts"] == counts and rep["problems"] == []
    assert len([c for c in rep["classes"] if c["index"] is not None]) == n_classes
    assert abs(sum(c["share"] for c in rep["classes"]) - 1.0) < 1e-9
    assert snapshot(tmp_path) == before


def test_check_text_report(runner, tmp_path):
    root = make_camvid(tmp_path / "cv")
    save_image(root / "images" / "extra.png", 9)
    res = runner.invoke(main, ["check", str(root)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert f"layout    camvid  ({root})" in out
    assert "images    4 train, 2 valid  (split: valid.txt (2 images))" in out
    assert "class 'Void' is void: ignored in loss and metrics" in out and "void      class 'Void'" in out
    assert f"Warning: 1 image(s) without a mask skipped, e.g. {root / 'images' / 'extra.png'}" in out
    assert out.rstrip().splitlines()[-1].startswith("OK: trainable (")


def test_check_forced_layout_and_options(runner, tmp_path):
    root = make_segnet(tmp_path / "sn")
    res = runner.invoke(main, ["check", str(root), "--layout", "voc"])
    assert res.exit_code == 1
    assert f"Error: {root}: no JPEGImages/ folder (VOC layout needs JPEGImages/ and SegmentationClass/)" in res.output
    res = runner.invoke(main, ["check", str(root), "--ignore-index", "11", "--json"])
    rep = json.loads(res.output)
    assert [c["name"] for c in rep["classes"]] == ["class_0", "class_1", "class_2", "(void)"]
    res = runner.invoke(main, ["check", str(root), "--layout", "nope"])
    assert res.exit_code == 2 and "'nope' is not one of 'auto', 'images+masks', 'camvid', 'segnet', 'voc'" in res.output


def test_check_help_has_example(runner):
    res = runner.invoke(main, ["check", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "fastseg check" in res.output


def test_check_isbi_cli(runner, isbi):
    res = runner.invoke(main, ["check", str(isbi)])
    assert res.exit_code == 0, res.output
    assert "mapping   masks are 0/255: mapped 255->1 (classes: background, foreground)" in res.output
    assert "images    24 train, 6 valid" in res.output


def test_check_is_fast_on_many_files(tmp_path):
    """A few thousand images are checked in seconds (here 400 small ones well under a few seconds)."""
    root = tmp_path / "many"
    img = np.zeros((64, 64, 3), np.uint8)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(400):
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray((np.eye(64, dtype=np.uint8) * (i % 2))).save(root / "masks" / f"{i}.png")
    rep = check(root)
    assert rep.ok and rep.counts == {"train": 320, "valid": 80}
    assert rep.seconds < 20  # generous: the machine is shared; typically well under 1 s
