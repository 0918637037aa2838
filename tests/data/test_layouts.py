"""Data-set layouts (fastseg.data.layouts): which folders hold images and masks, how they pair, the
layout's own split, detection, and one-line errors for a layout that does not fit."""

import pytest

from fastseg.data.dataset import discover
from fastseg.data.layouts import find_layout
from fastseg.errors import DataError
from layout_sets import make_camvid, make_folders, make_segnet, make_voc, save_image


def test_layout_images_masks_with_suffixes_and_valid_txt(tmp_path):
    root = make_folders(tmp_path / "d", codes=["bg", "a", "b"], valid=["im4.png", "im5"])
    spec = discover(root)
    assert spec.layout == "images+masks"
    assert [s.image.name for s in spec.valid] == ["im4.png", "im5.png"]
    assert spec.train[1].mask.name == "im1_mask.png"
    assert spec.codes == ("bg", "a", "b") and spec.void_code is None and spec.test == ()


def test_voc_found_below_vocdevkit_folder(tmp_path):
    make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    spec = discover(tmp_path)
    assert spec.layout == "voc" and spec.root == tmp_path / "VOCdevkit" / "VOC2012"


def test_forced_layout_that_does_not_fit_is_an_error(tmp_path):
    root = make_folders(tmp_path / "d")
    with pytest.raises(DataError, match=r"d: no train/ folder \(SegNet layout needs train/ and trainannot/\)"):
        discover(root, layout="segnet")
    with pytest.raises(DataError, match="choose one of: auto, images\\+masks, camvid, segnet, voc, coco, cvat, labelme"):
        discover(root, layout="nope")




@pytest.mark.parametrize("make, layout", [(make_folders, "images+masks"), (make_camvid, "camvid"),
                                          (make_segnet, "segnet"), (make_voc, "voc")])
def test_find_layout_detects_each_layout_and_reads_no_pixels(tmp_path, make, layout):
    root = make(tmp_path / "d")
    found = find_layout(root)
    assert found.layout == layout and found.root == root
    samples = [s for split in found.splits.values() for s in split]
    assert samples and all(s.image.is_file() and s.mask.is_file() for s in samples)


def test_unpaired_files_and_a_missing_testannot_are_reported_not_fatal(tmp_path):
    root = make_folders(tmp_path / "d", n=4)
    save_image(root / "images" / "lonely.png", 9)
    (root / "masks" / "orphan.png").write_bytes((root / "masks" / "im0.png").read_bytes())
    found = find_layout(root)
    assert [p.name for p in found.unpaired_images] == ["lonely.png"]
    assert [p.name for p in found.unpaired_masks] == ["orphan.png"] and len(found.splits["all"]) == 4
    sn = make_segnet(tmp_path / "sn")
    for f in (sn / "testannot").iterdir():
        f.unlink()
    (sn / "testannot").rmdir()
    found = find_layout(sn)
    assert "test" not in found.splits and found.notices == [f"{sn / 'test'}: no testannot/ folder, test images not used"]


def test_masks_of_a_type_not_read_are_named_rather_than_their_names_blamed(tmp_path):
    root = make_folders(tmp_path / "d", n=2)
    for f in (root / "masks").iterdir():
        f.rename(f.with_suffix(".npy"))
    with pytest.raises(DataError, match=r"masks: no mask of a type fastseg reads \(found \.npy; "):
        find_layout(root)
