"""COCO JSON exports as data folders (fastseg.data.annotations.coco): polygons, RLE, crowd regions,
overlaps, per-subset files, and one-line errors for files that cannot be used."""

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.cli import main
from fastseg.data.dataset import discover, inspect_data
from fastseg.errors import ConfigError
from fastseg.infer.prelabels import open_labels
from label_sets import SIDE, box, coco_truth, image_bytes, make_coco, masks_by_image, rle, square

pytest.importorskip("pycocotools")  # the `coco` extra (in the test extra, so CI runs these)
pytestmark = pytest.mark.usefixtures("label_cache")  # rendered masks go under tmp, never ~/.cache


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



def test_coco_polygons_rle_and_crowd(tmp_path, label_cache):
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
    assert all(s.mask.is_relative_to(label_cache) for s in spec.train)
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

