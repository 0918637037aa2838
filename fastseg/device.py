"""Device and speed settings for training: DataLoader workers, the in-RAM cache decision, ``--bs auto``,
cudnn autotuning, channels_last, torch.compile, the optimiser implementation and the training precision.

Every choice here is a function of the machine (cores, RAM, device) and the config, returned to the
caller (which reports it) rather than printed. ``tune_learner`` is the one call ``build_learner``
makes into this module once the ``Learner`` exists.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from functools import partial
from typing import Callable

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.optimizer import OptimWrapper

from .config import CACHE_CHOICES, DEVICE_HINT
from .errors import ConfigError
from .model import input_channels

__all__ = [
    "CACHE_CHOICES", "CompileModel", "available_ram", "cpu_cores", "resolve_num_workers", "resolve_cache",
    "probe_step", "auto_batch_size", "pick_batch_size", "still_rising", "measure_batch_sizes", "time_batch_sizes",
    "fast_adamw", "tune_learner", "training_device",
    "bf16_supported", "decide_precision", "time_precisions", "CpuBf16", "Fp32GroupedConvs", "precision_callbacks",
    "apply_precision", "resolve_precision", "resolve_device", "StepProbe", "DEVICE_HINT",
]

CACHE_RAM_SHARE = 0.25  # "auto" caches when the decoded set needs at most this share of free RAM
CACHE_RAM_LIMIT = 0.8  # "ram" is refused beyond this share: the rest is for the model, batches, workers and the OS
CPU_BS_CAP = 16  # on CPU, per-image throughput is flat beyond ~8; bigger batches only mean fewer steps
GPU_BS_CAP = 256  # beyond this, one-cycle schedules with small data sets get too few steps per epoch
MEMORY_SHARE = 0.8  # --bs auto leaves this share of free memory for one training step; the rest is headroom
SHORT_EPOCH_BATCHES = 64  # cached epochs shorter than this load in-process on CUDA (measured faster at 3 and 60)


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``--device``: ``auto`` is CUDA, then Apple MPS, then the CPU; a named device must exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; valid choices: {DEVICE_HINT}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"device {name}: no CUDA GPU is available here (use --device cpu or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {name}: Apple MPS is not available here (use --device cpu or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; valid choices: {DEVICE_HINT}")
    return device


def training_device() -> torch.device:
    """The device ``--device auto`` trains on."""
    return resolve_device("auto")


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def available_ram() -> int:
    """Bytes of RAM available to new allocations (0 when the OS does not say)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 0


def resolve_num_workers(value: int | str, device: torch.device, cores: int | None = None, cached: bool = False,
                        batches: int | None = None) -> int:
    """``auto``: no worker processes on CPU with <= 4 cores (they would take cores from the model, and the
    RAM cache makes per-batch data work small). On CUDA, one worker per core but one, at most 8, except
    when the decoded set is cached in RAM (``cached``) and an epoch has fewer than ``SHORT_EPOCH_BATCHES``
    training ``batches``: fastai starts its worker processes anew every epoch, and that start-up then
    costs more than the crop-and-copy they take off the main process. Measured on an H200 host (16 cores,
    benchmarks/train_speed.py, crops of 256, bs 8, cached): ISBI, 3 batches per epoch: 155 img/s
    in-process, 113 with 2 workers, 66 with 8; ISBI x20, 60 batches per epoch: 161 in-process, 140 with 8."""
    if value != "auto":
        return int(value)
    cores = cores or cpu_cores()
    if device.type == "cuda":
        if cached and batches is not None and batches < SHORT_EPOCH_BATCHES:
            return 0
        return max(0, min(8, cores - 1))
    return 0 if cores <= 4 else min(4, cores // 4)


def resolve_cache(mode: str, needed_bytes: int, free_bytes: int | None = None, processes: int = 1) -> bool:
    """Whether to keep decoded images and masks in RAM: ``none`` no; ``auto`` when the set needs at most
    ``CACHE_RAM_SHARE`` of the available RAM; ``ram`` yes, unless it needs more than ``CACHE_RAM_LIMIT`` of it.

    Each of the ``processes`` training processes on this machine (DDP ranks) caches the whole set, so it
    counts that many times. ``ram`` that cannot fit raises ``ConfigError`` rather than falling back: it was
    asked for explicitly, and filling RAM ends with the OS killing the run (or swapping it to a crawl) mid-fit.
    When the OS does not say how much RAM is free, ``ram`` is trusted and ``auto`` does not cache."""
    if mode not in CACHE_CHOICES:
        raise ConfigError(f"cache must be one of {', '.join(CACHE_CHOICES)}, got {mode!r}")
    if mode == "none":
        return False
    free = available_ram() if free_bytes is None else free_bytes
    total = needed_bytes * max(1, processes)
    if mode == "auto":
        return total <= free * CACHE_RAM_SHARE
    if free and total > free * CACHE_RAM_LIMIT:
        copies = f" ({processes} processes x {needed_bytes / 2**30:.1f} GiB)" if processes > 1 else ""
        raise ConfigError(f"--cache ram: the decoded images need {total / 2**30:.1f} GiB of RAM{copies}, but only "
                          f"{free / 2**30:.1f} GiB is available (the cache may take {CACHE_RAM_LIMIT:.0%}); "
                          "use --cache auto or --cache none")
    return True


class _SavedBytes:
    """Counts the bytes autograd saves for backward (the activations) during a forward pass."""

    def __init__(self):
        self.total = 0

    def pack(self, t: torch.Tensor):
        self.total += t.numel() * t.element_size()
        return t

    @staticmethod
    def unpack(t: torch.Tensor):
        return t


def probe_step(model: torch.nn.Module, bs: int, size: int, device: torch.device) -> int:
    """One forward/backward at ``bs`` x channels x ``size`` x ``size``; returns the bytes saved for backward.

    Raises ``torch.OutOfMemoryError`` when it does not fit (CUDA)."""
    model.train()
    saved = _SavedBytes()
    x = torch.randn(bs, input_channels(model), size, size, device=device)
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                out = model(x)
        out.float().mean().backward()
    finally:
        model.zero_grad(set_to_none=True)
        del x
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return saved.total


BS_TIE = 0.03  # --bs auto on CUDA: a smaller batch within this share of the best measured img/s wins (as fast,
# and more optimiser steps per epoch); a doubling that gains no more than this ends the search
BS_TIMED_STEPS = 3  # timed training steps per candidate batch, after one warm-up (cudnn autotuning); the fastest counts


def pick_batch_size(seconds: dict[int, float]) -> tuple[int, str]:
    """The batch size with the best throughput among measured ``{bs: seconds per training step}`` (the
    smallest within ``BS_TIE`` of the best), and why. Pure: ``time_batch_sizes`` measures."""
    rates = {bs: bs / s for bs, s in sorted(seconds.items())}
    best = max(rates.values())
    bs = min(b for b, r in rates.items() if r >= best * (1 - BS_TIE))
    said = ", ".join(f"{b}: {r:.0f}" for b, r in rates.items())
    return bs, (f"best measured training throughput on the GPU, img/s by batch size {said}; "
                f"the smallest within {BS_TIE:.0%} of the best")


def still_rising(seconds: dict[int, float]) -> bool:
    """Whether to measure the next doubling: while fewer than two batch sizes are measured, or the last
    doubling raised the throughput by more than ``BS_TIE``."""
    if len(seconds) < 2:
        return True
    (b0, s0), (b1, s1) = sorted(seconds.items())[-2:]
    return b1 / s1 > (1 + BS_TIE) * b0 / s0


def _input_channels(model: torch.nn.Module) -> int:
    return next(m.in_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def _step_seconds(model: torch.nn.Module, opt, bs: int, size: int, dtype: torch.dtype) -> float:
    """One timed CUDA training step as fastseg trains: channels_last input, autocast, fp32 loss, AdamW."""
    import time

    device = next(model.parameters()).device
    x = torch.randn(bs, _input_channels(model), size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(bs, size, size, dtype=torch.long, device=device)
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    with torch.autocast("cuda", dtype=dtype):
        out = model(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t


def measure_batch_sizes(step_seconds: Callable[[int], float], limit: int) -> dict[int, float]:
    """``{bs: step_seconds(bs)}`` for batches 2, 4, 8, ... up to ``limit``, until one does not fit (CUDA
    out of memory) or the throughput stops rising (``still_rising``); batch 1 only when 2 does not fit."""
    seconds: dict[int, float] = {}
    for bs in [b for b in (2 ** i for i in range(1, 16)) if b <= limit] or [1]:
        if not still_rising(seconds):
            break
        try:
            seconds[bs] = step_seconds(bs)
        except torch.OutOfMemoryError:
            break
    if not seconds and limit >= 2:  # not even 2 images: one?
        try:
            seconds[1] = step_seconds(1)
        except torch.OutOfMemoryError:
            pass
    return seconds


def time_batch_sizes(model: torch.nn.Module, size: int, device: torch.device, limit: int,
                     steps: int = BS_TIMED_STEPS) -> dict[int, float]:
    """``measure_batch_sizes`` with real CUDA training steps of ``model`` (a probe: its weights change) as
    fastseg trains: channels_last, bf16 (else fp16) autocast, cudnn autotuning, AdamW. Each batch size:
    one warm-up step (cudnn picks its kernels for the shape), then the fastest of ``steps``."""
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, foreach=True)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def step_seconds(bs: int) -> float:
        _step_seconds(model, opt, bs, size, dtype)
        return min(_step_seconds(model, opt, bs, size, dtype) for _ in range(steps))

    autotune, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    try:
        return measure_batch_sizes(step_seconds, limit)
    finally:
        torch.backends.cudnn.benchmark = autotune
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def auto_batch_size(model: torch.nn.Module, size: int, device: torch.device, n_train: int,
                    free_bytes: int | None = None) -> tuple[int, str]:
    """The training batch size at ``size``, and how it was found.

    CUDA: the batch with the best measured throughput (``time_batch_sizes``, ``pick_batch_size``): a
    larger batch only pays while the GPU is not yet busy, and costs optimiser steps per epoch.
    CPU: out-of-memory is the OS killing the process, never an exception, so measure the bytes saved
    for backward at batch 1 and 2 (the difference is one image's activations), and take the largest power of two whose activations fit
    ``MEMORY_SHARE`` of free RAM, capped at ``CPU_BS_CAP``; then check it with one real step.
    Never more than the training set (a batch larger than the data gives no full batches).
    """
    model = model.to(device)
    limit = max(1, n_train)
    if device.type == "cuda":
        seconds = time_batch_sizes(model, size, device, min(GPU_BS_CAP, limit))
        if not seconds:
            raise ConfigError(f"size {size}: one image does not fit in GPU memory (lower --size)")
        return pick_batch_size(seconds)
    one, two = probe_step(model, 1, size, device), probe_step(model, 2, size, device)
    per_image, fixed = max(two - one, 1), max(2 * one - two, 0)  # saved weights count once, activations per image
    free = available_ram() if free_bytes is None else free_bytes
    fits = int((free * MEMORY_SHARE - fixed) // per_image)
    cap = min(CPU_BS_CAP, limit, max(1, fits))
    bs = 1 << (cap.bit_length() - 1)  # largest power of two <= cap
    probe_step(model, bs, size, device)  # the chosen size really runs
    why = (f"CPU: {per_image / 2**20:.0f} MiB of activations per image, {free / 2**30:.1f} GiB RAM free; "
           f"capped at {min(CPU_BS_CAP, limit)} (CPU throughput per image is flat beyond ~8)")
    return bs, why


fast_adamw = partial(OptimWrapper, opt=torch.optim.AdamW, foreach=True, eps=1e-5)
"""AdamW from torch (one fused multi-tensor update) in fastai's wrapper: fastai's own Adam steps each
parameter tensor in Python. Same rule (decoupled weight decay), fastai's defaults for eps and decay."""


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a ``torch.compile`` wrapper, so saved state_dict keys carry no ``_orig_mod.``
    prefix and load into the ordinary model (checkpoints written mid-fit, while compiled)."""
    return getattr(model, "_orig_mod", model)


class CompileModel(Callback):
    """Trains through ``torch.compile(model)`` and puts the plain module back after fitting, so
    exports, ``state_dict`` keys and ``learn.predict`` see the ordinary model. Top-level (pickled)."""

    order = -10  # before every other callback touches the model

    def __init__(self, **compile_kwargs):
        self.compile_kwargs = compile_kwargs
        self.plain = None

    def before_fit(self):
        self.plain = self.learn.model
        self.learn.model = torch.compile(self.plain, **self.compile_kwargs)

    def after_fit(self):
        if self.plain is not None:
            self.learn.model, self.plain = self.plain, None


def tune_learner(learn, compile: bool = False, channels_last: bool | None = None) -> dict:
    """Speed settings on a built ``Learner``; returns what was set (for the caller to report).

    - torch's multi-tensor AdamW instead of fastai's per-tensor Python Adam;
    - CUDA: cudnn autotuning (fixed crop size, so the tuned kernels are reused);
    - channels_last weights (``channels_last=None``: on, CPU and CUDA): under AMP, convolutions use
      tensor cores in NHWC without layout transposes; on CPU oneDNN's NHWC kernels made a training
      step of the Unet 8-12% faster here (2 cores, 8x256^2: 4.5-4.7 s -> 4.0-4.3 s, interleaved);
    - ``compile``: train through torch.compile (see ``CompileModel``).
    """
    device = learn.dls.device or training_device()
    cuda = getattr(device, "type", str(device)) == "cuda"
    learn.opt_func = fast_adamw
    done = {"optimizer": "torch AdamW (foreach)"}
    if cuda:
        torch.backends.cudnn.benchmark = True
        done["cudnn_benchmark"] = True
    if channels_last is None or channels_last:
        learn.model = learn.model.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    if compile:
        learn.add_cb(CompileModel())
        done["compile"] = True
    return done


# --------------------------------------------------------------------------- training precision

BF16_MIN_GAIN = 1.10  # auto takes CPU bf16 only when a step is >= 10% faster: below that, timing noise and rounding
PRECISION_PROBE_ROUNDS = 2  # timed steps per precision (after one warm-up each), interleaved; the fastest counts


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: the GPU's own answer, or AVX512-BF16 / AMX on CPU
    (elsewhere torch emulates bf16 on CPU, slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: let the timing decide
        return True


def decide_precision(requested: str, device_type: str, bf16_native: bool,
                     times: dict[str, float] | None = None) -> tuple[str, str, dict[str, float] | None]:
    """(precision, reason, times): the training precision for ``requested`` on ``device_type``.

    ``auto``: on CUDA bf16 where the GPU has it, else fp16 with the gradient scaler; on CPU bf16 only
    when ``times`` (seconds per training step, ``{"fp32": s, "bf16": s}``, measured here by
    ``time_precisions``) show it at least ``BF16_MIN_GAIN`` x faster, else fp32. Pure: no measuring."""
    from .config import PRECISION_CHOICES

    if requested not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {requested!r}")
    cuda = device_type == "cuda"
    if requested == "fp16" and not cuda:
        raise ConfigError("precision fp16 needs a CUDA GPU; on CPU choose auto, bf16 or fp32")
    if requested == "bf16" and cuda and not bf16_native:
        raise ConfigError("this GPU has no bfloat16; choose --precision fp16 (with loss scaling) or fp32")
    if requested != "auto":
        slow = requested == "bf16" and not bf16_native
        return requested, "requested" + (" (this CPU has no native bfloat16: expect it slower than fp32)"
                                         if slow else ""), times
    if cuda:
        return ("bf16", "auto: the GPU supports bfloat16", times) if bf16_native else \
            ("fp16", "auto: the GPU has no bfloat16; fp16 with loss scaling", times)
    if not bf16_native:
        return "fp32", "auto: this CPU has no native bfloat16 (AVX512-BF16 or AMX), where bf16 runs slower", times
    if not times or "fp32" not in times or "bf16" not in times:
        raise ValueError("decide_precision: auto on a bf16-capable CPU needs the measured step times")
    gain = times["fp32"] / times["bf16"]
    said = f"a training step took {times['bf16']:.3f} s in bf16, {times['fp32']:.3f} s in fp32 here ({gain:.2f}x)"
    if gain >= BF16_MIN_GAIN:
        return "bf16", f"auto: {said}", times
    return "fp32", f"auto: {said}; bf16 must be >= {BF16_MIN_GAIN:g}x faster", times


class Fp32GroupedConvs:
    """While entered, grouped (depthwise) convolutions of ``model`` run in fp32 inside a CPU bf16 autocast
    region; the rest stays bf16. oneDNN's bf16 depthwise backward is 3-8x slower than fp32 (2 cores,
    8x144x64x64, 5x5: 98 vs 13 ms) while ordinary convolutions gain 1.3-1.9x; a Unet-b0 training step
    gained 1.53x over fp32 with every conv in bf16, 1.67x with this (one core, 5 interleaved rounds).
    Forward hooks, removed on exit: the model's structure and state_dict keys do not change."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._handles: list = []
        self._inside: list = []

    def _enter(self, module, args):
        ctx = torch.autocast("cpu", enabled=False)
        ctx.__enter__()
        self._inside.append(ctx)
        return tuple(a.float() if torch.is_tensor(a) else a for a in args)

    def _leave(self, module, args, out):
        self._inside.pop().__exit__(None, None, None)

    def __enter__(self):
        for m in self.model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
                self._handles += [m.register_forward_pre_hook(self._enter),
                                  m.register_forward_hook(self._leave, always_call=True)]
        return self

    def __exit__(self, *exc):
        while self._handles:
            self._handles.pop().remove()
        while self._inside:
            self._inside.pop().__exit__(None, None, None)


def _timed_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> float:
    import time

    t = time.perf_counter()
    grouped = Fp32GroupedConvs(model) if bf16 else nullcontext()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), grouped:
        out = model(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - t


def time_precisions(model: torch.nn.Module, bs: int, size: int, n_classes: int,
                    rounds: int = PRECISION_PROBE_ROUNDS) -> dict[str, float]:
    """Seconds per CPU training step (forward, fp32 loss, backward) at ``bs`` x ``size``^2, in fp32 and in
    bf16 autocast: one warm-up each, then ``rounds`` interleaved, the fastest kept (other load only slows
    a step down). Runs on a copy, its dropout on a forked random stream, so training is untouched."""
    import copy

    probe = copy.deepcopy(plain_model(model)).cpu().train()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(bs, input_channels(probe), size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(n_classes, (bs, size, size), generator=gen)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.random.fork_rng(devices=[]):
        for i in range(rounds + 1):
            for name in best:
                t = _timed_step(probe, x, y, name == "bf16")
                if i:  # round 0 is the warm-up (kernel selection, allocator)
                    best[name] = min(best[name], t)
    return best


class CpuBf16(Callback):
    """bfloat16 autocast around the forward pass on CPU (fastai's ``MixedPrecision`` autocasts CUDA only),
    depthwise convolutions kept in fp32 (``Fp32GroupedConvs``). The logits go back to float32 before the
    loss and metrics; weights, gradients and the optimiser stay float32, so no loss scaling is needed.
    Top-level (it may be pickled)."""

    order = 10  # MixedPrecision's place: before the loss and metric callbacks read ``pred``

    def __init__(self):
        self._ctx = None
        self._grouped = None

    def before_fit(self):
        self._grouped = Fp32GroupedConvs(self.learn.model).__enter__()

    def before_batch(self):
        self._ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        self._ctx.__enter__()

    def _exit(self):
        if self._ctx is not None:
            self._ctx, ctx = None, self._ctx
            ctx.__exit__(None, None, None)

    def after_pred(self):
        self._exit()
        from fastai.torch_core import to_float

        self.learn.pred = to_float(self.pred)

    def after_batch(self):
        self._exit()  # a batch cancelled inside the forward pass must not leave autocast on

    after_cancel_batch = after_batch

    def after_fit(self):
        self._exit()
        if self._grouped is not None:
            self._grouped, grouped = None, self._grouped
            grouped.__exit__(None, None, None)


def precision_callbacks(learn) -> list:
    """The learner's mixed-precision callbacks (ours and fastai's), e.g. to leave them out of an export."""
    from fastai.callback.fp16 import MixedPrecision

    return [cb for cb in learn.cbs if isinstance(cb, (CpuBf16, MixedPrecision))]


def apply_precision(learn, precision: str) -> None:
    """Train ``learn`` in ``precision`` (as decided by ``decide_precision``)."""
    from fastai.callback.fp16 import AMPMode, MixedPrecision

    if precision == "fp32":
        return
    cuda = getattr(learn.dls.device, "type", "cpu") == "cuda"
    if precision == "bf16":
        learn.add_cb(MixedPrecision(amp_mode=AMPMode.BF16) if cuda else CpuBf16())
    else:
        learn.add_cb(MixedPrecision(amp_mode=AMPMode.FP16))


def resolve_precision(requested: str, model: torch.nn.Module, bs: int, size: int, n_classes: int,
                      device: torch.device) -> tuple[str, str, dict[str, float] | None]:
    """``decide_precision`` for this machine, timing a CPU step only where the choice depends on it."""
    native = bf16_supported(device)
    times = None
    if requested == "auto" and device.type == "cpu" and native:
        times = time_precisions(model, bs, size, n_classes)
    return decide_precision(requested, device.type, native, times)


PROBE_STEADY = 1.25  # a probed step time counts once consecutive steps agree within this factor
PROBE_MAX_STEPS = 8  # ... or after this many steps (a busy machine may never settle)


class StepProbe:
    """Measurements the run plan asks for, on this machine: ``--bs auto``, ``--precision auto`` and the
    step times behind ``--time``. One weights-free copy of the run's model (same encoder and classes)
    is built on first use and shared by every measurement."""

    def __init__(self, build: Callable[[], torch.nn.Module], n_classes: int, device: torch.device):
        self.build, self.n_classes, self.device = build, n_classes, torch.device(device)
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self.build().to(self.device).to(memory_format=torch.channels_last)
        return self._model

    def batch_size(self, size: int, n_train: int) -> tuple[int, str]:
        bs, why = auto_batch_size(self.model, size, self.device, n_train)
        return bs, f"--bs auto: {why}"

    def precision(self, requested: str, size: int, bs: int) -> tuple[str, str]:
        choice, why, _ = resolve_precision(requested, self.model, bs, size, self.n_classes, self.device)
        return choice, why

    def step_seconds(self, size: int, bs: int, precision: str, rounds: int = 3) -> float:
        """Seconds of one training step (forward, loss, backward, AdamW) of ``bs`` crops of ``size``: the
        median of the last ``rounds`` once ``rounds`` steps in a row agree within ``PROBE_STEADY`` (a new
        shape's first steps build its kernels: oneDNN's bf16 ones took several seconds for 3-4 steps)."""
        model = self.model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6, foreach=True)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(bs, input_channels(model), size, size, generator=gen).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(self.n_classes, (bs, size, size), generator=gen).to(self.device)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        times: list[float] = []
        with torch.random.fork_rng(devices=[]):
            while len(times) < PROBE_MAX_STEPS:
                times.append(self._one_step(model, opt, x, y, amp))
                last = times[-rounds:]
                if len(times) > rounds and max(last) <= PROBE_STEADY * min(last):
                    break
        return float(np.median(times[-rounds:]))

    def _one_step(self, model, opt, x, y, amp) -> float:
        import time

        start = time.perf_counter()
        grouped = Fp32GroupedConvs(model) if amp is not None and self.device.type == "cpu" else nullcontext()
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None), grouped:
            out = model(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start
