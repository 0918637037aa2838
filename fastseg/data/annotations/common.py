"""What the labelling-tool readers share: the render cache, splits from names, JSON reading, class tables.

COCO and LabelMe shapes are rendered once into index-PNG masks in a cache folder outside the data
folder (``cache_root()``, one sub-folder per hash of the annotation files), so every mask reader,
``fastseg check`` and the RAM cache work unchanged, and an edited annotation file gets fresh masks.
Parsing (and every warning) happens on each call; only the pixels are cached.
"""

from __future__ import annotations

import hashlib
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
from PIL import Image

from ...errors import DataError
from ...io import palette_for
from ..layouts import Found, Sample

RENDER_VERSION = b"1"  # part of every cache key: bump when rendering changes, so old masks are not reused
RENDER_THREADS = 8  # PNG encoding releases the GIL; a few threads hide file-system latency
SNIFF_BYTES = 65536  # enough of a JSON file to see its top-level keys (LabelMe writes "shapes" near the top)
BACKGROUND_NAMES = ("background", "_background_", "__background__")
SPLIT_WORDS = {"train": "train", "training": "train", "val": "valid", "valid": "valid", "validation": "valid",
               "test": "test", "testing": "test"}


def cache_root() -> Path:
    """Where rendered masks go: $XDG_CACHE_HOME/fastseg/labels (default ~/.cache), never the data folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fastseg" / "labels"


@dataclass
class Item:
    """One image to render: where its mask goes in the cache and what to paint."""

    image: Path
    mask_name: str  # relative path of the mask inside the cache folder
    size: tuple[int, int]  # (height, width)
    shapes: list  # format-specific, in painting order
    image_data: bytes | None = None  # LabelMe imageData: written into the cache as the image file


@dataclass
class Parsed:
    codes: tuple[str, ...]
    items: dict[str, list[Item]]  # split -> items
    sources: list[tuple[str, bytes]]  # (name, content) of every file the masks depend on
    split_source: str | None = None
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def split_of(name: str) -> str:
    """'instances_train2017.json' -> train, 'valid/_annotations.coco.json' -> valid, else all."""
    for word in re.split(r"[^a-z]+", name.lower()):
        if word in SPLIT_WORDS:
            return SPLIT_WORDS[word]
    return "all"


def merge_splits(root: Path, named: dict[str, list]) -> dict[str, list]:
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


def sniff(path: Path) -> str | None:
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
    coco_named = path.name.startswith("instances_") or path.name.endswith(".coco.json") or path.parent.name == "annotations"
    return "coco" if coco_named else None  # an empty or broken COCO file: reading it says what is wrong


def read_json(path: Path) -> tuple[bytes, object]:
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


def example(paths: list, what: str) -> str:
    return f"{len(paths)} {what}, e.g. {paths[0]}"


def save_index_png(mask: np.ndarray, dest: Path, n_classes: int) -> None:
    """A palette PNG of class indices: readable as indices, viewable as colours."""
    im = Image.fromarray(mask, mode="P")
    im.putpalette(palette_for(n_classes))
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, format="PNG")


def cache_dir(kind: str, sources: list[tuple[str, bytes]]) -> Path:
    """The cache folder for masks rendered from ``sources``: any change to them gives another folder."""
    h = hashlib.sha256(RENDER_VERSION + kind.encode())
    for name, content in sorted(sources):
        h.update(f"\0{name}\0{len(content)}\0".encode())
        h.update(content)
    return cache_root() / f"{kind}-{h.hexdigest()[:20]}"


def render_all(kind: str, parsed: Parsed, paint: Callable[[Item, int], np.ndarray]) -> tuple[Path, bool]:
    """The cache folder holding every item's mask (rendered now if absent); True if rendered now."""
    # Files in a cache, not a decoder that renders on read: every mask reader, check's scan and the RAM cache stay as they are.
    final = cache_dir(kind, parsed.sources)
    root = final.parent
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

    def one(item: Item) -> None:
        if item.image_data is not None:
            dest = tmp / item.image.relative_to(final)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(item.image_data)
        try:
            mask = paint(item, n)
        except (ValueError, TypeError, KeyError, OSError) as e:  # malformed RLE strings, mask bitmaps, ...
            raise DataError(f"{item.image}: cannot draw its annotations ({e.__class__.__name__}: {e}) "
                            "(fix them in the labelling tool and export again)") from None
        save_index_png(mask, tmp / item.mask_name, n)

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


def rendered(kind: str, root: Path, parsed: Parsed, paint) -> Found:
    """Render (or reuse) the masks and describe them as a ``Found``."""
    cache, fresh = render_all(kind, parsed, paint)
    n = sum(len(v) for v in parsed.items.values())
    splits = {s: [Sample(it.image, cache / it.mask_name) for it in items] for s, items in parsed.items.items()}
    how = "rendered" if fresh else "reused"
    notices = [*parsed.notices, f"{kind}: {how} {n} mask(s) in {cache} (outside the data folder; re-rendered "
                                "when the annotations change)"]
    return Found(kind, root, splits, split_source=parsed.split_source, notices=notices, warnings=parsed.warnings,
                 codes=parsed.codes)


def class_table(names: list[str]) -> tuple[tuple[str, ...], dict[str, int]]:
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
    for path in json_candidates(root):
        kind = sniff(path)
        if kind:
            return kind
    return None


def json_candidates(root: Path) -> list[Path]:
    found = [*root.glob("*.json"), *(root / "annotations").glob("*.json"), *root.glob("*/_annotations.coco.json")]
    return sorted(p for p in dict.fromkeys(found) if p.is_file() and not p.name.startswith("."))
