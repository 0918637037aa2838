"""Generator of the embedded demo data set (``data/``): textured shapes on noisy backgrounds.

Deterministic for a given seed, small (JPEG images, palette PNG masks holding class indices)
and learnable from scratch in a few CPU minutes, so ``fastseg fit`` has something real to chew on.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DEMO_IMAGES, DEMO_SEED, DEMO_SIZE
from ..errors import DataError
from ..io import atomic_write_bytes, palette_for

__all__ = ["DEMO_CODES", "make_demo_data"]

DEMO_CODES = ("background", "disc", "square", "triangle")

# Each shape class has its own colour family and texture, so colour, texture and form all carry signal.
_BASE_COLOURS = {1: (200, 70, 60), 2: (70, 170, 80), 3: (70, 90, 200)}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = rng.uniform(0.12, 0.22) * size
    cy, cx = rng.uniform(r, size - r, 2)
    if kind == 1:  # disc
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 2:  # square, rotated by a random angle
        a = rng.uniform(0, np.pi / 2)
        u = (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a)
        v = -(xx - cx) * np.sin(a) + (yy - cy) * np.cos(a)
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    # triangle: three half-planes around the centre, randomly rotated
    a0 = rng.uniform(0, 2 * np.pi)
    inside = np.ones((size, size), dtype=bool)
    for k in range(3):
        a = a0 + k * 2 * np.pi / 3
        inside &= (xx - cx) * np.cos(a) + (yy - cy) * np.sin(a) <= r * 0.6
    return inside


def make_sample(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One (image HxWx3 uint8, mask HxW uint8 class indices) pair."""
    grey = 90 + 80 * _smooth_noise(rng, size, 6)
    img = np.repeat(grey[..., None], 3, axis=2)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, 4))
        region = _shape_mask(kind, size, rng)
        base = np.array(_BASE_COLOURS[kind], dtype=np.float32) + rng.normal(0, 15, 3)
        texture = 0.75 + 0.5 * _smooth_noise(rng, size, int(rng.integers(8, 16)))
        img[region] = (base[None, :] * texture[region][:, None]).clip(0, 255)
        mask[region] = kind
    img += rng.normal(0, 8, img.shape)  # sensor noise
    return img.clip(0, 255).astype(np.uint8), mask


def make_demo_data(out: str | os.PathLike, n: int = DEMO_IMAGES, size: int = DEMO_SIZE, seed: int = DEMO_SEED,
                   n_valid: int | None = None, force: bool = False) -> Path:
    """Write ``n`` image/mask pairs into ``out`` (images/, masks/, codes.txt, valid.txt).

    ``n_valid`` images (default: a fifth) are listed in ``valid.txt`` so every run validates on
    the same slice. A folder that already holds anything is refused unless ``force``: the demo set
    would replace its codes.txt and valid.txt and mix shapes into its images and masks.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; give demo-data a new or empty folder")
    if not force and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out} is not empty; demo-data would replace its codes.txt and valid.txt and mix demo "
                        "shapes into its images/ and masks/ (give a new or empty folder, or add --force)")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = palette_for(len(DEMO_CODES))
    names = []
    for i in range(n):
        img, mask = make_sample(rng, size)
        name = f"shapes_{i:03d}"
        names.append(name)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        atomic_write_bytes(out / "images" / f"{name}.jpg", buf.getvalue())
        m = Image.fromarray(mask, mode="P")
        m.putpalette(palette)
        buf = io.BytesIO()
        m.save(buf, format="PNG", optimize=True)
        atomic_write_bytes(out / "masks" / f"{name}.png", buf.getvalue())
    n_valid = max(1, n // 5) if n_valid is None else n_valid
    atomic_write_bytes(out / "codes.txt", ("\n".join(DEMO_CODES) + "\n").encode())
    atomic_write_bytes(out / "valid.txt", ("\n".join(names[-n_valid:]) + "\n").encode())
    return out
