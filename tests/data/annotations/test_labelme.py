"""LabelMe JSON folders as data (fastseg.data.annotations.labelme): shapes, imageData and imagePath,
labels.txt, unknown labels, clipping, mask shapes, and when mask images win over stray JSON files."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from fastseg.data.dataset import discover, inspect_data
from label_sets import box, image_bytes, labelme_doc, make_labelme, masks_by_image, shape
from layout_sets import make_folders

pytestmark = pytest.mark.usefixtures("label_cache")  # rendered masks go under tmp, never ~/.cache


def test_labelme_shapes_imagedata_and_imagepath(tmp_path, label_cache):
    root = make_labelme(tmp_path / "d")
    spec = discover(root)
    assert spec.codes == ("background", "cat", "dog")
    by_stem = {s.image.stem: s for s in (*spec.train, *spec.valid)}
    assert by_stem["img0"].image == root / "img0.png"  # imagePath beside the JSON
    assert by_stem["img1"].image.is_relative_to(label_cache) and by_stem["img1"].image.read_bytes() == image_bytes(1)
    m = spec.decoder(by_stem["img1"].mask)
    assert m[3, 3] == 1 and m[15, 15] == 1  # cat polygon
    assert (m[6:13, 6:13] == 2).all()  # dog rectangle (corners given in any order), drawn over the cat
    assert m[26, 24] == 2 and m[24, 29] == 0  # dog circle of radius 4 around (24, 24)
    assert (m[31] == 0).all()  # the line has no area
    assert "Warning: LabelMe 6 line shape(s) ignored (no area to fill; draw polygons for segmentation)" in spec.warnings


def test_labelme_labels_txt_unknown_labels_clipping_and_bad_files(tmp_path):
    root = make_labelme(tmp_path / "d", n=4)
    (root / "labels.txt").write_text("__ignore__\n_background_\ndog\n")
    doc = labelme_doc([shape("fish", [[20, 20], [40, 20], [40, 40]])], "img0.png", None)
    (root / "img9.json").write_text(json.dumps(doc))
    (root / "broken.json").write_text("{\"shapes\": [")
    spec, problems = inspect_data(root)
    assert problems == [] and spec.codes == ("background", "dog")
    assert spec.warnings[-4:] == (
        f"Warning: 1 annotation file(s) skipped: {root / 'broken.json'}: not valid JSON at line 1 (export the "
        "annotations again)",
        "Warning: LabelMe 4 line shape(s) ignored (no area to fill; draw polygons for segmentation)",
        "Warning: label(s) cat, fish not in labels.txt are void (ignored in training; add them to labels.txt to "
        "train on them)",
        "Warning: 1 LabelMe shape(s) reach outside their image, e.g. img9.json shape 0 ('fish'); clipped")
    m = masks_by_image(spec)["img1.png"]
    assert m[3, 3] == 255 and m[9, 9] == 1  # cat is void, dog trains


def test_labelme_mask_shape_and_detection_precedence(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    stamp = io.BytesIO()
    Image.fromarray(np.pad(np.ones((2, 3), np.uint8) * 255, ((0, 0), (0, 1)))).save(stamp, format="PNG")
    mask_shape = {**shape("cat", [[5, 6], [8, 7]], "mask"), "mask": base64.b64encode(stamp.getvalue()).decode()}
    for i in range(2):
        (root / f"a{i}.json").write_text(json.dumps(labelme_doc([mask_shape], f"a{i}.png", image_bytes(i))))
    m = masks_by_image(discover(root))["a0.png"]
    assert np.array_equal(m, box(5, 6, 8, 8))
    make_folders(root, n=4)  # mask images beside stray JSON files: the images+masks layout wins
    assert discover(root).layout == "images+masks"

