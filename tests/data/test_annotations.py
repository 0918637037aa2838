"""Labelling-tool exports (COCO JSON, CVAT Segmentation mask 1.1, LabelMe JSON) as data folders, and
predictions written back as COCO / CVAT pre-annotations that read back into the same masks."""

import base64
import io
import json
import shutil
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main
from fastseg.data.dataset import discover, inspect_data
from fastseg.errors import ConfigError
from fastseg.infer.prelabels import open_labels, region_rles
from label_sets import (SIDE, box, coco_truth, cvat_truth, image_bytes, labelme_doc, make_coco, make_cvat,
                        make_labelme, rle, shape, square)
from layout_sets import make_folders, snapshot

pytest.importorskip("pycocotools")  # the `coco` extra (in the test extra, so CI runs these)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Rendered masks go to a cache under tmp, never to ~/.cache during tests."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fastseg" / "labels"


def masks_by_image(spec) -> dict:
    return {s.image.name: spec.decoder(s.mask) for s in (*spec.train, *spec.valid, *spec.test)}


def write_coco(root, images, anns, cats=({"id": 1, "name": "cat"}, {"id": 2, "name": "dog"})):
    for k, a in enumerate(anns, 1):
        a.setdefault("id", k)
        a.setdefault("iscrowd", 0)
    for im in images:
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / im["file_name"]).write_bytes(image_bytes(im["id"]))
        im.setdefault("width", SIDE)
        im.setdefault("height", SIDE)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": anns, "categories": list(cats)}
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("make, layout, classes", [
    (make_coco, "coco", ["background", "cat", "dog", "(void)"]),
    (make_cvat, "cvat", ["background", "cat", "dog"]),
    (make_labelme, "labelme", ["background", "cat", "dog"]),
])
def test_check_reports_each_label_format(tmp_path, make, layout, classes):
    root = make(tmp_path / "d")
    before = snapshot(root)
    res = CliRunner().invoke(main, ["check", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["ok"] and rep["layout"] == layout and rep["counts"] == {"train": 5, "valid": 1}
    assert [c["name"] for c in rep["classes"]] == classes
    assert snapshot(root) == before  # nothing written into the data folder


def test_coco_polygons_rle_and_crowd(tmp_path, cache):
    root = make_coco(tmp_path / "d")
    spec, problems = inspect_data(root)
    assert problems == [] and spec.codes == ("background", "cat", "dog")
    masks = masks_by_image(spec)
    for i in range(6):
        truth = coco_truth(i)
        truth[box(2, 2, 14, 14) > 0] = 1  # the cat polygon square(2, 2, 14, 14)
        if i == 1:
            truth[box(0, 20, 6, 32) > 0] = 1  # the polygon past the edge, clipped
        assert np.array_equal(masks[f"im{i}.png"], truth), i
    assert all(s.mask.is_relative_to(cache) for s in spec.train)
    json_file = root / "annotations" / "instances_default.json"
    assert f"Warning: {json_file}: 1 polygon(s) reach outside their image, e.g. annotation 14; clipped" in spec.warnings
    assert f"{json_file}: 1 crowd region(s) (iscrowd=1) are void: ignored in loss and metrics" in spec.notices


def test_coco_overlaps_paint_smaller_regions_last(tmp_path):
    big, small = box(0, 0, 32, 32), box(10, 10, 20, 20)
    anns = [{"image_id": 1, "category_id": 2, "segmentation": rle(small)},
            {"image_id": 1, "category_id": 1, "segmentation": rle(big, compressed=False)},
            {"image_id": 2, "category_id": 1, "segmentation": [square(0, 0, 8, 8)]}]
    spec = discover(write_coco(tmp_path / "d", [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}], anns))
    assert np.array_equal(masks_by_image(spec)["a.png"], big + small)  # the dog stays on top of the larger cat


def test_coco_crowd_only_file_is_read_as_regions(tmp_path):
    """CVAT exports brush masks as iscrowd=1: a file of nothing but crowd regions keeps their classes."""
    images = [{"id": i, "file_name": f"{i}.png"} for i in (1, 2)]
    anns = [{"image_id": i, "category_id": i, "iscrowd": 1, "segmentation": rle(box(4, 4, 12, 12))} for i in (1, 2)]
    spec = discover(write_coco(tmp_path / "d", images, anns))
    assert np.array_equal(masks_by_image(spec)["2.png"], box(4, 4, 12, 12) * 2)
    assert any("every annotation is iscrowd=1" in n for n in spec.notices)


def test_coco_unknown_category_unlabelled_and_missing_images(tmp_path):
    images = [{"id": i, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    anns = [{"image_id": 1, "category_id": 1, "segmentation": rle(box(0, 0, 8, 8))},
            {"image_id": 1, "category_id": 7, "segmentation": rle(box(20, 20, 24, 24))},
            {"image_id": 2, "category_id": 2, "segmentation": rle(box(0, 0, 4, 4))},
            {"image_id": 4, "category_id": 2, "segmentation": rle(box(0, 0, 4, 4))}]
    root = write_coco(tmp_path / "d", images, anns)
    data = json.loads((root / "annotations" / "instances_default.json").read_text())
    data["images"].append({"id": 4, "file_name": "gone.png", "width": SIDE, "height": SIDE})
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    spec, problems = inspect_data(root)
    f = root / "annotations" / "instances_default.json"
    assert problems == []
    assert spec.warnings[:3] == (
        f"Warning: {f}: 1 image(s) not found, e.g. gone.png; skipped",
        f"Warning: {f}: 1 image(s) without annotations skipped (unlabelled, not background)",
        f"Warning: {f}: annotations with category id(s) 7 not in 'categories' are void (ignored in training)")
    assert masks_by_image(spec)["1.png"][21, 21] == 255
    assert sorted(masks_by_image(spec)) == ["1.png", "2.png"]


def test_coco_split_from_file_names_and_images_per_subset(tmp_path):
    """Datumaro's COCO layout: annotations/instances_<subset>.json with images/<subset>/."""
    root = tmp_path / "d"
    for subset, ids in (("train", (1, 2, 3)), ("val", (4,))):
        images = [{"id": i, "file_name": f"{i}.png", "width": SIDE, "height": SIDE} for i in ids]
        for im in images:
            (root / "images" / subset).mkdir(parents=True, exist_ok=True)
            (root / "images" / subset / im["file_name"]).write_bytes(image_bytes(im["id"]))
        anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "segmentation": rle(box(0, 0, 9, 9))}
                for i in ids]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{subset}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cell"}]}))
    spec = discover(root)
    assert [s.image.name for s in spec.train] == ["1.png", "2.png", "3.png"] and spec.valid[0].image.name == "4.png"
    assert spec.split_source == "COCO files instances_train.json, instances_val.json"


def test_coco_malformed_rle_is_one_line(tmp_path):
    anns = [{"image_id": 1, "category_id": 1, "segmentation": {"size": [SIDE, SIDE], "counts": "zzzz"}},
            {"image_id": 2, "category_id": 1, "segmentation": {"size": [SIDE, SIDE], "counts": [5, 10, 9]}},
            {"image_id": 3, "category_id": 2, "segmentation": rle(box(0, 0, 4, 4))}]
    root = write_coco(tmp_path / "d", [{"id": i, "file_name": f"{i}.png"} for i in (1, 2, 3)], anns)
    spec, _ = inspect_data(root)
    assert f"Warning: {root / 'annotations' / 'instances_default.json'}: 2 unusable segmentation(s), e.g. " \
           f"annotation 1: RLE counts do not cover the image's {SIDE}x{SIDE} pixels; skipped" in spec.warnings
    (root / "images" / "3.png").unlink()
    res = CliRunner().invoke(main, ["check", str(root)])
    assert f"Error: {root}: no usable annotated image ({root / 'annotations' / 'instances_default.json'}: 1 image(s) " \
           "not found, e.g. 3.png; skipped)" in res.output.splitlines()


@pytest.mark.parametrize("content, why", [
    ("", "empty file (export the annotations again)"),
    ("{\"images\": [", "not valid JSON at line 1 (export the annotations again)"),
    ("{\"images\": []}", "not a COCO annotation file (needs 'images', 'annotations' and 'categories' lists)"),
    ("{\"images\": [], \"annotations\": [], \"categories\": []}", "no annotations (label some images, then export again)"),
    ("{\"images\": [], \"annotations\": [{\"bbox\": [1, 2, 3, 4]}], \"categories\": []}",
     "no annotation has a segmentation (export polygons or masks, not only boxes)"),
])
def test_coco_bad_files_one_line(tmp_path, content, why):
    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_default.json").write_text(content)
    res = CliRunner().invoke(main, ["check", str(root)])
    assert res.exit_code == 1
    assert f"Error: {root / 'annotations' / 'instances_default.json'}: {why}" in res.output.splitlines()


def test_coco_without_pycocotools_says_how_to_install(tmp_path, monkeypatch):
    root = make_coco(tmp_path / "d")
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    res = CliRunner().invoke(main, ["check", str(root)])
    assert f"Error: {root}: reading or writing COCO needs pycocotools (pip install 'fastseg[coco]')" in res.output
    with pytest.raises(ConfigError, match=r"^--format coco: reading or writing COCO needs pycocotools"):
        open_labels("coco", tmp_path / "out", ["bg", "a"])


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


def test_labelme_shapes_imagedata_and_imagepath(tmp_path, cache):
    root = make_labelme(tmp_path / "d")
    spec = discover(root)
    assert spec.codes == ("background", "cat", "dog")
    by_stem = {s.image.stem: s for s in (*spec.train, *spec.valid)}
    assert by_stem["img0"].image == root / "img0.png"  # imagePath beside the JSON
    assert by_stem["img1"].image.is_relative_to(cache) and by_stem["img1"].image.read_bytes() == image_bytes(1)
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


def test_cache_reused_and_refreshed_when_annotations_change(tmp_path, cache):
    root = make_labelme(tmp_path / "d", n=3)
    notes = [n for n in discover(root).notices if n.startswith("labelme: ")]
    assert notes and notes[0].startswith("labelme: rendered 3 mask(s) in ")
    assert any(n.startswith("labelme: reused 3 mask(s) in ") for n in discover(root).notices)
    doc = json.loads((root / "img0.json").read_text())
    doc["shapes"] = []  # an explicitly empty image: all background
    (root / "img0.json").write_text(json.dumps(doc))
    spec = discover(root)
    assert any(n.startswith("labelme: rendered 3 mask(s) in ") for n in spec.notices)
    assert (masks_by_image(spec)["img0.png"] == 0).all()
    assert len(list(cache.iterdir())) == 2


def test_region_rles_one_per_connected_region():
    m = np.zeros((6, 8), np.uint8)
    m[0:2, 0:2] = 1
    m[2, 2] = 1  # touches the first block diagonally: same region
    m[4:6, 5:8] = 1
    m[0, 7] = 2
    from pycocotools import mask as mask_api

    regions = region_rles(m, 1)
    assert len(regions) == 2
    decoded = [mask_api.decode(mask_api.frPyObjects({"size": [6, 8], "counts": c}, 6, 8)) for c in regions]
    assert np.array_equal(decoded[0] + decoded[1], (m == 1).astype(np.uint8))


def _speckled(seed: int, shape=(24, 40)) -> np.ndarray:
    m = (np.random.default_rng(seed).random(shape) * 4).astype(np.uint8)
    m[:4] = 0
    return m


@pytest.mark.parametrize("fmt", ["coco", "cvat"])
def test_prelabels_read_back_identical(tmp_path, fmt):
    codes = ["background", "a", "b", "c"]
    masks = {"x0.png": _speckled(0), "x1.jpg": _speckled(1), "sub/x2.png": _speckled(2, (16, 16))}
    writer = open_labels(fmt, tmp_path / "out", codes)
    for name, mask in masks.items():
        assert writer.add(name, mask) == []
    path = writer.close()
    root = tmp_path / "labelled"
    if fmt == "coco":
        assert path == tmp_path / "out" / "annotations" / "instances_default.json"
        shutil.copytree(path.parent, root / "annotations")
        images = root / "images"
        doc = json.loads(path.read_text())
        assert [c["name"] for c in doc["categories"]] == ["a", "b", "c"]
        assert [(i["file_name"], i["width"], i["height"]) for i in doc["images"]] == [
            ("sub/x2.png", 16, 16), ("x0.png", 40, 24), ("x1.jpg", 40, 24)]
    else:
        assert path == tmp_path / "out" / "segmentation_mask.zip"
        zipfile.ZipFile(path).extractall(root)
        images = root / "JPEGImages"
        assert (root / "ImageSets" / "Segmentation" / "default.txt").read_text() == "sub/x2\nx0\nx1\n"
    for name, mask in masks.items():
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(images / name)
    spec = discover(root)
    assert spec.layout == fmt and spec.codes == tuple(codes)
    back = {s.image.relative_to(images).as_posix(): spec.decoder(s.mask) for s in (*spec.train, *spec.valid)}
    assert back.keys() == masks.keys() and all(np.array_equal(back[k], masks[k]) for k in masks)


@pytest.mark.parametrize("fmt, name", [("coco", "annotations/instances_default.json"), ("cvat", "segmentation_mask.zip")])
def test_prelabels_never_replace_a_foreign_file(tmp_path, fmt, name):
    dest = tmp_path / "out" / name
    dest.parent.mkdir(parents=True)
    dest.write_text("{}")
    with pytest.raises(ConfigError, match="exists and was not written by fastseg"):
        open_labels(fmt, tmp_path / "out", ["bg", "a"])
    dest.unlink()
    for _ in range(2):  # fastseg's own file may be replaced by the next run
        writer = open_labels(fmt, tmp_path / "out", ["bg", "a"])
        writer.add("a.png", np.ones((4, 4), np.uint8))
        writer.close()


def test_void_class_is_not_exported(tmp_path):
    writer = open_labels("coco", tmp_path, ["background", "a", "Void"], void_code="Void")
    writer.add("a.png", np.array([[0, 1], [2, 2]], np.uint8))
    doc = json.loads(writer.close().read_text())
    assert [c["name"] for c in doc["categories"]] == ["a"] and len(doc["annotations"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("make", [make_coco, make_cvat, make_labelme])
def test_each_label_format_trains(tmp_path, make):
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    root = make(tmp_path / "d")
    cfg = FitConfig(data=str(root), epochs=1, lr=1e-3, bs=4, weights="none", export=str(tmp_path / "m.pkl"),
                    runs_dir=str(tmp_path / "runs"), name="run")
    result = fit(cfg)
    assert result.export.is_file() and list(result.metrics["per_class"]) == ["background", "cat", "dog"]


@pytest.mark.slow
def test_predict_format_coco_and_cvat_match_png(tmp_path, trained, tiny_data):
    src = tiny_data / "images"
    runner = CliRunner()
    torch = ["--backend", "torch"]  # no in-memory ONNX conversion per call
    res = runner.invoke(main, ["predict", str(trained.export), str(src), "--out", str(tmp_path / "png"), *torch])
    assert res.exit_code == 0, res.output
    png = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / "png").glob("*.png")}
    for fmt, target in (("coco", "annotations/instances_default.json"), ("cvat", "segmentation_mask.zip")):
        out = tmp_path / fmt
        res = runner.invoke(main, ["predict", str(trained.export), str(src), "--out", str(out), "--format", fmt, *torch])
        assert res.exit_code == 0, res.output
        assert f"wrote {len(png)} pre-annotated image(s) to {out / target} (" in res.output
        assert not list(out.glob("*.png"))
        root = tmp_path / f"{fmt}-data"
        if fmt == "coco":
            shutil.copytree(out / "annotations", root / "annotations")
            shutil.copytree(src, root / "images")
        else:
            zipfile.ZipFile(out / target).extractall(root)
            shutil.copytree(src, root / "JPEGImages")
        spec = discover(root)
        back = {s.image.with_suffix(".png").name: spec.decoder(s.mask) for s in (*spec.train, *spec.valid)}
        shown = {k: v for k, v in png.items() if v.any()}  # images predicted all background have no annotation
        assert shown and all(np.array_equal(back[k], v) for k, v in shown.items())
