"""CVAT "Segmentation mask 1.1" exports as data folders (fastseg.data.annotations.cvat): colours through
labelmap.txt, background order, and one-line errors for a bad labelmap or missing images."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.data.annotations.cvat import labelmap_text, read_labelmap
from fastseg.data.dataset import discover
from fastseg.errors import DataError
from label_sets import cvat_truth, make_cvat, masks_by_image

pytestmark = pytest.mark.usefixtures("label_cache")  # rendered masks go under tmp, never ~/.cache


def test_cvat_colours_through_labelmap(tmp_path):
    root = make_cvat(tmp_path / "d")
    spec = discover(root)
    assert spec.layout == "cvat" and spec.codes == ("background", "cat", "dog")
    masks = masks_by_image(spec)
    assert sorted(masks) == [f"frame_{i:06d}.jpg" for i in range(6)]  # frame 6 has no mask: not annotated, not used
    assert all(np.array_equal(masks[f"frame_{i:06d}.jpg"], cvat_truth(i)) for i in range(6))
    assert all(s.mask.parent.name == "SegmentationClass" for s in spec.train)  # SegmentationObject/ ignored


def test_cvat_labelmap_background_order_and_errors(tmp_path):
    root = make_cvat(tmp_path / "d")
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\ncat:250,50,83::\ndog:61,245,61::\n")
    spec = discover(root)
    assert spec.codes == ("background", "cat", "dog")
    assert f"{root / 'labelmap.txt'}: no background label: unlabelled black pixels are class 0 'background'" \
        in spec.notices
    (root / "labelmap.txt").write_text("cat:250,50::\n")
    res = CliRunner().invoke(main, ["check", str(root)])
    assert f"Error: {root / 'labelmap.txt'}: line 1 is not label:r,g,b::  ('cat:250,50::') (fix the line or " \
           "export again)" in res.output
    shutil.rmtree(root / "JPEGImages")
    (root / "labelmap.txt").write_text("background:0,0,0::\ncat:250,50,83::\ndog:61,245,61::\n")
    res = CliRunner().invoke(main, ["check", str(root)])
    assert f"Error: {root}: no JPEGImages/ folder (export from CVAT with 'Save images', or copy the images " \
           "into JPEGImages/)" in res.output



def test_labelmap_text_reads_back_and_duplicate_colours_are_refused(tmp_path):
    codes, colors = ("background", "cat", "dog"), ((0, 0, 0), (250, 50, 83), (61, 245, 61))
    f = tmp_path / "labelmap.txt"
    f.write_text(labelmap_text(codes, colors))
    assert read_labelmap(f) == (codes, colors, [])
    f.write_text("dog:1,2,3::\n_background_:0,0,0::\n")  # background moves to class 0, keeping its own name
    assert read_labelmap(f)[0] == ("_background_", "dog")
    f.write_text("background:0,0,0::\ncat:1,2,3::\ndog:1,2,3::\n")
    with pytest.raises(DataError, match=r"duplicate colour\(s\) \(1, 2, 3\) \(each label needs its own colour\)"):
        read_labelmap(f)
