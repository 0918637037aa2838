"""The run plan: every automatic decision of a training run, made once, printed, saved, with its reason.

``plan_run(cfg, spec, machine, pretrained, probe)`` looks at the config, the data (``DataSpec``) and
the machine and returns a frozen ``RunPlan``: crop size and input mode, batch size, precision,
DataLoader workers, RAM cache, augmentation level, progressive resizing, epochs (given, or the most
that fit a ``--time`` budget, from measured step times) and the one-cycle phases. ``fit`` prints
``plan.table()``, saves ``runs/<name>/plan.json``, and the loaders and the loop take their settings
from it; a resumed run reads its saved plan instead of planning again. The reasons behind the
numbers are in docs/decisions.md.

Measurements (``--bs auto``, ``--precision auto``, ``--time``) go through a ``Probe``
(``fastseg.device.StepProbe`` measures for real), so the rules can be tested with made-up numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ..config import FitConfig
from ..constants import STRIDE
from ..errors import ConfigError

__all__ = ["Machine", "Phase", "Probe", "RunPlan", "plan_run", "auto_size", "progressive_size", "lr_find_size", "small_epochs",
           "crops_per_image", "plan_phases", "count_steps", "resolve_aug", "Costs", "budget_epochs", "PLAN_VERSION",
           "Workload", "PROGRESSIVE_SHARE", "PROGRESSIVE_MIN_EPOCHS", "PROGRESSIVE_LR_DIV", "AUG_FULL_STEPS"]

PLAN_VERSION = 1
MAX_AUTO_SIZE = 256  # auto crop side: enough context for a Unet-b0, and a CPU step stays a few seconds
PROGRESSIVE_SHARE = 0.65  # of the trained epochs on half-size crops (docs/decisions.md: progressive resizing)
PROGRESSIVE_MIN_EPOCHS = 4  # shorter runs leave too little of either part to be worth the switch
PROGRESSIVE_LR_DIV = 4  # the full-size part refines: at the full peak LR its first epochs undid the half-size part
AUG_FULL_STEPS = 1000  # --aug auto: the full recipe from this many optimiser steps on; shorter runs underfit (a judgement)
VALID_COST = 0.4  # a validation image costs about this share of a training image (forward only, no backward)
STEP_SCALE = {"fp32": 0.91}  # fastai's training step over the probe's, by precision (data, callbacks, the
# probe's colder kernels); fp32 runs on ISBI ended at 0.89-0.92 of --time with 1.03 (docs/decisions.md)
STEP_SCALE_DEFAULT = 1.03  # bf16 and the rest: ISBI and demo runs ended at 0.95-1.09 of --time with it
FINISH_FIXED_S = 3.5  # the finish's fixed cost (exports, ONNX conversion, plots, report) on 2 CPU cores
FINISH_PASSES = 7  # full-resolution forward passes over the validation set in the finish (scores, samples,
# per-image table, backend agreement)
EPOCH_FIXED_S = 0.15  # per epoch: last.pth (model + optimiser state) and best.pth written, callbacks, loader start
SETUP_AFTER_PLAN_S = 0.5  # after planning: the RAM cache filled, the learner and its DataLoaders built
LR_FIND_FIXED_S = 0.5  # the LR finder's own set-up: its crop loaders, saving and restoring the weights


@dataclass(frozen=True)
class Machine:
    """What the plan needs to know about the hardware; ``detect()`` reads this machine."""

    device: str = "cpu"  # torch device string: cpu, cuda, cuda:1, mps
    cores: int = 1
    ram_free: int = 0  # bytes available to new allocations (0: unknown)
    world_size: int = 1  # DDP processes in all
    local_processes: int = 1  # DDP processes on this machine (each caches the data set in its RAM)
    gpu_free: int = 0  # bytes free on the GPU (0: no GPU), for the device data path's cache
    bf16: bool = False  # the device computes bfloat16 natively (CUDA: Ampere on; CPU: AVX512-BF16/AMX)

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]

    @classmethod
    def detect(cls, device: str = "auto") -> "Machine":
        import torch

        from ..device import available_ram, bf16_supported, cpu_cores, resolve_device
        from .distributed import local_world_size, world_size

        dev = resolve_device(device)
        gpu_free = int(torch.cuda.mem_get_info(dev)[0]) if dev.type == "cuda" else 0
        return cls(device=str(dev), cores=cpu_cores(), ram_free=available_ram(), world_size=world_size(),
                   local_processes=local_world_size(), gpu_free=gpu_free,
                   bf16=dev.type in ("cpu", "cuda") and bf16_supported(dev))


@dataclass(frozen=True)
class Phase:
    """One fit_one_cycle call: its epochs, peak LR as multiples of the run's LR (a pair: encoder and head,
    fastai's discriminative LRs), schedule shape, frozen encoder or not, and crop side (None: the run's)."""

    epochs: int
    lr_mult: tuple[float, ...]
    pct_start: float
    div: float
    frozen: bool
    size: int | None = None

    def lr(self, base: float) -> float | slice:
        """The peak LR for fastai: one number, or a slice from encoder to head."""
        if len(self.lr_mult) == 1:
            return base * self.lr_mult[0]
        return slice(base * self.lr_mult[0], base * self.lr_mult[-1])


class Probe(Protocol):
    """Measurements the planner may ask for; ``fastseg.device.StepProbe`` makes them on this machine."""

    def batch_size(self, size: int, n_train: int) -> tuple[int, str]: ...

    def precision(self, requested: str, size: int, bs: int) -> tuple[str, str]: ...

    def step_seconds(self, size: int, bs: int, precision: str) -> float: ...


@dataclass(frozen=True)
class RunPlan:
    """Every automatic choice of one run; ``why`` holds a one-line reason per choice."""

    device: str
    size: int  # training crop side (validation: centre crops of this side)
    input_mode: str  # "crop": random crops of larger images; "resize": smaller images are resized to ``size``
    bs: int
    precision: str
    workers: int
    cache: bool
    aug: str
    progressive: int | None  # half-size crop side of the first part; None: one size
    crops_per_image: int  # training crops per image per epoch in the half-size part
    epochs: int  # trained epochs (a frozen warm-up comes on top)
    phases: tuple[Phase, ...]
    steps: int  # optimiser steps of the trained phases (what --aug auto counts)
    world_size: int = 1
    data_path: str = "fastai"  # training batches: fastai's per-item path, or cut on the GPU from a decoded set
    # held on the GPU ("device") or in pinned RAM ("host"): fastseg.train.device_data
    budget_s: float | None = None  # --time, in seconds
    estimate_s: float | None = None  # the predicted wall time of the whole run (with --time)
    lr: float | None = None  # the peak LR, once given or found by the LR finder
    why: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # probe measurements behind the choices (seconds)
    version: int = PLAN_VERSION

    def with_lr(self, lr: float, why: str) -> "RunPlan":
        return dataclasses.replace(self, lr=float(lr), why={**self.why, "lr": why})

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def epochs_at(self, size: int | None) -> int:
        return sum(p.epochs for p in self.phases if p.size == size)

    def rows(self) -> list[tuple[str, str, str]]:
        """(choice, value, reason) for the printed table."""
        warm = self.total_epochs - self.epochs
        epochs = f"{self.epochs}" + (f" + {warm} frozen warm-up" if warm else "")
        prog = "off" if self.progressive is None else (
            f"{self.progressive} px x{self.crops_per_image} per image for {self.epochs_at(self.progressive)} "
            f"epochs, then {self.size} px at LR/{PROGRESSIVE_LR_DIV}")
        device = self.device + (f" x {self.world_size} processes" if self.world_size > 1 else "")
        return [("device", device, self.why.get("device", "")),
                ("crop size", f"{self.size} px ({self.input_mode})", self.why.get("size", "")),
                ("batch size", str(self.bs), self.why.get("bs", "")),
                ("precision", self.precision, self.why.get("precision", "")),
                ("epochs", epochs, self.why.get("epochs", "")),
                ("progressive", prog, self.why.get("progressive", "")),
                ("augmentation", self.aug, self.why.get("aug", "")),
                ("RAM cache", "yes" if self.cache else "no", self.why.get("cache", "")),
                ("data path", self.data_path, self.why.get("data_path", "")),
                ("workers", str(self.workers), self.why.get("workers", "")),
                ("learning rate", "LR finder" if self.lr is None else f"{self.lr:.2e}", self.why.get("lr", ""))]

    def table(self) -> str:
        rows = self.rows()
        w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: Any, source: str = "plan.json") -> "RunPlan":
        if not isinstance(values, dict) or values.get("version") != PLAN_VERSION:
            got = values.get("version") if isinstance(values, dict) else None
            raise ConfigError(f"{source}: plan version {got!r} is not one this fastseg reads ({PLAN_VERSION})")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            kept = {k: v for k, v in values.items() if k in names}
            kept["phases"] = tuple(Phase(**{**p, "lr_mult": tuple(p["lr_mult"])}) for p in values["phases"])
            return cls(**kept)
        except (TypeError, KeyError) as e:
            raise ConfigError(f"{source}: not a fastseg plan ({e})") from None


def auto_size(min_side: int, size: int | None) -> tuple[int, str]:
    """The training crop side: the requested one, else min(256, smallest side) rounded down to /32."""
    if size is not None:
        return size, "--size"
    side = max(STRIDE, min(MAX_AUTO_SIZE, min_side) // STRIDE * STRIDE)
    return side, f"auto: min({MAX_AUTO_SIZE}, smallest image side {min_side}), a multiple of 32"


def progressive_size(cfg: FitConfig, min_side: int, size: int, epochs: int) -> tuple[int | None, str]:
    """The crop side of the first, cheap part of a progressive run (None: off), and why.

    ``auto`` needs images at least twice the crop side: the crops are then windows of larger images
    (nothing is down-scaled), and the early epochs, which learn local texture, get ~4x the steps."""
    small = (size // 2) // STRIDE * STRIDE
    least = model_min_side(cfg.arch)
    if cfg.progressive == "off":
        return None, "--progressive off"
    if small < least:
        at_least = f", at least {least} for {cfg.arch}" if least > STRIDE else ""
        return None, f"no half-size crop for size {size} (crops must be multiples of {STRIDE}{at_least})"
    if not small_epochs(epochs):
        return None, f"{epochs} epochs cannot be split (>= {PROGRESSIVE_MIN_EPOCHS} needed)"
    if cfg.progressive == "auto" and min_side < 2 * size:
        return None, f"auto: smallest image side {min_side} < 2 x crop {size}"
    return small, "--progressive on" if cfg.progressive == "on" else f"auto: images >= 2 x crop {size}"


def model_min_side(arch: str) -> int:
    """The smallest input side ``arch`` takes (PAN's pyramid pooling needs 128)."""
    from ..model import MIN_SIDES

    return MIN_SIDES.get(arch, STRIDE)


def _check_arch_size(arch: str, size: int) -> None:
    least = model_min_side(arch)
    if size < least:
        raise ConfigError(f"{arch} needs inputs of at least {least} px, but the training size is {size} "
                          f"(--size {least} resizes smaller images up; or choose another --arch)")


def lr_find_size(cfg: FitConfig, size: int) -> int:
    """The LR finder's crop side: ``cfg.lr_find_size`` (cheap; the rate carries over), at least what the arch takes."""
    return min(max(cfg.lr_find_size, model_min_side(cfg.arch)), size)


def small_epochs(epochs: int) -> int:
    """How many of ``epochs`` trained epochs run on half-size crops (0: the run cannot be split)."""
    n = int(epochs * PROGRESSIVE_SHARE)
    return n if epochs >= PROGRESSIVE_MIN_EPOCHS and 1 <= n < epochs else 0


def crops_per_image(size: int, small: int) -> int:
    """Half-size crops per image per epoch: as many pixels as one full-size crop, about the same cost."""
    return round((size / small) ** 2)


def plan_phases(epochs: int, freeze_epochs: int, pretrained: bool, small: int | None = None) -> tuple[Phase, ...]:
    """fastai's fine_tune recipe for a pretrained encoder (frozen warm-up, then discriminative LRs), one
    cycle otherwise. ``small``: the first PROGRESSIVE_SHARE of the trained epochs (and the warm-up) on crops
    of ``small``, the rest at full size at LR / PROGRESSIVE_LR_DIV, each part a one-cycle of its own."""
    if pretrained and freeze_epochs > 0:
        phases = [Phase(freeze_epochs, (1.0,), pct_start=0.99, div=25.0, frozen=True),
                  Phase(epochs, (1 / 200, 1 / 2), pct_start=0.3, div=5.0, frozen=False)]
    else:
        phases = [Phase(epochs, (1.0,), pct_start=0.25, div=25.0, frozen=False)]
    n_small = small_epochs(epochs) if small is not None else 0
    if not n_small:
        return tuple(phases)
    *first, last = phases
    full_mult = tuple(m / PROGRESSIVE_LR_DIV for m in last.lr_mult)
    return tuple([dataclasses.replace(p, size=small) for p in first] + [
        dataclasses.replace(last, epochs=n_small, size=small),
        dataclasses.replace(last, epochs=epochs - n_small, lr_mult=full_mult)])


def steps_per_epoch(n_train: int, bs: int, crops: int = 1) -> int:
    """Optimiser steps of one epoch (fastai drops the last partial batch when there is more than one)."""
    return max(1, n_train * crops // bs)


def count_steps(phases, n_train: int, bs: int, crops: int) -> int:
    """Optimiser steps of the trained (not frozen) phases; half-size phases take ``crops`` crops per image."""
    return sum(p.epochs * steps_per_epoch(n_train, bs, crops if p.size is not None else 1)
               for p in phases if not p.frozen)


def resolve_aug(level: str, steps: int) -> tuple[str, str]:
    """The augmentation level for a run of ``steps`` optimiser steps: ``auto`` -> full or none, and why."""
    if level != "auto":
        return level, "--aug"
    if steps >= AUG_FULL_STEPS:
        return "full", f"auto: {steps} optimiser steps >= {AUG_FULL_STEPS}"
    return "none", f"auto: {steps} optimiser steps < {AUG_FULL_STEPS} (short runs underfit)"


@dataclass(frozen=True)
class Costs:
    """Seconds of each part of a run, from probed step times (for --time)."""

    full_step: float  # one training step of bs crops at the full size
    small_step: float  # ... at the half size (0 when progressive resizing is off)
    lr_find: float  # the whole LR finder (0 with a given --lr)
    valid_epoch: float  # validating once on centre crops
    finish: float  # after the last epoch: exports, full-resolution predictions, plots, report
    epoch_fixed: float = 0.0  # per epoch whatever its steps: checkpoints (last.pth, best.pth), callbacks

    def run(self, epochs: int, n_train: int, bs: int, small: int | None, crops: int, freeze: int) -> float:
        n_small = small_epochs(epochs) if small else 0
        full = (epochs - n_small) * steps_per_epoch(n_train, bs) * self.full_step
        half = (n_small + (freeze if small else 0)) * steps_per_epoch(n_train, bs, crops) * self.small_step
        warm = 0.0 if small else freeze * steps_per_epoch(n_train, bs) * self.full_step * 0.6  # no encoder backward
        return self.lr_find + full + half + warm + (epochs + freeze) * (self.valid_epoch + self.epoch_fixed) + self.finish


@dataclass(frozen=True)
class Workload:
    """What a run's length in steps depends on, besides its epochs (for --time)."""

    n_train: int  # training images
    bs: int
    size: int  # training crop side
    min_side: int  # the smallest image side: whether progressive resizing has room
    freeze: int = 0  # frozen warm-up epochs (pretrained encoders)


def budget_epochs(left_s: float, costs: Costs, work: Workload, cfg: FitConfig) -> tuple[int, float]:
    """The most epochs (at least 1) whose run fits ``left_s`` seconds, with the progressive split that
    length implies; and the predicted seconds."""
    best = None
    for n in range(1, 100_000):
        small, _ = progressive_size(cfg, work.min_side, work.size, n)
        crops = crops_per_image(work.size, small) if small else 1
        seconds = costs.run(n, work.n_train, work.bs, small, crops, work.freeze)
        if seconds > left_s and best is not None:
            break
        best = (n, seconds)
        if seconds > left_s:
            break
    return best


def _costs(cfg: FitConfig, spec, work: Workload, precision: str, probe: Probe) -> Costs:
    """What each part of the run costs here: probed training steps at the full and the half size."""
    size, bs = work.size, work.bs
    scale = STEP_SCALE.get(precision, STEP_SCALE_DEFAULT)
    full = probe.step_seconds(size, bs, precision) * scale
    half_side = (size // 2) // STRIDE * STRIDE
    small = probe.step_seconds(half_side, bs, precision) * scale \
        if cfg.progressive != "off" and half_side >= 32 else 0.0
    per_image = full / bs
    lr_find = 0.0 if cfg.lr != "auto" else \
        LR_FIND_FIXED_S + cfg.lr_find_iters * probe.step_seconds(lr_find_size(cfg, size), bs, precision) * scale
    valid = VALID_COST * per_image * max(1, len(spec.valid))
    valid_pixels = sum(spec.class_pixels.get("valid", ())) or len(spec.valid) * size * size
    finish = FINISH_FIXED_S + FINISH_PASSES * VALID_COST * per_image * valid_pixels / (size * size)
    return Costs(full_step=full, small_step=small, lr_find=lr_find, valid_epoch=valid, finish=finish,
                 epoch_fixed=EPOCH_FIXED_S)


def _epochs(cfg: FitConfig, spec, work: Workload, precision: str, probe: Probe | None,
            clock: Callable[[], float]) -> tuple[int, str, float | None, dict]:
    """--epochs, or the most epochs that fit --time (with the predicted wall time and the measurements).
    ``clock()``: seconds the run has spent so far, read after the probes (they count against the budget)."""
    if cfg.time is None:
        return cfg.epochs, "--epochs", None, {}
    costs = _costs(cfg, spec, work, precision, _need(probe, "--time"))
    spent = clock() + SETUP_AFTER_PLAN_S
    epochs, seconds = budget_epochs(cfg.time - spent, costs, work, cfg)
    total = spent + seconds
    why = (f"--time {_minutes(cfg.time)}: step {costs.full_step:.2f} s"
           + (f" ({costs.small_step:.2f} s at half size)" if costs.small_step else "")
           + f", {spent:.0f} s to set up; predicted {_minutes(total)} in all")
    return epochs, why, total, {**dataclasses.asdict(costs), "setup": spent}


def plan_run(cfg: FitConfig, spec, machine: Machine, pretrained: bool, probe: Probe | None = None,
             clock: Callable[[], float] = lambda: 0.0) -> RunPlan:
    """Every automatic decision for training ``cfg`` on ``spec`` on ``machine``, each with its reason.

    ``pretrained``: the encoder's weights were loaded (the recipe then starts with a frozen warm-up).
    ``probe`` measures what ``--bs auto``, ``--precision auto`` and ``--time`` need (None: nothing to
    measure). ``clock()``: seconds the run has spent so far, counted against ``--time``."""
    why: dict[str, str] = {"device": _device_why(cfg, machine)}
    size, why["size"] = auto_size(spec.min_side, cfg.size)
    _check_arch_size(cfg.arch, size)
    bs, why["bs"] = (int(cfg.bs), "--bs") if cfg.bs != "auto" else \
        _need(probe, "--bs auto").batch_size(size, len(spec.train))
    precision, why["precision"] = _precision(cfg, machine, probe, size, bs)
    cache, why["cache"] = _cache(cfg, spec, machine)
    work = Workload(len(spec.train), bs, size, spec.min_side, cfg.freeze_epochs if pretrained else 0)
    epochs, why["epochs"], estimate, timings = _epochs(cfg, spec, work, precision, probe, clock)
    small, why["progressive"] = progressive_size(cfg, spec.min_side, size, epochs)
    crops = crops_per_image(size, small) if small else 1
    phases = plan_phases(epochs, cfg.freeze_epochs, pretrained, small)
    steps = count_steps(phases, len(spec.train), bs, crops)
    aug, why["aug"] = resolve_aug(cfg.aug, steps)
    workers, why["workers"] = _workers(cfg, machine, cache, steps_per_epoch(len(spec.train), bs))
    data_path, why["data_path"] = _data_path(cfg, spec, machine, size, aug)
    why["lr"] = "LR finder on small crops, fastai's 'minimum' suggestion" if cfg.lr == "auto" else "--lr"
    return RunPlan(device=machine.device, size=size, input_mode="crop" if spec.min_side >= size else "resize", bs=bs,
                   precision=precision, workers=workers, cache=cache, aug=aug, progressive=small, data_path=data_path,
                   crops_per_image=crops, epochs=epochs, phases=phases, steps=steps, world_size=machine.world_size,
                   budget_s=cfg.time, estimate_s=estimate, lr=None if cfg.lr == "auto" else float(cfg.lr), why=why,
                   timings=timings)


def _need(probe: Probe | None, what: str) -> Probe:
    if probe is None:
        raise ConfigError(f"{what} needs measurements on this machine, and no probe was given")
    return probe


def _device_why(cfg: FitConfig, machine: Machine) -> str:
    if cfg.device != "auto":
        return "--device"
    return {"cuda": "auto: a CUDA GPU", "mps": "auto: Apple MPS (no CUDA GPU)"}.get(machine.kind,
                                                                                     "auto: no GPU found")


def _precision(cfg: FitConfig, machine: Machine, probe: Probe | None, size: int, bs: int) -> tuple[str, str]:
    from ..device import decide_precision

    if cfg.precision == "auto" and machine.kind == "cpu":  # bf16 only where a timed step says it is faster
        return _need(probe, "--precision auto").precision("auto", size, bs)
    if cfg.precision == "auto" and machine.kind == "mps":
        return "fp32", "auto: fp32 on Apple MPS (no grad scaler there; mixed precision untested)"
    choice, why, _ = decide_precision(cfg.precision, machine.kind, machine.bf16, None)
    return choice, why


def _cache(cfg: FitConfig, spec, machine: Machine) -> tuple[bool, str]:
    from ..device import CACHE_RAM_SHARE, resolve_cache

    needed = cache_bytes(spec)
    copies = machine.local_processes
    cache = resolve_cache(cfg.cache, needed, free_bytes=machine.ram_free, processes=copies)
    if cfg.cache != "auto":
        return cache, f"--cache {cfg.cache}"
    size = f"{needed / 2**20:.0f} MiB" + (f" x {copies} processes" if copies > 1 else "")
    relation = "<=" if cache else ">"
    return cache, f"auto: the decoded set needs {size}, {relation} {CACHE_RAM_SHARE:.0%} of free RAM"


def cache_bytes(spec) -> int:
    """RAM the decoded set needs: ``spec.pixel_bytes`` per image pixel (3 for 8-bit RGB) + 1 per mask pixel
    (discover counted the pixels)."""
    pixels, per_pixel = spec.class_pixels, spec.pixel_bytes + 1
    if {"train", "valid"} <= set(pixels):
        return per_pixel * (sum(pixels["train"]) + sum(pixels["valid"]))
    from PIL import Image

    total = 0
    for s in (*spec.train, *spec.valid):  # a hand-made spec without counts: read the image headers
        with Image.open(s.image) as im:
            total += im.size[0] * im.size[1] * per_pixel
    return total


def _data_path(cfg: FitConfig, spec, machine: Machine, size: int, aug: str) -> tuple[str, str]:
    """Where training batches are cut: on the GPU from a decoded set when it can hold what fastai's
    per-item path does (``device_data.choose_data_path``), else fastai's path."""
    from .device_data import choose_data_path

    if spec.channels != 3 or spec.pixel_bytes != 3:
        return "fastai", "fastai's path: images that are not 8-bit RGB are read channel by channel there"
    where, why = choose_data_path(machine.device, aug, spec.min_side >= size, cache_bytes(spec) * machine.local_processes,
                                  cfg.cache, free=(machine.gpu_free, machine.ram_free))
    return where or "fastai", why


def _workers(cfg: FitConfig, machine: Machine, cache: bool, batches: int) -> tuple[int, str]:
    import torch

    from ..device import resolve_num_workers

    workers = resolve_num_workers(cfg.num_workers, torch.device(machine.device), cores=machine.cores, cached=cache,
                                  batches=batches)
    if cfg.num_workers != "auto":
        return workers, "--num-workers"
    if machine.kind == "cuda":
        return workers, ("auto: in-process for short cached epochs (workers restart every epoch)" if not workers
                         else "auto: one per core but one, at most 8")
    return workers, (f"auto: none on {machine.cores} cores (the model needs them)" if not workers
                     else "auto: a quarter of the cores")


def _minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def read_plan(path: str | os.PathLike) -> RunPlan:
    """A saved ``plan.json``."""
    try:
        values = json.loads(open(path).read())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the run's plan ({e})") from None
    return RunPlan.from_dict(values, str(path))
