"""Predictions written back as pre-annotations that labelling tools import (``fastseg predict --format``).

``open_labels(fmt, out, codes)`` returns a writer, or None for ``png`` (fastseg's own masks):
``add(name, mask)`` once per image (``name`` is the image's path relative to the input folder),
then ``close()`` writes one file atomically and returns its path.

- ``coco``: ``OUT/annotations/instances_default.json`` (CVAT's COCO 1.0 layout), one RLE annotation
  per connected region (8-connected) of each class, so a false positive is one shape to delete;
  categories are the model's codes less background (index 0) and void, with their class index as id.
- ``cvat``: ``OUT/segmentation_mask.zip``, importable in CVAT as "Segmentation mask 1.1":
  labelmap.txt, SegmentationClass/<name>.png colour masks, ImageSets/Segmentation/default.txt.

Both read back through ``fastseg.data.annotations`` into the same class-index masks. Each file carries
a mark so a later run may replace it, and nothing else is ever overwritten.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.annotations import coco_tools, labelmap_text
from ..config import FORMAT_CHOICES
from ..errors import ConfigError, DataError
from ..io import atomic_write_bytes, palette_for

__all__ = ["FORMATS", "LabelWriter", "CocoWriter", "CvatWriter", "open_labels", "region_rles"]

FORMATS = FORMAT_CHOICES  # png: fastseg's own index masks; coco, cvat: the writers below
MARK = "fastseg predictions"  # in every file written here: proof that a later run may replace it
EIGHT_NEIGHBOURS = np.ones((3, 3), bool)  # diagonal pixels join a region, as a blob looks to the eye


class LabelWriter:
    """Collects per-image masks and writes one pre-annotation file on ``close()``."""

    filename = ""

    def __init__(self, out: str | Path, codes, void_code: str | None = None):
        self.dest = Path(out) / self.filename
        self.codes = list(codes)
        skip = {0, *([self.codes.index(void_code)] if void_code in self.codes else [])}
        self.classes = [i for i in range(len(self.codes)) if i not in skip]  # what gets annotated
        if self.dest.exists() and not self._ours():
            raise ConfigError(f"{self.dest}: exists and was not written by fastseg (choose another --out)")

    def _ours(self) -> bool:
        raise NotImplementedError

    def add(self, name: str, mask: np.ndarray) -> list[Path]:
        """Take one image's class-index mask; returns the files finished now (none: ``close()`` writes)."""
        raise NotImplementedError

    def close(self) -> Path:
        raise NotImplementedError


def region_rles(mask: np.ndarray, value: int) -> list[list[int]]:
    """Uncompressed COCO RLE counts (column-major) of each 8-connected region of ``mask == value``."""
    from scipy import ndimage

    labels, n = ndimage.label(mask == value, structure=EIGHT_NEIGHBOURS)
    if n == 0:
        return []
    flat = labels.ravel(order="F")
    cut = np.flatnonzero(np.diff(flat)) + 1
    starts, ends = np.concatenate([[0], cut]), np.concatenate([cut, [flat.size]])
    keep = flat[starts] > 0
    starts, ends, ids = starts[keep], ends[keep], flat[starts[keep]]
    order = np.argsort(ids, kind="stable")  # runs of one region stay in scan order
    starts, ends, ids = starts[order], ends[order], ids[order]
    out = []
    for s, e in zip(*(np.split(a, np.flatnonzero(np.diff(ids)) + 1) for a in (starts, ends))):
        counts = np.empty(2 * len(s) + 1, np.int64)  # zeros, ones, zeros, ..., ones, trailing zeros
        counts[0], counts[-1] = s[0], flat.size - e[-1]
        counts[1:-1:2] = e - s
        counts[2:-1:2] = s[1:] - e[:-1]
        out.append(counts.tolist())
    return out


class CocoWriter(LabelWriter):
    """A COCO instances file: one RLE annotation per connected region per class."""

    filename = "annotations/instances_default.json"

    def __init__(self, out, codes, void_code=None):
        super().__init__(out, codes, void_code)
        self.mask_api = coco_tools("--format coco")
        self.images: list[tuple[str, int, int, list]] = []

    def _ours(self) -> bool:
        try:
            return json.loads(self.dest.read_bytes()).get("info", {}).get("description") == MARK
        except (OSError, ValueError, AttributeError):
            return False

    def add(self, name: str, mask: np.ndarray) -> list[Path]:
        h, w = mask.shape
        anns = []
        for c in self.classes:
            for counts in region_rles(mask, c):
                rle = self.mask_api.frPyObjects({"size": [h, w], "counts": counts}, h, w)
                anns.append({"category_id": c, "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                             "area": int(sum(counts[1::2])), "bbox": [float(v) for v in self.mask_api.toBbox(rle)],
                             "iscrowd": 0})
        self.images.append((name, h, w, anns))
        return []

    def close(self) -> Path:
        images, annotations = [], []
        for image_id, (name, h, w, anns) in enumerate(sorted(self.images, key=lambda t: t[0]), 1):
            images.append({"id": image_id, "file_name": name, "width": w, "height": h})
            annotations += [{"id": len(annotations) + k, "image_id": image_id, **a} for k, a in enumerate(anns, 1)]
        doc = {"info": {"description": MARK}, "licenses": [], "images": images, "annotations": annotations,
               "categories": [{"id": c, "name": self.codes[c], "supercategory": ""} for c in self.classes]}
        return atomic_write_bytes(self.dest, json.dumps(doc).encode())


class CvatWriter(LabelWriter):
    """A CVAT 'Segmentation mask 1.1' zip: colour PNG per image through labelmap.txt."""

    filename = "segmentation_mask.zip"

    def __init__(self, out, codes, void_code=None):
        super().__init__(out, codes, void_code)
        pal = np.asarray(palette_for(len(self.codes)), np.uint8).reshape(256, 3)
        self.lut = np.zeros((256, 3), np.uint8)  # background, void and unknown values: black (background)
        self.lut[self.classes] = pal[self.classes]
        self.masks: dict[str, bytes] = {}  # encoded PNGs: a zip is written whole, so a failed run leaves nothing

    def _ours(self) -> bool:
        try:
            with zipfile.ZipFile(self.dest) as z:
                return z.comment == MARK.encode()
        except (OSError, zipfile.BadZipFile):
            return False

    def add(self, name: str, mask: np.ndarray) -> list[Path]:
        buf = io.BytesIO()
        Image.fromarray(self.lut[mask]).save(buf, format="PNG")
        self.masks[Path(name).with_suffix("").as_posix()] = buf.getvalue()
        return []

    def close(self) -> Path:
        names = sorted(self.masks)
        codes = ["background"] + [self.codes[c] for c in self.classes]
        colors = [(0, 0, 0)] + [tuple(int(v) for v in self.lut[c]) for c in self.classes]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.comment = MARK.encode()
            z.writestr("labelmap.txt", labelmap_text(codes, colors))
            z.writestr("ImageSets/Segmentation/default.txt", "".join(n + "\n" for n in names))
            for n in names:
                z.writestr(f"SegmentationClass/{n}.png", self.masks[n])
        return atomic_write_bytes(self.dest, buf.getvalue())


WRITERS = {"coco": CocoWriter, "cvat": CvatWriter}


def open_labels(fmt: str, out: str | Path, codes, void_code: str | None = None) -> LabelWriter | None:
    """The writer for ``fmt`` (None for png masks); refuses to replace a file fastseg did not write."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "png":
        return None
    try:
        return WRITERS[fmt](out, codes, void_code)
    except DataError as e:  # pycocotools missing: an option problem here, not a data problem
        raise ConfigError(str(e)) from None
