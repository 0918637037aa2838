"""Training speed, side by side: (a) a plain PyTorch loop over pre-loaded tensors (the ceiling)
versus (b) fastseg's fastai training loop, in one process, on the same data, model, batch size,
crop size and optimiser (AdamW).

The two are measured alternately, ``--rounds`` times (a, b, a, b, ...), so load from other
processes on a shared machine drifts into both equally; the report gives the median of each.
Steady state: the first training batch of every round is a warm-up and not counted; validation
(which the plain loop does not do) is timed separately and not part of the training img/s.

Data: the ISBI 2012 membrane set (../shared/data/isbi2012-membrane) when present, else 30
generated 512x512 images with 0/255 masks (``--data DIR`` picks any fastseg data folder).

Example (the README's table; < 4 minutes on 2 CPU cores):
    PYTHONPATH=. python benchmarks/train_speed.py
    PYTHONPATH=. python benchmarks/train_speed.py --rounds 5 --epochs 3 --size 256 --bs 8   # longer
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012-membrane"


# --------------------------------------------------------------------------- measuring helpers

class PeakRSS:
    """Peak resident memory (MiB) while the block runs: /proc sampling on CPU, the allocator on CUDA."""

    def __init__(self, device: torch.device, every: float = 0.005):
        self.device, self.every, self.peak, self._stop = device, every, 0.0, threading.Event()

    @staticmethod
    def rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:  # not Linux: fall back to the lifetime peak
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Phases:
    """Seconds per batch spent in each phase, summed over the counted (post-warm-up) batches."""

    NAMES = ("data", "forward", "backward", "optimizer", "callbacks")

    def __init__(self):
        self.total = dict.fromkeys(self.NAMES, 0.0)
        self.batches = 0
        self.images = 0

    def add(self, times: dict, n_images: int):
        for k, v in times.items():
            self.total[k] += v
        self.batches += 1
        self.images += n_images

    @property
    def seconds(self) -> float:
        return sum(self.total.values())

    @property
    def img_s(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


# --------------------------------------------------------------------------- (a) plain PyTorch

def load_tensors(spec):
    """Every training image and mask decoded once: uint8 N x 3 x H x W and N x H x W class indices."""
    from fastseg.loaders import _open_image
    from fastseg.data import read_mask

    lut = np.asarray(spec.lut, dtype=np.uint8)
    xs = torch.stack([torch.from_numpy(np.array(_open_image(s.image))).permute(2, 0, 1) for s in spec.train])
    ys = torch.stack([torch.from_numpy(lut[read_mask(s.mask)]) for s in spec.train])
    return xs, ys


def plain_round(model, opt, xs, ys, size, bs, steps, device, gen) -> Phases:
    """``steps`` + 1 training steps (the first is a warm-up): random crops, flips, forward, backward, AdamW."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1) * 255
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    model.train()
    ph = Phases()
    n, _, h, w = xs.shape
    for step in range(steps + 1):
        t0 = time.perf_counter()
        idx = torch.randint(n, (bs,), generator=gen)
        top = torch.randint(h - size + 1, (bs,), generator=gen)
        left = torch.randint(w - size + 1, (bs,), generator=gen)
        xb = torch.stack([xs[i, :, t:t + size, l:l + size] for i, t, l in zip(idx, top, left)])
        yb = torch.stack([ys[i, t:t + size, l:l + size] for i, t, l in zip(idx, top, left)])
        if torch.rand(1, generator=gen) < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        xb = (xb.to(device, non_blocking=True).float() - mean) / std
        yb = yb.to(device, non_blocking=True).long()
        _sync(device)
        t1 = time.perf_counter()
        pred = model(xb)
        loss = loss_fn(pred, yb)
        _sync(device)
        t2 = time.perf_counter()
        loss.backward()
        _sync(device)
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # fastai's recorder reads the loss every batch too
        _sync(device)
        t4 = time.perf_counter()
        if step:  # step 0 is the warm-up
            ph.add({"data": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3}, bs)
    return ph


# --------------------------------------------------------------------------- (b) fastseg / fastai

def make_timer_cb():
    from fastai.callback.core import Callback

    class PhaseTimer(Callback):
        """Times each training batch's phases; runs after every other callback (order 1000)."""

        order = 1000

        def __init__(self):
            self.ph, self.valid_s, self._skip = Phases(), 0.0, True

        def _now(self):
            _sync(self.learn.dls.device or torch.device("cpu"))
            return time.perf_counter()

        def before_fit(self):
            self._skip = True

        def before_train(self):
            self._end = self._now()

        def before_batch(self):
            if self.training:
                self.t = {"start": self._now()}

        def after_pred(self):
            if self.training:
                self.t["pred"] = self._now()

        def before_step(self):
            self.t["bwd"] = self._now()

        def after_step(self):
            self.t["step"] = self._now()

        def after_batch(self):
            if not self.training:
                return
            t, end = self.t, self._now()
            times = {"data": t["start"] - self._end, "forward": t["pred"] - t["start"], "backward": t["bwd"] - t["pred"],
                     "optimizer": t["step"] - t["bwd"], "callbacks": end - t["step"]}
            self._end = end
            if self._skip:  # the round's first batch is the warm-up
                self._skip = False
            else:
                self.ph.add(times, self.xb[0].shape[0])

        def before_validate(self):
            self._v = self._now()

        def after_validate(self):
            self.valid_s += self._now() - self._v

    return PhaseTimer


# --------------------------------------------------------------------------- data

def generated_data(root: Path, n: int = 30, side: int = 512, seed: int = 0) -> Path:
    """``n`` grey 512x512 images of blurred blobs and their 0/255 masks (an ISBI stand-in)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    yy, xx = np.mgrid[:side, :side]
    for i in range(n):
        mask = np.zeros((side, side), bool)
        for _ in range(12):
            cy, cx, r = rng.integers(0, side, 2).tolist() + [int(rng.integers(10, 60))]
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = np.clip(mask * 120 + 60 + rng.normal(0, 25, mask.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return root


# --------------------------------------------------------------------------- main

def fmt_row(name, ph: Phases, mem, extra=""):
    per = {k: 1000 * v / max(ph.batches, 1) for k, v in ph.total.items()}
    return (f"| {name} | {ph.img_s:.2f} | " + " | ".join(f"{per[k]:.0f}" for k in Phases.NAMES)
            + f" | {mem:.0f} |{extra}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="fastseg data folder [default: ISBI if present, else generated 512x512]")
    p.add_argument("--size", type=int, default=256, help="crop side [256]")
    p.add_argument("--bs", type=int, default=8, help="batch size [8]")
    p.add_argument("--rounds", type=int, default=3, help="alternations of (a) and (b) [3]")
    p.add_argument("--epochs", type=int, default=2, help="(b) epochs per round [2]")
    p.add_argument("--steps", type=int, default=0, help="(a) counted steps per round [0: as many as (b) counts]")
    p.add_argument("--cache", default="auto", help="fastseg --cache [auto]")
    p.add_argument("--num-workers", default="auto", help="fastseg --num-workers [auto]")
    p.add_argument("--compile", action="store_true", help="also torch.compile both models")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    from fastseg.config import FitConfig
    from fastseg.data import discover
    from fastseg.model import build_model
    from fastseg.train import build_learner

    tmp = tempfile.TemporaryDirectory(prefix="fastseg-bench-")
    if args.data:
        data, source = Path(args.data), args.data
    elif (ISBI / "images").is_dir():
        data, source = ISBI, "ISBI 2012 membrane (30 x 512x512 grey)"
    else:
        data, source = generated_data(Path(tmp.name) / "gen"), "generated (30 x 512x512 grey, 0/255 masks)"
    nw = args.num_workers if args.num_workers == "auto" else int(args.num_workers)
    cfg = FitConfig(data=str(data), bs=args.bs, size=args.size, weights="none", lr=1e-3, epochs=args.epochs,
                    seed=args.seed, cache=args.cache, num_workers=nw, compile=args.compile,
                    export=str(Path(tmp.name) / "m.pkl"))
    spec = discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    t = time.perf_counter()
    learn, spec, _ = build_learner(cfg, spec=spec, workdir=Path(tmp.name) / "work")
    setup_b = time.perf_counter() - t
    Timer = make_timer_cb()
    timer = Timer()
    learn.add_cb(timer)

    torch.manual_seed(args.seed)
    t = time.perf_counter()
    xs, ys = load_tensors(spec)
    model, _ = build_model(cfg.encoder, spec.n_classes, "none")
    model = model.to(device)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)
    setup_a = time.perf_counter() - t
    gen = torch.Generator().manual_seed(args.seed)
    per_epoch = len(learn.dls.train)
    steps = args.steps or per_epoch * args.epochs - 1

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data: {source}; {len(spec.train)} train / {len(spec.valid)} valid; crop {args.size}, bs {args.bs}; "
          f"device {device}, torch threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}, "
          f"load average at start {load:.1f}", flush=True)
    print(f"fastseg: cache {learn.dls.fastseg_cache}, num_workers {learn.dls.train.fake_l.num_workers}, "
          f"{per_epoch} batches/epoch; compile {args.compile}", flush=True)
    a_runs, b_runs, a_mem, b_mem, valid_s = [], [], [], [], []
    for r in range(args.rounds):
        with PeakRSS(device) as m:
            ph = plain_round(model, opt, xs, ys, args.size, args.bs, steps, device, gen)
        a_runs.append(ph), a_mem.append(m.peak)
        print(f"round {r + 1}: (a) plain   {ph.img_s:.2f} img/s over {ph.batches} steps", flush=True)
        timer.ph, timer.valid_s = Phases(), 0.0
        with PeakRSS(device) as m:  # with fastai's progress bar and epoch table, as `fastseg fit` runs
            learn.fit_one_cycle(args.epochs, lr_max=1e-3)
        b_runs.append(timer.ph), b_mem.append(m.peak), valid_s.append(timer.valid_s / args.epochs)
        print(f"round {r + 1}: (b) fastseg {timer.ph.img_s:.2f} img/s over {timer.ph.batches} steps "
              f"(ratio {timer.ph.img_s / ph.img_s:.3f})", flush=True)

    ratios = [b.img_s / a.img_s for a, b in zip(a_runs, b_runs)]
    med_a = statistics.median(x.img_s for x in a_runs)
    med_b = statistics.median(x.img_s for x in b_runs)

    def merged(runs):
        out = Phases()
        for ph in runs:
            for k in Phases.NAMES:
                out.total[k] += ph.total[k]
            out.batches += ph.batches
            out.images += ph.images
        return out

    mem_unit = "peak CUDA MiB" if device.type == "cuda" else "peak RSS MiB"
    print()
    print(f"| loop | train img/s | data ms | forward ms | backward ms | optimizer ms | callbacks ms | {mem_unit} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(fmt_row("(a) plain PyTorch, pre-loaded tensors", merged(a_runs), max(a_mem)))
    print(fmt_row("(b) fastseg fit (fastai)", merged(b_runs), max(b_mem)))
    print()
    print(f"median img/s: (a) {med_a:.2f}, (b) {med_b:.2f}; per-round ratios (b)/(a): "
          + ", ".join(f"{x:.3f}" for x in ratios) + f"; median ratio {statistics.median(ratios):.3f}")
    print(f"setup: (a) {setup_a:.1f} s (decode to tensors + model), (b) {setup_b:.1f} s (discover, cache, learner); "
          f"(b) validation {statistics.median(valid_s):.2f} s/epoch (not in img/s)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at end {load:.1f} on {os.cpu_count()} cores"
          + (" (busy machine: absolute numbers are noisy; the ratio of interleaved rounds is the result)"
             if load > (os.cpu_count() or 1) * 0.75 else ""))
    tmp.cleanup()
    return statistics.median(ratios)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
