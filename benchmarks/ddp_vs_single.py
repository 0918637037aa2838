"""One process vs. N DDP processes (torchrun, CPU/gloo or GPUs/nccl), same data, epochs and effective batch.

Runs ``python -m fastseg fit`` twice, side by side in one invocation: once in a single process with
batch ``bs``, once under ``torchrun --nproc_per_node N`` with ``bs / N`` per process (the same
effective batch and learning rate, so the two runs are comparable), and prints mIoU, Dice, pixel
accuracy and wall time of each, plus their ratios. Exports go to a temporary folder.

    python benchmarks/ddp_vs_single.py --data data --epochs 8 --bs 8 --nproc 2
    python benchmarks/ddp_vs_single.py --data ../shared/data/isbi2012-membrane --size 256 --epochs 4

On a CPU, each DDP process gets 1 thread (torchrun's default) and the single process all cores,
so both use the same number of cores.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCORE = re.compile(r"valid mIoU ([\d.]+)\s+Dice ([\d.]+)\s+pixel accuracy ([\d.]+)")


def run(cmd: list[str], env: dict) -> dict:
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode:
        sys.exit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-3000:]}")
    miou, dice, acc = map(float, SCORE.search(res.stdout).groups())
    return {"miou": miou, "dice": dice, "pixel_accuracy": acc, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--bs", type=int, default=8, help="effective batch size (single process: all of it)")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--lr", default="1e-3")
    ap.add_argument("--size", type=int)
    ap.add_argument("--weights", default="none")
    args = ap.parse_args()
    if args.bs % args.nproc:
        sys.exit(f"--bs {args.bs} is not divisible by --nproc {args.nproc}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    common = ["fit", "--data", str(Path(args.data).resolve()), "--epochs", str(args.epochs), "--lr", args.lr,
              "--weights", args.weights, *(["--size", str(args.size)] if args.size else [])]
    with tempfile.TemporaryDirectory() as tmp:
        single = run([sys.executable, "-m", "fastseg", *common, "--bs", str(args.bs),
                      "--export", f"{tmp}/single.pkl"], env)
        ddp = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
                   "-m", "fastseg", *common, "--bs", str(args.bs // args.nproc), "--export", f"{tmp}/ddp.pkl"],
                  {**env, "OMP_NUM_THREADS": "1"})
    print(f"data {args.data}, {args.epochs} epochs, lr {args.lr}, weights {args.weights}, effective batch {args.bs}")
    print(f"{'':<22}{'mIoU':>8}{'Dice':>8}{'pix acc':>9}{'wall s':>9}")
    for name, r in ((f"1 process (bs {args.bs})", single), (f"{args.nproc} DDP (bs {args.bs // args.nproc} each)", ddp)):
        print(f"{name:<22}{r['miou']:>8.4f}{r['dice']:>8.4f}{r['pixel_accuracy']:>9.4f}{r['wall_s']:>9.1f}")
    print(f"DDP / single: mIoU {ddp['miou'] / single['miou']:.3f}, wall time {ddp['wall_s'] / single['wall_s']:.2f}")


if __name__ == "__main__":
    main()
