"""Training speed, side by side in one process, on the same data, model, batch size, crop size and
optimiser (AdamW) and loss (fastseg's default, ce+dice):

(a) a naive plain PyTorch loop over pre-loaded host tensors (fp32, contiguous NCHW);
(c) a tuned plain PyTorch loop: the same tricks as fastseg (channels_last, bf16 autocast on CPU with
    depthwise convolutions in fp32 / AMP on GPU, tensors pre-loaded on the device, in-place normalisation);
(b0) fastseg's fastai loop in fp32 (what main trained with on CPU before --precision);
(b) fastseg's fastai loop with ``--precision auto`` (or ``--precision``), as ``fastseg fit`` runs it;
(bf) (b) on fastai's per-item data path: what the device data path is worth.

``--data-path device`` (``auto``: on CUDA when ``choose_data_path`` allows) feeds (b) and (c) from the
device data path (``fastseg.train.device_data``: crops and flips cut on the GPU in one gather) instead of
fastai's per-item path and (c)'s per-item crops of device tensors. ``--bs auto`` resolves the batch once
with fastseg's ``--bs auto`` rule (on CUDA: the best measured throughput) and uses it for every loop.
``--loops`` picks the rows (default a,c,b0,b). Each row also gives its model TFLOP/s: the FLOPs of one
forward+backward per image (torch's FlopCounterMode) x img/s, against the card's dense bf16 peak.

Every loop runs once per round, ``--rounds`` times, interleaved (a, c, b0, b, a, c, ...), so load from
other processes drifts into all of them; the table gives medians and the ratios are medians of the
per-round ratios. Steady state: the first training batch of every round is a warm-up and not counted;
validation (which the plain loops do not do) is timed apart and not part of the training img/s.
Bars: (b)/(b0) >= 1.35 and (b)/(c) >= 0.97 on a CPU; (b)/(c) >= 0.95 on a GPU.

Data: the ISBI 2012 membrane set (../shared/data/isbi2012-membrane) when present, else 30
generated 512x512 images with 0/255 masks (``--data DIR`` picks any fastseg data folder).

    PYTHONPATH=. python benchmarks/train_speed.py --quick    # sanity check, ~2 min on 2 cores
    PYTHONPATH=. python benchmarks/train_speed.py            # crop 256, bs 8, 3 rounds of 2 epochs
    PYTHONPATH=. python benchmarks/train_speed.py --rounds 5 --epochs 3   # longer, steadier
    PYTHONPATH=. python benchmarks/train_speed.py --bs auto --loops c,b,bf   # a GPU: what the device data gives
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
    from fastseg.train.loaders import _open_image
    from fastseg.data.dataset import read_mask

    lut = np.asarray(spec.lut, dtype=np.uint8)
    xs = torch.stack([torch.from_numpy(np.array(_open_image(s.image))).permute(2, 0, 1) for s in spec.train])
    ys = torch.stack([torch.from_numpy(lut[read_mask(s.mask)]) for s in spec.train])
    return xs, ys


MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as fastseg normalises
STD = (0.229, 0.224, 0.225)


def random_crops(xs, ys, size, bs, gen):
    """``bs`` random crops of ``size`` (images and masks), flipped left-right together half the time."""
    n, _, h, w = xs.shape
    idx = torch.randint(n, (bs,), generator=gen)
    top = torch.randint(h - size + 1, (bs,), generator=gen)
    left = torch.randint(w - size + 1, (bs,), generator=gen)
    xb = torch.stack([xs[i, :, t:t + size, l:l + size] for i, t, l in zip(idx, top, left)])
    yb = torch.stack([ys[i, t:t + size, l:l + size] for i, t, l in zip(idx, top, left)])
    if torch.rand(1, generator=gen) < 0.5:
        xb, yb = xb.flip(-1), yb.flip(-1)
    return xb, yb


def plain_batch(xs, ys, size, bs, gen, device):
    """(a): crops from host tensors, copied to the device, normalised out of place (contiguous NCHW)."""
    xb, yb = random_crops(xs, ys, size, bs, gen)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    return (xb.to(device, non_blocking=True).float() - mean) / std, yb.to(device, non_blocking=True).long()


def tuned_batch(xs, ys, size, bs, gen, device):
    """(c): crops from tensors already on the device, normalised in place straight into channels_last."""
    xb, yb = random_crops(xs, ys, size, bs, gen)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    shift = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) / std
    xb = xb.to(torch.float32, memory_format=torch.channels_last).mul_(1 / (255 * std)).sub_(shift)
    return xb, yb.long()


def loop_round(model, opt, loss_fn, next_batch, steps, device, amp=None, scaler=None) -> Phases:
    """``steps`` + 1 training steps (the first is a warm-up): batch, forward (under ``amp`` autocast if
    given, depthwise convolutions in fp32 on CPU as fastseg does), loss in fp32, backward (through
    ``scaler`` if given), AdamW."""
    from contextlib import nullcontext

    from fastseg.device import Fp32GroupedConvs

    model.train()
    ph = Phases()
    for step in range(steps + 1):
        t0 = time.perf_counter()
        xb, yb = next_batch()
        _sync(device)
        t1 = time.perf_counter()
        grouped = Fp32GroupedConvs(model) if amp is not None and device.type == "cpu" else nullcontext()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None), grouped:
            pred = model(xb)
        loss = loss_fn(pred.float(), yb)
        _sync(device)
        t2 = time.perf_counter()
        (scaler.scale(loss) if scaler else loss).backward()
        _sync(device)
        t3 = time.perf_counter()
        scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()
        opt.zero_grad(set_to_none=True)
        loss.item()  # fastai's recorder reads the loss every batch too
        _sync(device)
        t4 = time.perf_counter()
        if step:  # step 0 is the warm-up
            ph.add({"data": t1 - t0, "forward": t2 - t1, "backward": t3 - t2, "optimizer": t4 - t3}, len(xb))
    return ph


def tuned_precision(device: torch.device):
    """(c)'s mixed precision: bf16 autocast on CPU; AMP on CUDA (bf16 where supported, else fp16 + scaler)."""
    if device.type != "cuda":
        return torch.bfloat16, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


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


# --------------------------------------------------------------------------- model FLOPs and the card's peak

DENSE_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # datasheet dense bf16 (SXM; /work/.library/device/H200.md)


def flops_per_image(encoder: str, n_classes: int, size: int, device: torch.device) -> float:
    """FLOPs of one training image: a forward and backward pass at ``size`` (torch's FlopCounterMode, bs 2 / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    from fastseg.model import build_model

    model = build_model(encoder, n_classes, "none")[0].to(device).train()
    x = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x).float().mean().backward()
    return counter.get_total_flops() / 2


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The card's datasheet dense bf16 TFLOP/s and, on CUDA, a measured 8192^3 bf16 matrix product's."""
    if device.type != "cuda":
        return None, "CPU: no bf16 peak to compare with"
    name = torch.cuda.get_device_name(device)
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    measured = 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1000) / 1e12
    sheet = next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)
    return sheet or measured, (f"{name}: datasheet dense bf16 {sheet or 'unknown'} TFLOP/s, "
                               f"an 8192^3 bf16 matmul here {measured:.0f} TFLOP/s")


# --------------------------------------------------------------------------- main

def fmt_row(name, img_s: float, ph: Phases, mem, flops: float, peak: float | None) -> str:
    """A table row: ``img_s`` (the median of the rounds), then ms per batch per phase over all rounds,
    then the model's TFLOP/s at that rate (and its share of ``peak``)."""
    per = {k: 1000 * v / max(ph.batches, 1) for k, v in ph.total.items()}
    tflops = img_s * flops / 1e12
    share = f" ({tflops / peak:.1%})" if peak else ""
    return (f"| {name} | {img_s:.2f} | " + " | ".join(f"{per[k]:.0f}" for k in Phases.NAMES)
            + f" | {mem:.0f} | {tflops:.2f}{share} |")


def merged(runs) -> Phases:
    out = Phases()
    for ph in runs:
        for k in Phases.NAMES:
            out.total[k] += ph.total[k]
        out.batches += ph.batches
        out.images += ph.images
    return out


LOOPS = ("a", "c", "b0", "b", "bf")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="fastseg data folder [default: ISBI if present, else generated 512x512]")
    p.add_argument("--size", type=int, default=256, help="crop side [256]")
    p.add_argument("--bs", default="8", help="batch size, or auto (fastseg's --bs auto rule, once for all loops) [8]")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every loop [3]")
    p.add_argument("--epochs", type=int, default=2, help="fastseg epochs per round [2]")
    p.add_argument("--steps", type=int, default=0, help="plain loops' counted steps per round [0: as many as fastseg's]")
    p.add_argument("--precision", default="auto", help="fastseg --precision of row (b) [auto]; (b0) is always fp32")
    p.add_argument("--cache", default="auto", help="fastseg --cache [auto]")
    p.add_argument("--num-workers", default="auto", help="fastseg --num-workers [auto]")
    p.add_argument("--data-path", default="auto", choices=["auto", "fastai", "device"],
                   help="(b) and (c)'s batches: auto = the device data path on CUDA where it applies [auto]")
    p.add_argument("--loops", default="a,c,b0,b", help=f"rows to run, of {','.join(LOOPS)} [a,c,b0,b]")
    p.add_argument("--compile", action="store_true", help="also torch.compile every model")
    p.add_argument("--quick", action="store_true", help="a short sanity run: 2 rounds of 1 epoch")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 2, 1
    args.loops = [t.strip() for t in args.loops.split(",") if t.strip()]
    if not set(args.loops) <= set(LOOPS) or not args.loops:
        p.error(f"--loops takes some of {','.join(LOOPS)}, got {','.join(args.loops)}")
    return args


def fastseg_runner(cfg, work: Path, epochs: int, data_path: str | None = None):
    """A fastseg session (data, plan and learner as `fastseg fit` builds them) and a function running one
    round: ``fit_one_cycle`` on the plan's training batches. ``data_path``: instead of the plan's choice."""
    import dataclasses

    from fastseg.train.loop import phase_loaders, prepare

    said = []
    session = prepare(cfg, said.append, workdir=work)
    if data_path is not None:
        session.plan = dataclasses.replace(session.plan, data_path=data_path)
    learn = session.learn
    train_dls = phase_loaders(session).get(None)  # the device data path's, else None: the learner's own
    timer = make_timer_cb()()
    learn.add_cb(timer)

    def run():
        timer.ph, timer.valid_s = Phases(), 0.0
        own, learn.dls = learn.dls, train_dls or learn.dls
        try:  # with fastai's progress bar and epoch table, as `fastseg fit` runs
            learn.fit_one_cycle(epochs, lr_max=1e-3)
        finally:
            learn.dls = own
        return timer.ph, timer.valid_s / epochs
    return session, run, said


def device_batches(dls, device):
    """(c)'s batches from the device data path: endless epochs of its training loader, as plain tensors."""
    while True:
        for x, y in dls.train:
            yield x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)


def plain_runner(cfg, spec, device, steps, gen, tuned: bool, compile: bool, dls=None):
    """(a) naive or (c) tuned plain PyTorch loop: same model, optimiser settings and crops as fastseg.
    ``dls``: (c) takes its batches from these device-data DataLoaders instead of its own crops."""
    from functools import partial

    from fastseg.train.losses import make_loss
    from fastseg.model import build_model

    model, _ = build_model(cfg.encoder, spec.n_classes, "none")
    model = model.to(device)
    amp, scaler = tuned_precision(device) if tuned else (None, None)
    if dls is not None:
        batch = partial(next, device_batches(dls, device))
    else:
        xs, ys = load_tensors(spec)
        if tuned:
            xs, ys = xs.to(device), ys.to(device)
        batch = partial(tuned_batch if tuned else plain_batch, xs, ys, cfg.size, cfg.bs, gen, device)
    if tuned:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01,
                            foreach=True)
    loss_fn = make_loss(cfg.loss, spec.n_classes, cfg.class_weights)  # fastseg's loss: the same work per step
    return lambda: (loop_round(model, opt, loss_fn, batch, steps, device, amp, scaler), 0.0)


def build_loops(args, cfg, spec, device, tmp: Path):
    """Every requested row's round function, the reference fastseg session, and why its data path."""
    from fastseg.train.device_data import CropStore

    forced = {"auto": None, "fastai": "fastai", "device": "device"}[args.data_path]
    session, run_b, said = fastseg_runner(cfg, tmp / "b", args.epochs, forced)
    plan, getters = session.plan, session.getters
    cfg = cfg.replace(bs=plan.bs)  # --bs auto resolved once, by fastseg's plan, for every loop
    store = None if plan.data_path == "fastai" else \
        CropStore.from_spec(spec, device, plan.data_path, (getters.x, getters.y))
    per_epoch = len(session.learn.dls.train)
    steps = args.steps or per_epoch * args.epochs - 1
    gen = torch.Generator().manual_seed(args.seed)
    amp = str(tuned_precision(device)[0]).split(".")[-1]
    data = "device data path" if store is not None else "per-item crops of pre-loaded tensors"
    make = {
        "a": ("(a) plain PyTorch, naive (fp32, contiguous NCHW)",
              lambda: plain_runner(cfg, spec, device, steps, gen, tuned=False, compile=args.compile)),
        "c": (f"(c) plain PyTorch, tuned (channels_last, {amp} autocast, {data})",
              lambda: plain_runner(cfg, spec, device, steps, gen, True, args.compile,
                                   None if store is None else device_dataloaders_of(store, cfg, plan.aug))),
        "b0": ("(b0) fastseg fit, --precision fp32 (today's main on CPU)",
               lambda: fastseg_runner(cfg.replace(precision="fp32"), tmp / "b0", args.epochs, forced)[1]),
        "b": (f"(b) fastseg fit, --precision {args.precision} -> {plan.precision}, data path {plan.data_path}",
              lambda: run_b),
        "bf": ("(bf) fastseg fit on fastai's per-item data path",
               lambda: fastseg_runner(cfg, tmp / "bf", args.epochs, "fastai")[1]),
    }
    loops = {make[t][0]: make[t][1]() for t in args.loops}
    return loops, session, said


def device_dataloaders_of(store, cfg, aug):
    from fastseg.train.device_data import device_dataloaders

    return device_dataloaders(store, cfg.size, cfg.bs, aug, seed=cfg.seed)


def main(argv=None):
    args = parse_args(argv)
    from fastseg.config import FitConfig
    from fastseg.data.dataset import discover

    tmp = tempfile.TemporaryDirectory(prefix="fastseg-bench-")
    if args.data:
        data, source = Path(args.data), args.data
    elif (ISBI / "images").is_dir():
        data, source = ISBI, "ISBI 2012 membrane (30 x 512x512 grey)"
    else:
        data, source = generated_data(Path(tmp.name) / "gen"), "generated (30 x 512x512 grey, 0/255 masks)"
    nw = args.num_workers if args.num_workers == "auto" else int(args.num_workers)
    cfg = FitConfig(data=str(data), bs=args.bs if args.bs == "auto" else int(args.bs), size=args.size, weights="none", lr=1e-3, epochs=args.epochs,
                    seed=args.seed, cache=args.cache, num_workers=nw, compile=args.compile, precision=args.precision,
                    export=str(Path(tmp.name) / "m.pkl"))
    spec = discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loops, session, said = build_loops(args, cfg, spec, device, Path(tmp.name))
    plan, bs = session.plan, session.plan.bs
    flops = flops_per_image(cfg.encoder, spec.n_classes, args.size, device)
    peak, peak_why = peak_tflops(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"data: {source}; {len(spec.train)} train / {len(spec.valid)} valid; crop {args.size}, bs {bs} "
          f"({plan.why['bs']}); "
          f"device {device}, torch threads {torch.get_num_threads()}, cpu cores {os.cpu_count()}, "
          f"load average at start {load:.1f}", flush=True)
    print("\n".join(f"plan: {line}" for line in plan.table().splitlines()), flush=True)
    print(f"model: {flops / 1e9:.1f} GFLOP per training image (forward + backward); {peak_why}", flush=True)
    runs = {name: [] for name in loops}
    mem = dict.fromkeys(loops, 0.0)
    valid = {name: [] for name in loops}
    for r in range(args.rounds):
        for name, run in loops.items():
            with PeakRSS(device) as m:
                ph, valid_s = run()
            runs[name].append(ph)
            mem[name] = max(mem[name], m.peak)
            valid[name].append(valid_s)
            print(f"round {r + 1}: {name.split()[0]} {ph.img_s:.2f} img/s over {ph.batches} steps", flush=True)
    report(runs, mem, valid, device, flops, peak)
    tmp.cleanup()
    return 0


def report(runs: dict, mem: dict, valid: dict, device, flops: float, peak: float | None) -> None:
    """The one results table, then the per-round ratios behind the bars (medians of interleaved rounds)."""
    mem_unit = "peak CUDA MiB" if device.type == "cuda" else "peak RSS MiB"
    print()
    print(f"| loop | train img/s (median) | data ms | forward ms | backward ms | optimizer ms | callbacks ms | {mem_unit} "
          f"| model TFLOP/s{' (of peak)' if peak else ''} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    by_tag = {}
    for name, phs in runs.items():
        print(fmt_row(name, statistics.median(ph.img_s for ph in phs), merged(phs), mem[name], flops, peak))
        by_tag[name.split()[0]] = phs
    print()

    def ratio(top, bottom, goal=None):
        if top not in by_tag or bottom not in by_tag:
            return
        per = [t.img_s / b.img_s for t, b in zip(by_tag[top], by_tag[bottom])]
        med = statistics.median(per)
        verdict = "" if goal is None else f" (goal >= {goal}: {'PASS' if med >= goal else 'FAIL'})"
        print(f"{top}/{bottom}: median {med:.3f}{verdict}; per round " + ", ".join(f"{x:.3f}" for x in per))

    ratio("(b)", "(b0)", None if device.type == "cuda" else 1.35)
    ratio("(b)", "(c)", 0.95 if device.type == "cuda" else 0.97)
    ratio("(b)", "(a)")
    ratio("(c)", "(a)")
    ratio("(b)", "(bf)")
    vb = [v for name, v in valid.items() if name.startswith("(b)")]
    if vb:
        print(f"(b) validation {statistics.median(vb[0]):.2f} s/epoch (not in img/s)")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at end {load:.1f} on {os.cpu_count()} cores"
          + (" (busy machine: absolute numbers are noisy; the ratio of interleaved rounds is the result)"
             if load > (os.cpu_count() or 1) * 0.75 else ""))


if __name__ == "__main__":
    sys.exit(main())
