"""Tiny labelling-tool exports in each tool's documented format (used by the tests of fastseg.data.annotations and prelabels).

COCO: https://cocodataset.org/#format-data (polygons, RLE compressed and uncompressed, iscrowd).
CVAT "Segmentation mask 1.1": labelmap.txt, SegmentationClass/ colour PNGs, SegmentationObject/,
ImageSets/Segmentation/default.txt (+ JPEGImages/ when exported with images).
LabelMe: one JSON per image with shapes (polygon, rectangle, circle, line, ...), imagePath, imageData.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32
CVAT_COLORS = {"background": (0, 0, 0), "cat": (250, 50, 83), "dog": (61, 245, 61)}


def image_bytes(seed: int, side: int = SIDE, fmt: str = "PNG") -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def box(x0: int, y0: int, x1: int, y1: int, side: int = SIDE) -> np.ndarray:
    m = np.zeros((side, side), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def rle(mask: np.ndarray, compressed: bool = True) -> dict:
    """COCO RLE of a binary mask: compressed (counts string) or uncompressed (counts list), column-major."""
    from pycocotools import mask as mask_api

    if compressed:
        enc = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(mask.shape), "counts": enc["counts"].decode()}
    flat = mask.flatten(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], edges])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def square(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def make_coco(root: Path, n: int = 6) -> Path:
    """images/ + annotations/instances_default.json (CVAT's COCO 1.0 layout): cat polygons, dog RLEs
    (compressed on even images, uncompressed on odd), a crowd region on image 0, one polygon past the edge."""
    images, anns = [], []
    for i in range(n):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"im{i}.png").write_bytes(image_bytes(i))
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": SIDE, "height": SIDE})
        anns.append({"image_id": i + 1, "category_id": 1, "iscrowd": 0, "segmentation": [square(2, 2, 14, 14)]})
        anns.append({"image_id": i + 1, "category_id": 2, "iscrowd": 0,
                     "segmentation": rle(box(18, 18, 30, 30), compressed=i % 2 == 0)})
    anns.append({"image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": rle(box(0, 20, 10, 32), False)})
    anns.append({"image_id": 2, "category_id": 1, "iscrowd": 0, "segmentation": [square(-4, 20, 6, 40)]})
    for k, a in enumerate(anns, 1):
        a.update(id=k, area=1.0, bbox=[0, 0, 1, 1])
    data = {"info": {}, "licenses": [], "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog", "supercategory": ""}]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return root


def coco_truth(i: int) -> np.ndarray:
    """The semantic mask make_coco's image i must give (polygon edges aside): cat 1, dog 2, crowd void."""
    m = box(18, 18, 30, 30) * 2
    if i == 0:
        m[box(0, 20, 10, 32) > 0] = 255
    return m


def make_cvat(root: Path, n: int = 6, with_images: bool = True) -> Path:
    """A CVAT 'Segmentation mask 1.1' export (with 'Save images'): background black, cat and dog boxes."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n"
                                       + "".join(f"{k}:{r},{g},{b}::\n" for k, (r, g, b) in CVAT_COLORS.items()))
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "default.txt").write_text("".join(f"frame_{i:06d}\n" for i in range(n + 1)))
    lut = np.array(list(CVAT_COLORS.values()), np.uint8)
    for i in range(n):
        name = f"frame_{i:06d}"
        for folder in ("SegmentationClass", "SegmentationObject", "JPEGImages"):
            (root / folder).mkdir(exist_ok=True)
        Image.fromarray(lut[cvat_truth(i)]).save(root / "SegmentationClass" / f"{name}.png")
        Image.fromarray(np.full((SIDE, SIDE, 3), 77, np.uint8)).save(root / "SegmentationObject" / f"{name}.png")
        if with_images:
            (root / "JPEGImages" / f"{name}.jpg").write_bytes(image_bytes(i, fmt="JPEG"))
    if with_images:  # an image CVAT exported without a mask: it was not annotated
        (root / "JPEGImages" / f"frame_{n:06d}.jpg").write_bytes(image_bytes(n, fmt="JPEG"))
    return root


def cvat_truth(i: int) -> np.ndarray:
    return box(2 + i, 2, 14 + i, 14) + box(18, 18, 30, 30) * 2


def labelme_doc(shapes: list[dict], image_path: str, data: bytes | None, side: int = SIDE) -> dict:
    return {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path,
            "imageData": base64.b64encode(data).decode() if data else None, "imageHeight": side, "imageWidth": side}


def shape(label: str, points: list, kind: str = "polygon") -> dict:
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": kind, "flags": {}}


def make_labelme(root: Path, n: int = 6) -> Path:
    """LabelMe JSON beside the images: even images with imagePath only, odd ones with imageData embedded and
    no image file. Shapes: a cat polygon, a dog rectangle drawn over it, a dog circle, a line (no area)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shapes = [shape("cat", [[2, 2], [16, 2], [16, 16], [2, 16]]),
                  shape("dog", [[12, 12], [6, 6]], "rectangle"),  # corners in any order, later wins
                  shape("dog", [[24, 24], [24, 28]], "circle"),
                  shape("cat", [[0, 31], [31, 31]], "line")]
        raw = image_bytes(i)
        if i % 2 == 0:
            (root / f"img{i}.png").write_bytes(raw)
            doc = labelme_doc(shapes, f"img{i}.png", None)
        else:
            doc = labelme_doc(shapes, f"gone/img{i}.png", raw)
        (root / f"img{i}.json").write_text(json.dumps(doc))
    return root


def masks_by_image(spec) -> dict:
    """Decoded class-index mask per image file name, over every split of a ``DataSpec``."""
    return {s.image.name: spec.decoder(s.mask) for s in (*spec.train, *spec.valid, *spec.test)}
