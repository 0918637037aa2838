"""Predictions written as COCO / CVAT pre-annotations (fastseg.infer.prelabels) that read back into the same masks."""

import json
import shutil
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main
from fastseg.data.dataset import discover
from fastseg.errors import ConfigError
from fastseg.infer.prelabels import open_labels, region_rles

pytest.importorskip("pycocotools")  # the `coco` extra (in the test extra, so CI runs these)
pytestmark = pytest.mark.usefixtures("label_cache")  # rendered masks go under tmp, never ~/.cache


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


def test_png_needs_no_writer_and_an_unknown_format_lists_the_valid_ones(tmp_path):
    assert open_labels("png", tmp_path / "out", ["bg", "a"]) is None
    with pytest.raises(ConfigError) as e:
        open_labels("yolo", tmp_path / "out", ["bg", "a"])
    assert str(e.value) == "unknown format 'yolo'; valid formats: png, coco, cvat"
    assert not (tmp_path / "out").exists()


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
