"""Data sets beyond 8-bit RGB for tests: 16-bit TIFF stacks with a pattern a model can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def stack_image(rng, mask: np.ndarray, channels: int) -> np.ndarray:
    """H x W x C uint16 noise at 1000-3000 whose channel 1 (0 for one channel) is 20000 brighter on the object."""
    img = rng.integers(1000, 3000, (*mask.shape, channels)).astype(np.uint16)
    img[mask == 1, min(1, channels - 1)] += 20000
    return img


def make_stack_set(root: Path, channels: int = 4, n: int = 10, side: int = 64, seed: int = 0) -> Path:
    """``n`` uint16 TIFFs of ``side`` px with ``channels`` channels (2 valid via valid.txt), 0/255 square masks.

    Even images are H x W x C samples (4 are tagged RGB + alpha, which PIL would cut to 8 bits), odd ones
    C x H x W pages; one channel: plain H x W."""
    import tifffile

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((side, side), np.uint8)
        y, x = rng.integers(4, side - side // 4 - 4, 2)
        mask[y:y + side // 4, x:x + side // 4] = 1
        img = stack_image(rng, mask, channels)
        if channels == 1:
            tifffile.imwrite(root / "images" / f"im{i}.tif", img[..., 0])
        elif i % 2:
            tifffile.imwrite(root / "images" / f"im{i}.tif", np.moveaxis(img, -1, 0), photometric="minisblack")
        else:  # 3 or 4 samples: tagged RGB(A), which PIL reads as 8 bits; others: samples of a grey image
            kind = {"photometric": "rgb"} if channels in (3, 4) else {"photometric": "minisblack", "planarconfig": "contig"}
            tifffile.imwrite(root / "images" / f"im{i}.tif", img, **kind)
        Image.fromarray(mask * 255).save(root / "masks" / f"im{i}.png")
    (root / "valid.txt").write_text(f"im{n - 2}\nim{n - 1}\n")
    return root
