"""COCO instance annotations (polygons, RLE compressed and uncompressed) merged into semantic masks.

Categories sorted by id become classes 1..K (background 0; a category named background is 0).
Crowd regions (iscrowd=1) are void, unless a file holds nothing else (CVAT exports brush masks as
crowd). Overlaps: crowd first, then regions from largest to smallest, so small objects on top stay
visible. Splits come from the file names (instances_train2017.json, valid/_annotations.coco.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import DataError
from ..images import IGNORE_INDEX, image_size
from ..layouts import Found
from .common import Item, Parsed, class_table, example, json_candidates, merge_splits, read_json, rendered, sniff, split_of

COCO_INSTALL = "reading or writing COCO needs pycocotools (pip install 'fastseg[coco]')"


def coco_tools(what: str):
    """``pycocotools.mask``, or a ``DataError`` naming ``what`` needed it and how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise DataError(f"{what}: {COCO_INSTALL}") from None
    return mask


def _coco_files(root: Path) -> list[Path]:
    files = [p for p in json_candidates(root) if sniff(p) == "coco"]
    if not files:
        raise DataError(f"{root}: no COCO JSON found (looked for *.json, annotations/*.json, "
                        "*/_annotations.coco.json with images, annotations and categories)")
    instances = [p for p in files if p.name.startswith("instances_")]  # COCO's captions/keypoints files hold no masks
    return instances or files


def _coco_load(path: Path) -> tuple[bytes, dict]:
    raw, data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise DataError(f"{path}: not a COCO annotation file (needs 'images', 'annotations' and 'categories' lists)")
    if not data["annotations"]:
        raise DataError(f"{path}: no annotations (label some images, then export again)")
    if not any(a.get("segmentation") for a in data["annotations"]):
        raise DataError(f"{path}: no annotation has a segmentation (export polygons or masks, not only boxes)")
    return raw, data


def _coco_classes(files: list[tuple[Path, dict]]) -> tuple[tuple[str, ...], dict[int, int]]:
    """Categories sorted by id -> classes (background 0); the same id must mean the same name in every file."""
    names: dict[int, str] = {}
    for path, data in files:
        for cat in data["categories"]:
            cid, name = cat.get("id"), str(cat.get("name", cat.get("id")))
            if names.setdefault(cid, name) != name:
                raise DataError(f"{path}: category id {cid} is '{name}' here but '{names[cid]}' in another file "
                                "(export all parts from the same project)")
    order = sorted(names, key=lambda c: (0, c, "") if isinstance(c, (int, float)) else (1, 0, str(c)))
    codes, index = class_table([names[c] for c in order])
    if len(codes) < 2:
        raise DataError(f"{files[0][0]}: no category besides background (add labels in the labelling tool)")
    return codes, {cid: index[name] for cid, name in names.items()}


def _image_bases(path: Path, root: Path) -> list[Path]:
    """Where a COCO file's images may be: beside it, beside its folder, images/<subset>/, images/, <subset>/."""
    subset = path.stem.removeprefix("instances_")
    up = path.parent.parent
    bases = [path.parent, up / "images" / subset, up / "images", root / "images" / subset, root / "images",
             root / subset, up, root]
    return [b for b in dict.fromkeys(bases) if b.is_relative_to(root)]  # never outside the data folder


def _find_images(path: Path, root: Path, images: list[dict]) -> tuple[dict[int, Path], list[str]]:
    """image id -> file, and the file names not found (looked up under the first folder that has any)."""
    names = [str(im.get("file_name", "")) for im in images]
    probe = names[:20]
    base = next((b for b in _image_bases(path, root)
                 if any((b / n).is_file() or (b / Path(n).name).is_file() for n in probe if n)), None)
    if base is None:
        raise DataError(f"{path}: none of its images found (e.g. {names[0] if names else '?'}; put them in images/ "
                        "or beside the JSON file)")
    found, missing = {}, []
    for im, name in zip(images, names):
        p = next((c for c in (base / name, base / Path(name).name) if name and c.is_file()), None)
        if p is None:
            missing.append(name)
        else:
            found[im.get("id")] = p
    return found, missing


def _size(image: dict, file: Path) -> tuple[int, int]:
    """(height, width) from the image entry, or from the file's header when the entry lacks them."""
    h, w = image.get("height"), image.get("width")
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        return h, w
    return image_size(file)[::-1]


@dataclass
class _CocoTally:
    """What one COCO file held that the user should hear about."""

    unknown: set = field(default_factory=set)
    clipped: list = field(default_factory=list)
    invalid: list = field(default_factory=list)
    crowd: int = 0


def _coco_shape(ann: dict, size: tuple[int, int], value: int, tally: _CocoTally):
    """(value, segmentation, crowd) for one annotation, or None when it has nothing to paint."""
    segm, h, w = ann.get("segmentation"), *size
    where = f"annotation {ann.get('id')}"
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                 and all(isinstance(v, (int, float)) for v in p)]
        if len(polys) != len(segm):
            tally.invalid.append(f"{where}: polygon with fewer than 3 points or non-numbers")
        if not polys:
            return None
        xy = np.concatenate([np.asarray(p, float) for p in polys]).reshape(-1, 2)
        if (xy < 0).any() or (xy[:, 0] > w).any() or (xy[:, 1] > h).any():
            tally.clipped.append(where)
        return value, polys, bool(ann.get("iscrowd"))
    if isinstance(segm, dict) and "counts" in segm:
        if list(segm.get("size", [])) != [h, w]:
            tally.invalid.append(f"{where}: RLE size {segm.get('size')} is not the image's [{h}, {w}]")
            return None
        if _rle_counts(segm["counts"]) != h * w:  # pycocotools decodes broken counts without complaint
            tally.invalid.append(f"{where}: RLE counts do not cover the image's {h}x{w} pixels")
            return None
        return value, segm, bool(ann.get("iscrowd"))
    if segm:
        tally.invalid.append(f"{where}: segmentation is neither polygons nor RLE")
    return None


def _rle_counts(counts) -> int | None:
    """Pixels an RLE covers (COCO's compressed string or a list of runs); None when it is malformed."""
    if isinstance(counts, list):
        ok = all(isinstance(c, int) and c >= 0 for c in counts)
        return sum(counts) if ok else None
    if not isinstance(counts, (str, bytes)):
        return None
    runs, x, k = [], 0, 0
    for c in (counts.encode() if isinstance(counts, str) else counts):  # pycocotools' rleFrString, 5 bits a char
        c -= 48
        x |= (c & 0x1F) << (5 * k)
        k += 1
        if c & 0x20:
            continue
        if c & 0x10:
            x |= -1 << (5 * k)
        runs.append(x + (runs[-2] if len(runs) > 2 else 0))
        x, k = 0, 0
    return sum(runs) if k == 0 and all(r >= 0 for r in runs) else None


def _coco_file_items(path: Path, data: dict, root: Path, classes: dict[int, int], out: Parsed) -> list[Item]:
    """The images of one COCO file that have annotations, with their shapes; its warnings go to ``out``."""
    files, missing = _find_images(path, root, data["images"])
    sizes = {im.get("id"): _size(im, files[im.get("id")]) for im in data["images"] if im.get("id") in files}
    tally, per_image = _CocoTally(), {}
    for ann in data["annotations"]:
        iid, cid = ann.get("image_id"), ann.get("category_id")
        if iid not in files:
            continue
        if cid not in classes:
            tally.unknown.add(cid)
        shape = _coco_shape(ann, sizes[iid], classes.get(cid, IGNORE_INDEX), tally)
        if shape is not None:
            per_image.setdefault(iid, []).append(shape)
    crowd_only = bool(per_image) and all(c for shapes in per_image.values() for _, _, c in shapes)
    names = {im.get("id"): str(im.get("file_name", "")) for im in data["images"]}
    items, used = [], set()
    for iid, shapes in per_image.items():
        if not crowd_only:  # crowd regions (iscrowd=1) are void, unless the file has nothing else
            tally.crowd += sum(c for _, _, c in shapes)
            shapes = [(IGNORE_INDEX if c else v, s, c) for v, s, c in shapes]
        rel = Path(*[p for p in Path(names[iid].replace("\\", "/")).parts if p not in ("..", ".", "/")] or ["image"])
        name = f"{path.stem}/{rel.with_suffix('.png').as_posix()}"
        if name in used:  # a.jpg and a.png in one file
            name = f"{path.stem}/{rel.with_name(f'{rel.stem}_{iid}.png').as_posix()}"
        used.add(name)
        items.append(Item(files[iid], name, sizes[iid], shapes))
    _coco_report(path, tally, missing, len(files) - len(items), crowd_only, out)
    return items


def _coco_report(path: Path, tally: _CocoTally, missing: list, unlabelled: int, crowd_only: bool, out: Parsed) -> None:
    w = out.warnings
    if missing:
        w.append(f"Warning: {path}: {example(missing, 'image(s) not found')}; skipped")
    if unlabelled:
        w.append(f"Warning: {path}: {unlabelled} image(s) without annotations skipped (unlabelled, not background)")
    if tally.unknown:
        w.append(f"Warning: {path}: annotations with category id(s) {', '.join(map(str, sorted(tally.unknown, key=str)))}"
                 " not in 'categories' are void (ignored in training)")
    if tally.clipped:
        w.append(f"Warning: {path}: {example(tally.clipped, 'polygon(s) reach outside their image')}; clipped")
    if tally.invalid:
        w.append(f"Warning: {path}: {example(tally.invalid, 'unusable segmentation(s)')}; skipped")
    if tally.crowd:
        out.notices.append(f"{path}: {tally.crowd} crowd region(s) (iscrowd=1) are void: ignored in loss and metrics")
    if crowd_only:
        out.notices.append(f"{path}: every annotation is iscrowd=1 (as CVAT exports masks): read as ordinary regions")


def _paint_coco(item: Item, n_classes: int) -> np.ndarray:
    """Crowd (void) regions first, then regions from largest to smallest, so small objects on top stay visible."""
    mask_api = coco_tools(str(item.image))
    h, w = item.size
    mask = np.zeros((h, w), np.uint8)
    rles = []
    for value, segm, crowd in item.shapes:
        if isinstance(segm, list):
            rle = mask_api.merge(mask_api.frPyObjects(segm, h, w))
        elif isinstance(segm["counts"], list):
            rle = mask_api.frPyObjects(segm, h, w)
        else:
            rle = {"size": [h, w], "counts": segm["counts"].encode() if isinstance(segm["counts"], str)
                   else segm["counts"]}
        rles.append((value != IGNORE_INDEX or not crowd, -float(mask_api.area(rle)), value, rle))
    for *_, value, rle in sorted(rles, key=lambda r: r[:2]):
        mask[mask_api.decode(rle).astype(bool)] = value
    return mask


def read_coco(root: Path) -> Found:
    """COCO instance annotations (polygons, RLE) merged into semantic masks; splits from the file names."""
    files = _coco_files(root)
    coco_tools(str(root))
    loaded = [(p, *_coco_load(p)) for p in files]
    codes, classes = _coco_classes([(p, d) for p, _, d in loaded])
    parsed = Parsed(codes, {}, [(str(p.relative_to(root)), raw) for p, raw, _ in loaded])
    named: dict[str, list[Item]] = {}
    for path, _, data in loaded:
        named.setdefault(split_of(str(path.relative_to(root))), []).extend(
            _coco_file_items(path, data, root, classes, parsed))
    if not any(named.values()):
        why = parsed.warnings[0].removeprefix("Warning: ") if parsed.warnings else "no annotated image"
        raise DataError(f"{root}: no usable annotated image ({why})")
    parsed.items = merge_splits(root, named)
    if set(parsed.items) != {"all"}:
        parsed.split_source = "COCO files " + ", ".join(p.name for p in files)
    parsed.notices.insert(0, f"COCO categories: {', '.join(codes[1:])} (classes 1-{len(codes) - 1}, background 0)")
    return rendered("coco", root, parsed, _paint_coco)
