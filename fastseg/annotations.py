"""Masks from labelling tools: COCO JSON, CVAT "Segmentation mask 1.1" exports and LabelMe JSON.

Each reader returns a ``fastseg.layouts.Found`` with the layout's own class table. CVAT masks are
colour PNGs read through ``labelmap.txt`` as they are. COCO and LabelMe shapes are rendered once
into index-PNG masks in a cache folder outside the data folder (``cache_root()``, one sub-folder
per hash of the annotation files), so every mask reader, ``fastseg check`` and the RAM cache work
unchanged and an edited annotation file gets fresh masks. Parsing (and every warning) happens on
each call; only the pixels are cached. The data folder is never written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from .errors import DataError
from .images import IGNORE_INDEX, IMAGE_EXTS, image_size
from .io import palette_for
from .layouts import Found, Sample

__all__ = ["read_coco", "read_cvat", "read_labelme", "detect_annotations", "cache_root", "read_labelmap",
           "labelmap_text", "coco_tools", "BACKGROUND_NAMES", "RENDER_VERSION"]

RENDER_VERSION = b"1"  # part of every cache key: bump when rendering changes, so old masks are not reused
RENDER_THREADS = 8  # PNG encoding releases the GIL; a few threads hide file-system latency
SNIFF_BYTES = 65536  # enough of a JSON file to see its top-level keys (LabelMe writes "shapes" near the top)
BACKGROUND_NAMES = ("background", "_background_", "__background__")
IGNORE_NAMES = ("__ignore__",)  # LabelMe's labels.txt convention for "do not train on this"
LINE_SHAPES = ("line", "linestrip", "point", "points")  # LabelMe shapes without an area
SPLIT_WORDS = {"train": "train", "training": "train", "val": "valid", "valid": "valid", "validation": "valid",
               "test": "test", "testing": "test"}
CVAT_HINT = "CVAT 'Segmentation mask 1.1' export: labelmap.txt, SegmentationClass/, JPEGImages/"
COCO_INSTALL = "reading or writing COCO needs pycocotools (pip install 'fastseg[coco]')"


def coco_tools(what: str):
    """``pycocotools.mask``, or a ``DataError`` naming ``what`` needed it and how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise DataError(f"{what}: {COCO_INSTALL}") from None
    return mask


def cache_root() -> Path:
    """Where rendered masks go: $XDG_CACHE_HOME/fastseg/labels (default ~/.cache), never the data folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastseg" / "labels"


# ---------------------------------------------------------------- shared pieces


@dataclass
class _Item:
    """One image to render: where its mask goes in the cache and what to paint."""

    image: Path
    mask_name: str  # relative path of the mask inside the cache folder
    size: tuple[int, int]  # (height, width)
    shapes: list  # format-specific, in painting order
    image_data: bytes | None = None  # LabelMe imageData: written into the cache as the image file


@dataclass
class _Parsed:
    codes: tuple[str, ...]
    items: dict[str, list[_Item]]  # split -> items
    sources: list[tuple[str, bytes]]  # (name, content) of every file the masks depend on
    split_source: str | None = None
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _split_of(name: str) -> str:
    """'instances_train2017.json' -> train, 'valid/_annotations.coco.json' -> valid, else all."""
    for word in re.split(r"[^a-z]+", name.lower()):
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "all"


def _merge_splits(root: Path, named: dict[str, list]) -> dict[str, list]:
    """train/valid/test when a validation part exists (unnamed parts join train), else all (+ test)."""
    named = {k: v for k, v in named.items() if v}
    rest = named.pop("all", [])
    if "valid" in named:
        named["train"] = named.get("train", []) + rest
    else:
        rest = named.pop("train", []) + rest
        named = {**({"all": rest} if rest else {}), **named}
    if not (named.get("train") or named.get("all")):
        raise DataError(f"{root}: no annotated training images (only a test part) (export the training images too)")
    return named


def _sniff(path: Path) -> str | None:
    """'labelme', 'coco' or None from the first bytes of a JSON file (without parsing a large file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return None
    if b'"shapes"' in head:
        return "labelme"
    if any(k in head for k in (b'"annotations"', b'"categories"', b'"images"')):
        return "coco"
    return None


def _read_json(path: Path) -> tuple[bytes, object]:
    """(raw bytes, parsed JSON) or a ``DataError`` saying why the file is unusable."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}) (check the file's permissions)") from None
    if not raw.strip():
        raise DataError(f"{path}: empty file (export the annotations again)")
    try:
        return raw, json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise DataError(f"{path}: not valid JSON{where} (export the annotations again)") from None


def _example(paths: list, what: str) -> str:
    return f"{len(paths)} {what}, e.g. {paths[0]}"


def _save_index_png(mask: np.ndarray, dest: Path, n_classes: int) -> None:
    """A palette PNG of class indices: readable as indices, viewable as colours."""
    im = Image.fromarray(mask, mode="P")
    im.putpalette(palette_for(n_classes))
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, format="PNG")


def _cache_key(kind: str, sources: list[tuple[str, bytes]]) -> str:
    h = hashlib.sha256(RENDER_VERSION + kind.encode())
    for name, content in sorted(sources):
        h.update(f"\0{name}\0{len(content)}\0".encode())
        h.update(content)
    return h.hexdigest()[:20]


def _render_all(kind: str, parsed: _Parsed, paint: Callable[[_Item, int], np.ndarray]) -> tuple[Path, bool]:
    """The cache folder holding every item's mask (rendered now if absent); True if rendered now."""
    root = cache_root()
    final = root / f"{kind}-{_cache_key(kind, parsed.sources)}"
    if final.is_dir():
        return final, False
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    except OSError as e:
        raise DataError(f"{root}: cannot create the mask cache ({e.strerror}) (point XDG_CACHE_HOME at a "
                        "writable folder)") from None
    items = [it for part in parsed.items.values() for it in part]
    n = len(parsed.codes)

    def one(item: _Item) -> None:
        if item.image_data is not None:
            dest = tmp / item.image.relative_to(final)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(item.image_data)
        _save_index_png(paint(item, n), tmp / item.mask_name, n)

    try:
        with ThreadPoolExecutor(max_workers=min(RENDER_THREADS, max(1, len(items)))) as pool:
            list(pool.map(one, items))
        os.rename(tmp, final)  # atomic: a concurrent process (a DDP rank) may have won; then use its copy
    except OSError as e:
        if not final.is_dir():
            raise DataError(f"{root}: cannot write rendered masks ({e.strerror or e}) (free some disk space, or "
                            "point XDG_CACHE_HOME at a writable folder)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True


def _found(kind: str, root: Path, parsed: _Parsed, paint) -> Found:
    """Render (or reuse) the masks and describe them as a ``Found``."""
    cache, fresh = _render_all(kind, parsed, paint)
    n = sum(len(v) for v in parsed.items.values())
    splits = {s: [Sample(it.image, cache / it.mask_name) for it in items] for s, items in parsed.items.items()}
    how = "rendered" if fresh else "reused"
    notices = [*parsed.notices, f"{kind}: {how} {n} mask(s) in {cache} (outside the data folder; re-rendered "
                                "when the annotations change)"]
    return Found(kind, root, splits, split_source=parsed.split_source, notices=notices, warnings=parsed.warnings,
                 codes=parsed.codes)


def _class_table(names: list[str]) -> tuple[tuple[str, ...], dict[str, int]]:
    """Class names in first-seen order -> (codes with background 0, name -> index); background-like names -> 0."""
    codes, index = ["background"], {}
    for name in names:
        if name.lower() in BACKGROUND_NAMES:
            index[name] = 0
        elif name not in index:
            index[name] = len(codes)
            codes.append(name)
    return tuple(codes), index


def detect_annotations(root: Path) -> str | None:
    """'coco' or 'labelme' when ``root`` holds such JSON files, else None."""
    for path in _json_candidates(root):
        kind = _sniff(path)
        if kind:
            return kind
    return None


def _json_candidates(root: Path) -> list[Path]:
    found = [*root.glob("*.json"), *(root / "annotations").glob("*.json"), *root.glob("*/_annotations.coco.json")]
    return sorted(p for p in dict.fromkeys(found) if p.is_file() and not p.name.startswith("."))


# ---------------------------------------------------------------- COCO


def _coco_files(root: Path) -> list[Path]:
    files = [p for p in _json_candidates(root) if _sniff(p) == "coco"]
    if not files:
        raise DataError(f"{root}: no COCO JSON found (looked for *.json, annotations/*.json, "
                        "*/_annotations.coco.json with images, annotations and categories)")
    instances = [p for p in files if p.name.startswith("instances_")]  # COCO's captions/keypoints files hold no masks
    return instances or files


def _coco_load(path: Path) -> tuple[bytes, dict]:
    raw, data = _read_json(path)
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
    codes, index = _class_table([names[c] for c in order])
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
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if len(polys) != len(segm):
            tally.invalid.append(f"{where}: polygon with fewer than 3 points")
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
        return value, segm, bool(ann.get("iscrowd"))
    if segm:
        tally.invalid.append(f"{where}: segmentation is neither polygons nor RLE")
    return None


def _coco_file_items(path: Path, data: dict, root: Path, classes: dict[int, int], out: _Parsed) -> list[_Item]:
    """The images of one COCO file that have annotations, with their shapes; its warnings go to ``out``."""
    files, missing = _find_images(path, root, data["images"])
    sizes = {im.get("id"): (int(im.get("height", 0)), int(im.get("width", 0))) for im in data["images"]}
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
        items.append(_Item(files[iid], name, sizes[iid], shapes))
    _coco_report(path, data, tally, missing, len(files) - len(items), crowd_only, out)
    return items


def _coco_report(path: Path, data: dict, tally: _CocoTally, missing: list, unlabelled: int, crowd_only: bool,
                 out: _Parsed) -> None:
    w = out.warnings
    if missing:
        w.append(f"Warning: {path}: {_example(missing, 'image(s) not found')}; skipped")
    if unlabelled:
        w.append(f"Warning: {path}: {unlabelled} image(s) without annotations skipped (unlabelled, not background)")
    if tally.unknown:
        w.append(f"Warning: {path}: annotations with category id(s) {', '.join(map(str, sorted(tally.unknown, key=str)))}"
                 " not in 'categories' are void (ignored in training)")
    if tally.clipped:
        w.append(f"Warning: {path}: {_example(tally.clipped, 'polygon(s) reach outside their image')}; clipped")
    if tally.invalid:
        w.append(f"Warning: {path}: {_example(tally.invalid, 'unusable segmentation(s)')}; skipped")
    if tally.crowd:
        out.notices.append(f"{path}: {tally.crowd} crowd region(s) (iscrowd=1) are void: ignored in loss and metrics")
    if crowd_only:
        out.notices.append(f"{path}: every annotation is iscrowd=1 (as CVAT exports masks): read as ordinary regions")


def _paint_coco(item: _Item, n_classes: int) -> np.ndarray:
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
    parsed = _Parsed(codes, {}, [(str(p.relative_to(root)), raw) for p, raw, _ in loaded])
    named: dict[str, list[_Item]] = {}
    for path, _, data in loaded:
        named.setdefault(_split_of(str(path.relative_to(root))), []).extend(
            _coco_file_items(path, data, root, classes, parsed))
    if not any(named.values()):
        raise DataError(f"{files[0]}: no annotated image found on disk (put the images in images/ or beside the JSON)")
    parsed.items = _merge_splits(root, named)
    if set(parsed.items) != {"all"}:
        parsed.split_source = "COCO files " + ", ".join(p.name for p in files)
    parsed.notices.insert(0, f"COCO categories: {', '.join(codes[1:])} (classes 1-{len(codes) - 1}, background 0)")
    return _found("coco", root, parsed, _paint_coco)


# ---------------------------------------------------------------- CVAT "Segmentation mask 1.1"


def read_labelmap(path: Path) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...], list[str]]:
    """labelmap.txt (``name:r,g,b:parts:actions`` per line) -> (codes, colours, notes); background first."""
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}) (export again from CVAT)") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        try:
            rgb = tuple(int(v) for v in rest.split(":")[0].split(","))
        except ValueError:
            rgb = ()
        if not name.strip() or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"{path}: line {i} is not label:r,g,b::  ('{line}') (fix the line or export again)")
        rows.append((name.strip(), rgb))
    notes = []
    bg = next((r for r in rows if r[0].lower() in BACKGROUND_NAMES), None)
    if bg is not None:
        rows = [bg] + [r for r in rows if r is not bg]
    elif (0, 0, 0) not in [c for _, c in rows]:
        rows.insert(0, ("background", (0, 0, 0)))
        notes.append(f"{path}: no background label: unlabelled black pixels are class 0 'background'")
    for kind, seq in (("label", [n for n, _ in rows]), ("colour", [c for _, c in rows])):
        dupes = sorted({str(v) for v in seq if seq.count(v) > 1})
        if dupes:
            raise DataError(f"{path}: duplicate {kind}(s) {', '.join(dupes)} (each label needs its own colour)")
    if len(rows) < 2:
        raise DataError(f"{path}: needs at least one label besides background")
    return tuple(n for n, _ in rows), tuple(c for _, c in rows), notes


def labelmap_text(codes, colors) -> str:
    """The labelmap.txt CVAT reads and writes, one ``name:r,g,b::`` line per class."""
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(codes, colors)]
    return "\n".join(lines) + "\n"


def cvat_root(root: Path) -> Path | None:
    """``root`` or its single sub-folder holding labelmap.txt and SegmentationClass/, if any."""
    found = [d for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]
             if (d / "labelmap.txt").is_file() and (d / "SegmentationClass").is_dir()] if root.is_dir() else []
    return found[0] if found and (found[0] == root or len(found) == 1) else None


def _cvat_subsets(root: Path) -> dict[str, str]:
    """Item name -> split, from ImageSets/Segmentation/<subset>.txt (CVAT's subsets: default, train, ...)."""
    out = {}
    for listing in sorted((root / "ImageSets" / "Segmentation").glob("*.txt")):
        for line in listing.read_text().splitlines():
            if line.strip():
                out[line.split()[0]] = _split_of(listing.stem)
    return out


def read_cvat(root: Path) -> Found:
    """CVAT 'Segmentation mask 1.1': colour masks read through labelmap.txt; SegmentationObject/ is ignored."""
    base = cvat_root(root)
    if base is None:
        raise DataError(f"{root}: no labelmap.txt with SegmentationClass/ beside it ({CVAT_HINT})")
    codes, colors, notes = read_labelmap(base / "labelmap.txt")
    image_dir = next((base / d for d in ("JPEGImages", "images") if (base / d).is_dir()), None)
    if image_dir is None:
        raise DataError(f"{base}: no JPEGImages/ folder (export from CVAT with 'Save images', or copy the "
                        "images into JPEGImages/)")
    images = {p.relative_to(image_dir).with_suffix("").as_posix(): p for p in sorted(image_dir.rglob("*"))
              if p.is_file() and p.suffix.lower() in IMAGE_EXTS}
    subsets = _cvat_subsets(base)
    named: dict[str, list[Sample]] = {}
    extra = []
    for mask in sorted((base / "SegmentationClass").rglob("*.png")):
        name = mask.relative_to(base / "SegmentationClass").with_suffix("").as_posix()
        if name in images:
            named.setdefault(subsets.get(name, "all"), []).append(Sample(images[name], mask))
        else:
            extra.append(mask)
    if not named:
        raise DataError(f"{base / 'SegmentationClass'}: no mask matches an image in {image_dir.name}/ by name")
    splits = _merge_splits(base, named)
    # Images without a mask were not annotated in CVAT: not worth a warning (as in VOC's JPEGImages/).
    return Found("cvat", base, splits, unpaired_masks=extra, codes=codes, colors=colors,
                 split_source="CVAT subsets in ImageSets/Segmentation/" if set(splits) != {"all"} else None,
                 notices=[f"CVAT labelmap.txt: {len(codes)} classes ({', '.join(codes)})", *notes])


# ---------------------------------------------------------------- LabelMe


def _labelme_classes(root: Path, files: list[dict]) -> tuple[tuple[str, ...], dict[str, int], list[str]]:
    """labels.txt (LabelMe's __ignore__ / _background_ convention) if present, else the sorted labels used."""
    listing = root / "labels.txt"
    if listing.is_file():
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        codes, index = _class_table([n for n in names if n not in IGNORE_NAMES])
        index.update({n: IGNORE_INDEX for n in names if n in IGNORE_NAMES})
        return codes, index, [f"{listing}: {len(codes)} classes ({', '.join(codes)})"]
    used = sorted({str(s.get("label")) for f in files for s in f["shapes"]})
    codes, index = _class_table(used)
    return codes, index, [f"LabelMe labels: {', '.join(codes[1:])} (classes 1-{len(codes) - 1}, sorted; "
                          "add labels.txt to fix the order)"]


def _labelme_files(root: Path, out: _Parsed) -> list[tuple[Path, dict]]:
    """Every readable LabelMe JSON (with a 'shapes' list); unreadable ones become one warning."""
    files, bad = [], []
    for path in _json_candidates(root):
        try:
            raw, data = _read_json(path)
        except DataError as e:
            bad.append(str(e))
            continue
        if isinstance(data, dict) and isinstance(data.get("shapes"), list):
            files.append((path, data))
            out.sources.append((str(path.relative_to(root)), raw))
        elif _sniff(path) != "coco":
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
    if rel and (path.parent / rel).is_file():
        return path.parent / rel, None
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


def _labelme_report(tally: _LabelmeTally, out: _Parsed) -> None:
    if tally.ignored:
        out.warnings.append("Warning: LabelMe " + ", ".join(f"{n} {k}" for k, n in sorted(tally.ignored.items()))
                            + " shape(s) ignored (no area to fill; draw polygons for segmentation)")
    if tally.unknown:
        out.warnings.append(f"Warning: label(s) {', '.join(sorted(tally.unknown))} not in labels.txt are void "
                            "(ignored in training; add them to labels.txt to train on them)")
    if tally.clipped:
        out.warnings.append(f"Warning: {_example(tally.clipped, 'LabelMe shape(s) reach outside their image')}; clipped")
    if tally.invalid:
        out.warnings.append(f"Warning: {_example(tally.invalid, 'LabelMe shape(s) with too few points or no mask')}; "
                            "skipped")


def _paint_labelme(item: _Item, n_classes: int) -> np.ndarray:
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
    parsed = _Parsed((), {}, [])
    files = _labelme_files(root, parsed)
    if (root / "labels.txt").is_file():
        parsed.sources.append(("labels.txt", (root / "labels.txt").read_bytes()))
    codes, classes, notes = _labelme_classes(root, [d for _, d in files])
    parsed.codes, parsed.notices = codes, notes
    cache = cache_root() / f"labelme-{_cache_key('labelme', parsed.sources)}"
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
        items.append(_Item(image, f"masks/{rel.with_suffix('.png').as_posix()}", size, shapes, raw))
    if skipped:
        parsed.warnings.append(f"Warning: {len(skipped)} LabelMe file(s) without a usable image skipped: {skipped[0]}")
    if not items:
        raise DataError(f"{root}: no LabelMe file with a usable image ({skipped[0]})")
    _labelme_report(tally, parsed)
    parsed.items = {"all": items}
    return _found("labelme", root, parsed, _paint_labelme)
