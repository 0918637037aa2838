"""Tiny generated data sets, one per layout fastseg recognises (used by test_data and test_check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32
COLORS = {"sky": (128, 128, 128), "road": (128, 64, 128), "car": (64, 0, 128), "void": (0, 0, 0)}


def class_mask(i: int, n_classes: int, side: int = SIDE) -> np.ndarray:
    """Stripes using every class 0..n_classes-1, shifted per image."""
    y = (np.arange(side)[:, None] + np.zeros(side, int)[None, :] + i) // max(1, side // n_classes) % n_classes
    return y.astype(np.uint8)


def save_image(path: Path, seed: int, side: int = SIDE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(rgb).save(path)


def save_mask(path: Path, mask: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask)
    if palette:
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    im.save(path)


def make_folders(root: Path, n: int = 6, n_classes: int = 3, codes: list[str] | None = None,
                 valid: list[str] | None = None) -> Path:
    """Layout 1: images/ + masks/ (class-index masks, some with the _mask suffix)."""
    for i in range(n):
        save_image(root / "images" / f"im{i}.png", i)
        save_mask(root / "masks" / (f"im{i}_mask.png" if i % 2 else f"im{i}.png"), class_mask(i, n_classes))
    if codes is not None:
        (root / "codes.txt").write_text("\n".join(codes) + "\n")
    if valid is not None:
        (root / "valid.txt").write_text("\n".join(valid) + "\n")
    return root


def make_camvid(root: Path, n: int = 6) -> Path:
    """Layout 4 (fastai CamVid): images/, labels/<stem>_P.png, codes.txt (Void last), valid.txt."""
    for i in range(n):
        save_image(root / "images" / f"f{i:03d}.png", i)
        save_mask(root / "labels" / f"f{i:03d}_P.png", class_mask(i, 4))  # 3 = Void
    (root / "codes.txt").write_text("Sky\nRoad\nCar\nVoid\n")
    (root / "valid.txt").write_text("f004.png\nf005.png\n")
    return root


def make_segnet(root: Path, n: dict[str, int] | None = None) -> Path:
    """Layout 2 (SegNet CamVid): train/ val/ test/ + *annot/, values 0-2 and 11 (unlabelled), no codes."""
    k = 0
    for split, count in (n or {"train": 4, "val": 2, "test": 2}).items():
        for i in range(count):
            save_image(root / split / f"{split}{i}.png", k)
            m = class_mask(k, 3)
            m[:2] = 11
            save_mask(root / f"{split}annot" / f"{split}{i}.png", m)
            k += 1
    return root


def make_voc(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """Layout 3 (Pascal VOC): JPEGImages/*.jpg, SegmentationClass/*.png (palette, 255 border), ImageSets."""
    stems = [f"2007_{i:06d}" for i in range(n_train + n_val)]
    for i, stem in enumerate(stems):
        save_image(root / "JPEGImages" / f"{stem}.jpg", i)
        m = np.zeros((SIDE, SIDE), np.uint8)
        m[8:24, 8:24] = [15, 12, 7][i % 3]  # person, dog, car
        m[8, 8:24] = m[23, 8:24] = 255
        save_mask(root / "SegmentationClass" / f"{stem}.png", m, palette=True)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("\n".join(stems[:n_train]) + "\n")
    (sets / "val.txt").write_text("\n".join(stems[n_train:]) + "\n")
    (root / "JPEGImages" / "2008_999999.jpg").write_bytes((root / "JPEGImages" / f"{stems[0]}.jpg").read_bytes())
    return root


def make_colour(root: Path, n: int = 5, table: str = "codes.csv") -> Path:
    """Layout 1 with RGB colour masks and a name,r,g,b colour table (with a header line)."""
    names = list(COLORS)
    lut = np.array([COLORS[c] for c in names], np.uint8)
    for i in range(n):
        save_image(root / "images" / f"c{i}.png", i)
        save_mask(root / "masks" / f"c{i}.png", lut[class_mask(i, len(names))])
    (root / table).write_text("name,r,g,b\n" + "".join(f"{c},{r},{g},{b}\n" for c, (r, g, b) in COLORS.items()))
    return root


def snapshot(root: Path) -> list:
    """Every file under root with its size, mtime and content hash: to prove nothing was modified."""
    import hashlib

    return sorted((str(p), p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
                  for p in root.rglob("*") if p.is_file())
