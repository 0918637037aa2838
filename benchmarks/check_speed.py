"""How fast `fastseg check` inspects a folder of a few thousand images, side by side with a naive check.

The naive check is what a script without fastseg would do: decode every image fully with PIL and
np.unique every mask, one file after another. fastseg reads image headers (plus a PNG CRC walk /
JPEG end-marker test) and bincounts masks in a thread pool. Both run in this one process, in
alternating order, so the ratio holds on a busy machine even when the absolute times do not.

    python benchmarks/check_speed.py --n 2000 --side 256 [--isbi ../shared/data/isbi2012-membrane]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fastseg.data.check import check


def make_set(root: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    img = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(np.roll(img, i, axis=0)).save(root / "images" / f"{i:05d}.jpg", quality=90)
        m = np.zeros((side, side), np.uint8)
        m[i % side:, : side // 2] = 1 + i % 3
        Image.fromarray(m).save(root / "masks" / f"{i:05d}.png")
    return root


def naive(root: Path) -> int:
    values = set()
    for img in sorted((root / "images").iterdir()):
        with Image.open(img) as im:
            arr = np.asarray(im.convert("RGB"))
        mask = root / "masks" / (img.stem + ".png")
        m = np.asarray(Image.open(mask))
        assert m.shape == arr.shape[:2]
        values |= set(np.unique(m).tolist())
    return len(values)


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--isbi", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_set(Path(tmp) / "set", args.n, args.side)
        assert check(root).ok
        fast, slow = [], []
        for _ in range(args.repeats):  # alternate so load changes hit both alike
            fast.append(timed(check, root))
            slow.append(timed(naive, root))
        f, s = min(fast), min(slow)
        print(f"{args.n} images {args.side}x{args.side} (JPEG) + PNG masks, best of {args.repeats}:")
        print(f"  fastseg check   {f:6.2f} s")
        print(f"  naive full read {s:6.2f} s   ratio naive/check = {s / f:.1f}x")
    if args.isbi is not None:
        rep = check(args.isbi)
        print(f"ISBI ({sum(rep.counts.values())} images 512x512): check {rep.seconds:.2f} s, ok={rep.ok}")


if __name__ == "__main__":
    main()
