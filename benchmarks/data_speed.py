"""Milliseconds per training batch of the two data paths alone (no model): fastai's per-item path
(``fastseg.train.loaders.make_dataloaders``, RAM cache, in-process) and the device data path
(``fastseg.train.device_data``), same crop, batch size and augmentation, interleaved rounds.

    PYTHONPATH=. python benchmarks/data_speed.py                 # ISBI if present, crop 256, bs 8, flips
    PYTHONPATH=. python benchmarks/data_speed.py --data data --size 64 --aug none
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012-membrane"


def ms_per_batch(dl, batches: int, device: torch.device) -> float:
    """Median over ``batches`` batches (after one warm-up batch) of the time to get the next batch."""
    times, it = [], iter(dl)
    next(it)
    for _ in range(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(dl)
            x, _ = next(it)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="fastseg data folder [ISBI if present]")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--bs", type=int, default=8)
    p.add_argument("--aug", default="flips", choices=["none", "flips"])
    p.add_argument("--batches", type=int, default=20, help="timed batches per round [20]")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    from fastseg.data.dataset import discover
    from fastseg.train.device_data import CropStore, device_dataloaders
    from fastseg.train.loaders import Getters, make_dataloaders

    data = Path(args.data) if args.data else ISBI
    spec = discover(data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    getters = Getters.for_spec(spec, cache=True)
    fast = make_dataloaders(spec, size=args.size, bs=args.bs, getters=getters, device=device, aug=args.aug,
                            repeats=max(1, 4 * args.bs // max(1, len(spec.train))))
    t = time.perf_counter()
    store = CropStore.from_spec(spec, device, "device", getters=(getters.x, getters.y))
    mine = device_dataloaders(store, args.size, args.bs, args.aug, repeats=fast.train.n // len(spec.train))
    print(f"{data}: {len(spec.train)} train images; crop {args.size}, bs {args.bs}, aug {args.aug}, device {device}; "
          f"device store built in {time.perf_counter() - t:.2f} s ({store.pixels.numel() / 2**20:.0f} MiB of pixels)")
    rows = {"fastai per-item path (RAM cache, in-process)": [], "device data path": []}
    for _ in range(args.rounds):
        rows["fastai per-item path (RAM cache, in-process)"].append(ms_per_batch(fast.train, args.batches, device))
        rows["device data path"].append(ms_per_batch(mine.train, args.batches, device))
    for name, ms in rows.items():
        print(f"| {name} | {statistics.median(ms):.2f} ms per batch | rounds: {', '.join(f'{m:.2f}' for m in ms)} |")
    a, b = (statistics.median(v) for v in rows.values())
    print(f"device path {a / b:.1f}x faster per batch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
