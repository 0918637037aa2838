"""Finding images and masks, class codes, mask-value mapping and splits.

``discover(root)`` inspects a data folder without modifying it and returns a ``DataSpec``: which
image pairs with which mask, the class codes, how raw mask values map to class indices, and the
train/valid split. ``fastseg.loaders`` turns a ``DataSpec`` into fastai ``DataLoaders``.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .config import Notify, silent
from .errors import DataError

__all__ = [
    "IGNORE_INDEX", "IMAGE_EXTS", "Sample", "DataSpec", "discover", "read_mask", "list_images",
]

IGNORE_INDEX = 255  # void pixels: excluded from the loss and every metric
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_DIRS = ("masks", "labels", "annotations", "gt")
MASK_SUFFIXES = ("", "_P", "_mask", "_label", "_labels", "-mask", "_gt", "_seg")
VOID_NAMES = ("void", "Void", "unlabelled", "Unlabelled", "unlabeled", "Unlabeled", "ignore")


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path


@dataclass(frozen=True)
class DataSpec:
    """What ``discover`` found: enough to build DataLoaders and to explain it to the user."""

    root: Path
    layout: str
    train: tuple[Sample, ...]
    valid: tuple[Sample, ...]
    codes: tuple[str, ...]
    lut: tuple[int, ...]  # 256 entries: raw mask value -> class index (IGNORE_INDEX = void)
    min_side: int  # smallest image side in the set (for crop/resize decisions)
    void_code: str | None = None
    notices: tuple[str, ...] = field(default=())

    @property
    def n_classes(self) -> int:
        return len(self.codes)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not p.name.startswith("."))


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Raw mask values as an HxW uint8 array (palette PNGs give their indices)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L"):
                arr = np.asarray(im)
            elif im.mode in ("I;16", "I;16B", "I", "F"):
                arr = np.asarray(im)
                if arr.max() > 255:
                    raise DataError(f"{path}: mask values go up to {int(arr.max())} (expected class indices 0-254)")
                arr = arr.astype(np.uint8)
            elif im.mode in ("RGB", "RGBA", "LA"):
                arr = np.asarray(im.convert("RGB"))
                if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                    raise DataError(f"{path}: colour (RGB) mask; fastseg needs class-index, palette or grey masks")
                arr = arr[..., 0]
            elif im.mode == "1":
                arr = np.asarray(im, dtype=np.uint8) * 255
            else:
                raise DataError(f"{path}: unsupported mask mode {im.mode}")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read mask ({e.__class__.__name__}: {e})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image ({e.__class__.__name__}); remove or replace the file") from None


def _find_mask_dir(root: Path) -> Path:
    for name in MASK_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no masks folder found (expected one of: {', '.join(d + '/' for d in MASK_DIRS)})")


def _pair(images: list[Path], mask_dir: Path) -> tuple[list[Sample], list[Path]]:
    """Pair each image with the mask of the same stem (mask suffixes like _P or _mask allowed)."""
    masks = {}
    for m in list_images(mask_dir):
        masks.setdefault(m.stem, m)
    pairs, unpaired = [], []
    for img in images:
        mask = next((masks[img.stem + s] for s in MASK_SUFFIXES if img.stem + s in masks), None)
        (pairs.append(Sample(img, mask)) if mask is not None else unpaired.append(img))
    return pairs, unpaired


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


def _read_codes(path: Path) -> tuple[str, ...]:
    lines = _read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    if any(not line for line in lines):
        raise DataError(f"{path}: empty line {lines.index('') + 1} (one class name per line, line number = class index)")
    dupes = sorted({c for c in lines if lines.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate class name(s) {', '.join(dupes)} (each class needs its own name)")
    if len(lines) < 2:
        raise DataError(f"{path}: needs at least 2 classes (background and one more), found {len(lines)}")
    return tuple(lines)


def _mapping(values: dict[Path, np.ndarray], codes: tuple[str, ...] | None, void_code: str | None
             ) -> tuple[tuple[str, ...], np.ndarray, list[str]]:
    """Decide how raw mask values become class indices; return (codes, lut, notices)."""
    found = np.unique(np.concatenate(list(values.values())))
    notices = []
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    binary_255 = set(found.tolist()) <= {0, 255} and 255 in found
    if codes is None:
        if binary_255:
            codes = ("background", "foreground")
            lut[0], lut[255] = 0, 1
            notices.append("masks are 0/255: mapped 255->1 (classes: background, foreground)")
        else:
            if found.max() >= IGNORE_INDEX:
                bad = next(p for p, v in values.items() if v.max() >= IGNORE_INDEX)
                raise DataError(f"{bad}: mask value 255 with no codes.txt (add codes.txt naming each class)")
            codes = tuple(f"class_{i}" for i in range(int(found.max()) + 1))
            lut[: len(codes)] = np.arange(len(codes))
            notices.append(f"no codes.txt: inferred {len(codes)} classes from mask values ({', '.join(codes)})")
        return codes, lut, notices
    n = len(codes)
    if binary_255 and n == 2:
        lut[0], lut[255] = 0, 1
        notices.append(f"masks are 0/255: mapped 255->1 ({codes[1]})")
    else:
        lut[:n] = np.arange(n)
        for p, v in values.items():
            bad = v[v >= n]
            if bad.size and not (void_code is None and set(bad.tolist()) == {IGNORE_INDEX}):
                raise DataError(f"{p}: mask values {sorted(set(bad.tolist()))[:8]} outside the {n} codes "
                                f"(class indices must be 0-{n - 1}; fix the mask or codes.txt)")
        if IGNORE_INDEX in found:
            notices.append("mask value 255 treated as void (ignored in loss and metrics)")
    if void_code is not None:
        lut[codes.index(void_code)] = IGNORE_INDEX
        notices.append(f"class '{void_code}' is void: ignored in loss and metrics")
    return codes, lut, notices


def _split(pairs: list[Sample], root: Path, valid_pct: float, seed: int) -> tuple[list[Sample], list[Sample], str]:
    valid_file = root / "valid.txt"
    if valid_file.is_file():
        names = [n for n in _read_lines(valid_file) if n]
        by_key = {}
        for s in pairs:
            by_key[s.image.name] = s
            by_key[s.image.stem] = s
        unknown = [n for n in names if n not in by_key and Path(n).stem not in by_key]
        if unknown:
            raise DataError(f"{valid_file}: names no image in {root} ({', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''})")
        chosen = {by_key.get(n, by_key.get(Path(n).stem)).image for n in names}
        valid = [s for s in pairs if s.image in chosen]
        train = [s for s in pairs if s.image not in chosen]
        how = f"valid.txt ({len(valid)} images)"
    else:
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_valid = max(1, round(len(pairs) * valid_pct))
        valid_idx = set(order[:n_valid])
        valid = [s for i, s in enumerate(pairs) if i in valid_idx]
        train = [s for i, s in enumerate(pairs) if i not in valid_idx]
        how = f"random {valid_pct:.0%} (seed {seed})"
    if not valid:
        raise DataError(f"{root}: the validation set is empty (list images in valid.txt or raise --valid-pct)")
    if not train:
        raise DataError(f"{root}: every image is in the validation set; nothing is left to train on")
    return train, valid, how


def discover(root: str | os.PathLike, valid_pct: float = 0.2, seed: int = 42, notify: Notify = silent) -> DataSpec:
    """Inspect ``root`` (``images/`` + ``masks/``, optional ``codes.txt`` and ``valid.txt``)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist (point --data at a folder with images/ and masks/)")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (point --data at a folder with images/ and masks/)")
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DataError(f"{root}: no images/ folder (expected images/ and masks/ side by side)")
    images = list_images(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no images found (looked for {', '.join(IMAGE_EXTS)})")
    mask_dir = _find_mask_dir(root)
    pairs, unpaired = _pair(images, mask_dir)
    if not pairs:
        raise DataError(f"{mask_dir}: no mask matches any image by name (image a.png needs mask a.png or a_mask.png)")
    notices = []
    if unpaired:
        notices.append(f"{len(unpaired)} image(s) without a mask skipped, e.g. {unpaired[0]}")
    codes = _read_codes(root / "codes.txt") if (root / "codes.txt").is_file() else None
    void_code = next((c for c in codes if c in VOID_NAMES), None) if codes else None
    values, min_side = {}, None
    for s in pairs:
        isz = _image_size(s.image)
        m = read_mask(s.mask)
        if (m.shape[1], m.shape[0]) != isz:
            raise DataError(f"{s.mask}: mask is {m.shape[1]}x{m.shape[0]} but image {s.image.name} is "
                            f"{isz[0]}x{isz[1]} (image and mask must be the same size)")
        values[s.mask] = np.unique(m)
        min_side = min(isz) if min_side is None else min(min_side, *isz)
    codes, lut, map_notes = _mapping(values, codes, void_code)
    notices += map_notes
    train, valid, how = _split(pairs, root, valid_pct, seed)
    notices.append(f"split: {len(train)} train / {len(valid)} valid, {how}")
    for n in notices:
        notify(n)
    return DataSpec(root=root, layout="images+masks", train=tuple(train), valid=tuple(valid), codes=codes,
                    lut=tuple(int(v) for v in lut), min_side=int(min_side), void_code=void_code, notices=tuple(notices))
