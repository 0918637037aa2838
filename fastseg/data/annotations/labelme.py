"""LabelMe JSON files (one per image, beside the images or in annotations/) rendered into masks.

Polygons, rectangles, circles and masks are painted in file order, a later shape over an earlier
one (LabelMe's own rule); lines and points have no area and are ignored with a warning. The image
is ``imagePath`` (relative to the JSON) or, when that file is absent, the embedded ``imageData``,
written into the cache. Classes: labels.txt (LabelMe's __ignore__/_background_ convention) or
the sorted labels used.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ...errors import DataError
from ..images import IGNORE_INDEX, image_size
from ..layouts import Found
from .common import Item, Parsed, cache_dir, class_table, example, json_candidates, read_json, rendered, sniff

IGNORE_NAMES = ("__ignore__",)  # LabelMe's labels.txt convention for "do not train on this"


def _labelme_classes(root: Path, files: list[dict]) -> tuple[tuple[str, ...], dict[str, int], list[str]]:
    """labels.txt (LabelMe's __ignore__ / _background_ convention) if present, else the sorted labels used."""
    listing = root / "labels.txt"
    if listing.is_file():
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        codes, index = class_table([n for n in names if n not in IGNORE_NAMES])
        index.update({n: IGNORE_INDEX for n in names if n in IGNORE_NAMES})
        return codes, index, [f"{listing}: {len(codes)} classes ({', '.join(codes)})"]
    used = sorted({str(s.get("label")) for f in files for s in f["shapes"]})
    codes, index = class_table(used)
    return codes, index, [f"LabelMe labels: {', '.join(codes[1:])} (classes 1-{len(codes) - 1}, sorted; "
                          "add labels.txt to fix the order)"]


def _labelme_files(root: Path, out: Parsed) -> list[tuple[Path, dict]]:
    """Every readable LabelMe JSON (with a 'shapes' list); unreadable ones become one warning."""
    files, bad = [], []
    for path in json_candidates(root):
        try:
            raw, data = read_json(path)
        except DataError as e:
            bad.append(str(e))
            continue
        if isinstance(data, dict) and isinstance(data.get("shapes"), list):
            files.append((path, data))
            out.sources.append((str(path.relative_to(root)), raw))
        elif sniff(path) != "coco":
            bad.append(f"{path}: not a LabelMe file (no 'shapes' list)")
    if bad:
        out.warnings.append(f"Warning: {len(bad)} annotation file(s) skipped: {bad[0]}")
    if not files:
        raise DataError(f"{root}: no readable LabelMe JSON (files with 'shapes', beside the images or in annotations/)")
    return files


_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def _labelme_image(path: Path, rel_json: Path, data: dict, cache_images: Path) -> tuple[Path, bytes | None]:
    """The image file (imagePath, relative to the JSON) or, when absent, the embedded imageData for the cache."""
    rel = str(data.get("imagePath") or "").replace("\\", "/")
    for image in ([path.parent / rel, path.parent / Path(rel).name] if rel else []):  # the name alone: moved files
        if image.is_file():
            return image, None
    embedded = data.get("imageData")
    if not embedded:
        raise DataError(f"{path}: image '{rel}' not found and no imageData embedded (put the image beside the JSON)")
    try:
        raw = base64.b64decode(embedded, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{path}: imageData is not base64 (save the file again in LabelMe)") from None
    ext = next((e for magic, e in _MAGIC if raw.startswith(magic)), None)
    if ext is None:
        raise DataError(f"{path}: imageData is not a JPEG/PNG/BMP/TIFF image (save the file again in LabelMe)")
    return cache_images / rel_json.with_suffix(ext), raw


def _labelme_size(data: dict, image: Path, raw: bytes | None) -> tuple[int, int]:
    h, w = data.get("imageHeight"), data.get("imageWidth")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    if raw is not None:
        with Image.open(io.BytesIO(raw)) as im:
            return im.size[::-1]
    return image_size(image)[::-1]


def _mask_stamp(encoded) -> np.ndarray | None:
    """A LabelMe 'mask' shape's base64 PNG as a boolean array, or None when it is not one."""
    try:
        with Image.open(io.BytesIO(base64.b64decode(encoded or "", validate=True))) as im:
            return np.asarray(im.convert("L")) > 0
    except (binascii.Error, ValueError, OSError):
        return None


@dataclass
class _LabelmeTally:
    ignored: dict = field(default_factory=dict)  # shape type -> count
    unknown: set = field(default_factory=set)
    clipped: list = field(default_factory=list)
    invalid: list = field(default_factory=list)


def _labelme_shapes(path: Path, data: dict, size, classes: dict[str, int], tally: _LabelmeTally) -> list:
    """(value, type, points, mask) per paintable shape, in file order (a later shape paints over an earlier one)."""
    h, w = size
    shapes = []
    for k, s in enumerate(data["shapes"]):
        kind = s.get("shape_type") or "polygon"
        if kind not in ("polygon", "rectangle", "circle", "mask"):
            tally.ignored[kind] = tally.ignored.get(kind, 0) + 1
            continue
        label, pts = str(s.get("label")), s.get("points") or []
        need = 3 if kind == "polygon" else 2
        try:
            xy = np.asarray(pts, float).reshape(-1, 2)
        except ValueError:
            xy = np.zeros((0, 2))
        stamp = _mask_stamp(s.get("mask")) if kind == "mask" else None
        if len(xy) < need or (kind == "mask" and stamp is None):
            tally.invalid.append(f"{path.name} shape {k} ({kind} '{label}')")
            continue
        if kind != "circle" and ((xy < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any()):
            tally.clipped.append(f"{path.name} shape {k} ('{label}')")
        if label not in classes:
            tally.unknown.add(label)
        shapes.append((classes.get(label, IGNORE_INDEX), kind, [tuple(p) for p in xy.tolist()], stamp))
    return shapes


def _labelme_report(tally: _LabelmeTally, out: Parsed) -> None:
    if tally.ignored:
        out.warnings.append("Warning: LabelMe " + ", ".join(f"{n} {k}" for k, n in sorted(tally.ignored.items()))
                            + " shape(s) ignored (no area to fill; draw polygons for segmentation)")
    if tally.unknown:
        out.warnings.append(f"Warning: label(s) {', '.join(sorted(tally.unknown))} not in labels.txt are void "
                            "(ignored in training; add them to labels.txt to train on them)")
    if tally.clipped:
        out.warnings.append(f"Warning: {example(tally.clipped, 'LabelMe shape(s) reach outside their image')}; clipped")
    if tally.invalid:
        out.warnings.append(f"Warning: {example(tally.invalid, 'LabelMe shape(s) with too few points or no mask')}; "
                            "skipped")


def _paint_labelme(item: Item, n_classes: int) -> np.ndarray:
    """LabelMe's own drawing rules (PIL): shapes in file order, a later shape over an earlier one."""
    h, w = item.size
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for value, kind, pts, mask in item.shapes:
        if kind == "polygon":
            draw.polygon(pts, fill=value, outline=value)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = pts[:2]
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=value, outline=value)
        elif kind == "circle":
            (cx, cy), (px, py) = pts[:2]
            r = float(np.hypot(cx - px, cy - py))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=value, outline=value)
        else:  # "mask": a bitmap covering the box between the two points
            x0, y0 = (int(round(v)) for v in pts[0])
            canvas.paste(value, (x0, y0), Image.fromarray(mask.astype(np.uint8) * 255))
    return np.asarray(canvas, dtype=np.uint8)


def read_labelme(root: Path) -> Found:
    """LabelMe JSON files (beside the images or in annotations/): polygons, rectangles, circles and masks."""
    parsed = Parsed((), {}, [])
    files = _labelme_files(root, parsed)
    if (root / "labels.txt").is_file():
        parsed.sources.append(("labels.txt", (root / "labels.txt").read_bytes()))
    codes, classes, notes = _labelme_classes(root, [d for _, d in files])
    parsed.codes, parsed.notices = codes, notes
    cache = cache_dir("labelme", parsed.sources)
    tally, items, skipped = _LabelmeTally(), [], []
    for path, data in files:
        rel = path.relative_to(root)
        try:
            image, raw = _labelme_image(path, rel, data, cache / "images")
        except DataError as e:
            skipped.append(str(e))
            continue
        size = _labelme_size(data, image, raw)
        shapes = _labelme_shapes(path, data, size, classes, tally)
        items.append(Item(image, f"masks/{rel.with_suffix('.png').as_posix()}", size, shapes, raw))
    if skipped:
        parsed.warnings.append(f"Warning: {len(skipped)} LabelMe file(s) without a usable image skipped: {skipped[0]}")
    if not items:
        raise DataError(f"{root}: no LabelMe file with a usable image ({skipped[0]})")
    _labelme_report(tally, parsed)
    parsed.items = {"all": items}
    return rendered("labelme", root, parsed, _paint_labelme)
