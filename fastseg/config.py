"""The one frozen configuration that flows from the CLI (and an optional config file) to the core.

Every default carries the reason for its value. ``FitConfig.from_file`` reads JSON or YAML; the
run folder's ``config.json`` can be fed back to reproduce a run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import math
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .constants import STRIDE
from .errors import ConfigError

__all__ = ["FitConfig", "PredictConfig", "Notify", "silent"]

Notify = Callable[[str], None]
"""A one-argument callable the CLI passes in to show notices; the core never prints."""


def silent(message: str) -> None:
    """The default ``Notify``: drop the message (library use)."""


WEIGHT_CHOICES = ("imagenet", "none")
LAYOUT_CHOICES = ("auto", "images+masks", "camvid", "segnet", "voc", "coco", "cvat", "labelme")  # layouts.LAYOUTS + auto
LOSS_CHOICES = ("ce", "dice", "ce+dice", "focal")  # fastseg.train.losses implements each
CACHE_CHOICES = ("auto", "ram", "none")  # fastseg.device.resolve_cache decides "auto"
AUG_CHOICES = ("auto", "full", "flips", "none")  # fastseg.train.augment.seg_batch_tfms builds each
PROGRESSIVE_CHOICES = ("auto", "on", "off")  # fastseg.train.progressive.progressive_size decides "auto"
LOG_CHOICES = ("tensorboard", "mlflow", "wandb")  # fastseg.train.tracking.TRACKERS implements each
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")  # fastseg.device.decide_precision decides "auto"
# SMP's architectures (segmentation_models_pytorch.MODEL_ARCHITECTURES_MAPPING, checked by tests/test_model.py) less
# DPT, which takes only ViT-style tu- encoders; listed here so `fastseg --help` needs no torch import.
DEVICE_HINT = "auto, cpu, cuda, cuda:N or mps"  # fastseg.device.resolve_device's choices, here so --help needs no torch
ARCH_CHOICES = ("Unet", "UnetPlusPlus", "FPN", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN", "PSPNet",
                "UPerNet", "Segformer")


@dataclass(frozen=True)
class FitConfig:
    data: str = "data"  # the embedded demo set, so `fastseg fit` works out of the box
    epochs: int = 25  # the reference run's length; enough for the demo set to converge from scratch
    lr: float | str = "auto"  # "auto" runs the LR finder and takes its 'minimum' suggestion (docs/decisions.md)
    bs: int | str = 8  # fits a 256 px Unet-b0 on CPU RAM and any GPU; bs 4 was tried on ISBI: noisier BatchNorm, no gain
    size: int | None = None  # None: min(256, smallest image side) rounded down to a multiple of 32
    encoder: str = "timm-efficientnet-b0"  # small, fast, strong ImageNet encoder (the reference run)
    arch: str = "Unet"  # the reference run's: skip connections keep thin structures (membranes, edges) sharp
    weights: str = "imagenet"  # pretrained encoders converge faster; "none" or a local file also work
    valid_pct: float = 0.2  # used only when the data set has no split of its own
    seed: int = 42  # same seed, same split and same initialisation
    export: str = "exports/model.pkl"  # the deployable fastai learner
    lr_find_iters: int = 30  # with lr_find_size crops this costs well under 10% of a 25-epoch fit
    layout: str = "auto"  # detect images+masks / camvid / segnet / voc from the folders present
    colors: str | None = None  # None: codes.csv in the data folder, if any, is the colour table
    void: str | None = None  # None: a class named void/Void/unlabelled/... is void, if any
    ignore_index: int | None = None  # None: only mask value 255 (the common convention) is void
    sync_bn: bool = True  # DDP on GPUs: BatchNorm statistics over the effective batch, not a per-GPU slice
    name: str | None = None  # run folder runs/<name>; None: a timestamp, so runs never overwrite each other
    runs_dir: str = "runs"  # where run folders go, relative to the working directory
    patience: int | None = None  # None: no early stopping (the one-cycle tail is where the best epochs are)
    freeze_epochs: int = 1  # pretrained encoders only: one epoch to fit the new decoder before unfreezing
    loss: str = "ce+dice"  # CE for calibrated pixels + Dice for thin/small classes that CE under-weights
    class_weights: tuple[float, ...] | None = None  # per-class CE/Dice weights in codes order; None: equal
    aug: str | bool = "auto"  # true/false (older config files) mean full/none; auto: full recipe for runs of >= 1000 optimiser steps, none for shorter ones (they underfit)
    precision: str = "auto"  # auto: bf16 where a timed step is faster (CPU) / the GPU has it; else fp32 (CPU), fp16 (GPU)
    lr_find_size: int = 64  # LR-finder crop side: small crops make the finder cheap; the LR transfers to larger crops
    num_workers: int | str = "auto"  # auto: 0 on CPU with <= 4 cores (the model needs them), cores-1 (max 8) on CUDA
    cache: str = "auto"  # auto: keep decoded images in RAM when they need <= 25% of free RAM (decode once, not per epoch)
    progressive: str | bool = "auto"  # YAML reads on/off as true/false; auto: half-size crops for 65% of the epochs when images are >= 2x the crop (more steps)
    compile: bool = False  # off: compiling takes minutes, which short and CPU runs never win back (unmeasured on GPU)
    grad_clip: float = 0.0  # off: max norm 1.0 was neutral on ISBI (seeds 1/2/42: +0.003/+0.004/-0.004 mIoU); for unstable runs
    log: tuple[str, ...] = ()  # experiment trackers (--log): none by default, each needs its own optional package
    time: float | str | None = None  # --time: a wall-clock budget (seconds, or "10m") that sets the epochs; None: --epochs
    device: str = "auto"  # auto: CUDA, then Apple MPS, then the CPU (printed in the plan)

    def __post_init__(self) -> None:
        coerce_fields(self)
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        if self.bs != "auto" and not (isinstance(self.bs, int) and self.bs >= 1):
            raise ConfigError(f"bs (batch size) must be 'auto' or at least 1, got {self.bs!r}")
        if self.size is not None and (self.size < STRIDE or self.size % STRIDE):
            raise ConfigError(f"size must be a multiple of 32 (encoders downsample up to 5 times), got {self.size}")
        object.__setattr__(self, "arch", check_arch(self.arch))
        if not 0.0 < self.valid_pct < 1.0:
            raise ConfigError(f"valid_pct must be between 0 and 1 (exclusive), got {self.valid_pct}")
        if self.lr != "auto":
            try:
                lr = float(self.lr)
            except (TypeError, ValueError):
                raise ConfigError(f"lr must be 'auto' or a positive number, got {self.lr!r}") from None
            if not lr > 0:
                raise ConfigError(f"lr must be 'auto' or a positive number, got {self.lr!r}")
            object.__setattr__(self, "lr", lr)
        if self.lr_find_iters < 20:  # fewer points leave fastai's suggestion functions nothing to fit
            raise ConfigError(f"lr_find_iters must be at least 20, got {self.lr_find_iters}")
        if self.layout not in LAYOUT_CHOICES:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUT_CHOICES)}, got {self.layout!r}")
        if self.ignore_index is not None and not 0 <= self.ignore_index <= 255:
            raise ConfigError(f"ignore_index must be a mask value 0-255, got {self.ignore_index}")
        if self.num_workers != "auto" and not (isinstance(self.num_workers, int) and self.num_workers >= 0):
            raise ConfigError(f"num_workers must be 'auto' or 0 or more, got {self.num_workers!r}")
        if self.cache not in CACHE_CHOICES:
            raise ConfigError(f"cache must be one of {', '.join(CACHE_CHOICES)}, got {self.cache!r}")
        if isinstance(self.aug, bool):  # config files written before the levels: true was the full recipe
            object.__setattr__(self, "aug", "full" if self.aug else "none")
        if self.aug not in AUG_CHOICES:
            raise ConfigError(f"aug must be one of {', '.join(AUG_CHOICES)}, got {self.aug!r}")
        if isinstance(self.progressive, bool):
            object.__setattr__(self, "progressive", "on" if self.progressive else "off")
        if self.progressive not in PROGRESSIVE_CHOICES:
            raise ConfigError(f"progressive must be one of {', '.join(PROGRESSIVE_CHOICES)}, got {self.progressive!r}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        self._check_training_options()

    def _check_training_options(self) -> None:
        if self.time is not None:
            object.__setattr__(self, "time", parse_duration(self.time))
        if self.loss not in LOSS_CHOICES:
            raise ConfigError(f"unknown loss `{self.loss}`; valid losses: {', '.join(LOSS_CHOICES)}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be at least 1 epoch, got {self.patience}")
        if isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float)) or not self.grad_clip >= 0:
            raise ConfigError(f"grad_clip must be 0 (off) or a positive number, got {self.grad_clip!r}")
        object.__setattr__(self, "grad_clip", float(self.grad_clip))
        if self.freeze_epochs < 0:
            raise ConfigError(f"freeze_epochs must be 0 or more, got {self.freeze_epochs}")
        if self.lr_find_size < STRIDE or self.lr_find_size % STRIDE:
            raise ConfigError(f"lr_find_size must be a multiple of 32, got {self.lr_find_size}")
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")
        if self.class_weights is not None:
            weights = parse_class_weights(self.class_weights)
            object.__setattr__(self, "class_weights", weights)
            if self.loss == "focal":  # SMP's FocalLoss takes no class weights: they would be silently ignored
                raise ConfigError("class_weights apply to the ce, dice and ce+dice losses; focal takes none "
                                  "(choose another --loss, or drop --class-weights)")
        object.__setattr__(self, "log", parse_log(self.log))

    @property
    def weights_is_file(self) -> bool:
        return self.weights not in WEIGHT_CHOICES

    def replace(self, **changes: Any) -> "FitConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "FitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        values = legacy_precision(values)
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(names))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "FitConfig":
        """Read a JSON or YAML file of options; ``overrides`` (the CLI's) win."""
        values = coerce_values(cls, legacy_precision(read_config_file(path), str(path)), source=str(path))
        values.update(overrides)
        return cls.from_dict(values, source=str(path))


def check_arch(name: str) -> str:
    """``name`` as SMP spells it (``unet`` -> ``Unet``); else ``ConfigError`` listing the choices."""
    found = {a.lower(): a for a in ARCH_CHOICES}.get(str(name).lower())
    if found is None:
        raise ConfigError(f"wrong arch `{name}`, supported: {', '.join(ARCH_CHOICES)}")
    return found


def legacy_precision(values: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """Config files written before ``precision`` carry ``fp16: true|false``: true (mixed precision where
    it helps) is today's ``auto``, false is ``fp32``; an explicit ``precision`` wins."""
    if "fp16" not in values:
        return values
    values = dict(values)
    try:
        fp16 = _to_bool(values.pop("fp16"))
    except ValueError as e:
        raise ConfigError(f"{source + ': ' if source else ''}fp16 must be true or false, got {e.args[0]!r}") from None
    values.setdefault("precision", "auto" if fp16 else "fp32")
    return values


DURATION_UNITS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}
MIN_BUDGET_S = 30.0  # under this, data discovery, the model build and the finish alone do not fit


def parse_duration(value) -> float:
    """``--time``: seconds as a number, or text such as ``90s``, ``4m``, ``2.5min``, ``1h30m``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|m|s)?", text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ConfigError(f"time must be a duration such as 90s, 10m or 1h30m, got {value!r}")
        seconds = sum(float(n) * DURATION_UNITS[u or "s"] for n, u in parts)
    if not seconds >= MIN_BUDGET_S:
        raise ConfigError(f"time must be at least {MIN_BUDGET_S:.0f} s (the run's fixed costs need it), got {value!r}")
    return seconds


def parse_class_weights(value) -> tuple[float, ...]:
    """``"1,5"`` or ``[1, 5]`` -> ``(1.0, 5.0)``; every weight a positive number."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        weights = tuple(float(x) for x in items)
    except (TypeError, ValueError):
        raise ConfigError(f"class_weights must be numbers separated by commas (e.g. 1,5), got {value!r}") from None
    if not weights or not all(w > 0 for w in weights):
        raise ConfigError(f"class_weights must be positive numbers, one per class, got {value!r}")
    return weights


def parse_log(value) -> tuple[str, ...]:
    """``"tensorboard,mlflow"``, ``["mlflow"]`` or ``()`` -> the trackers in order, each once, each known."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = tuple(dict.fromkeys(str(x).strip() for x in items if str(x).strip()))
    unknown = [n for n in names if n not in LOG_CHOICES]
    if unknown:
        raise ConfigError(f"unknown tracker(s) {', '.join(unknown)} for log; valid choices: {', '.join(LOG_CHOICES)}")
    return names


BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


@lru_cache(maxsize=None)
def _field_types(cls) -> dict[str, tuple]:
    """Each field's accepted types, from its annotation (``int | str`` -> (int, str))."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | str)) else (hint,)
        out[name] = tuple(_Names if _is_names(m) else (typing.get_origin(m) or m) for m in members)
    return out


class _Names(tuple):
    """Marks a ``tuple[str, ...]`` field (a list of names, e.g. ``log``), which converts unlike numbers."""


def _is_names(hint) -> bool:
    return typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (str,)


def _to_names(value: Any) -> tuple | str:
    if isinstance(value, str):  # "tensorboard,mlflow": the field's own parser splits it
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(value)


def _number(value: Any) -> float | int:
    """A finite int/float, or a string spelling one (PyYAML reads ``1e2`` as a string); never a bool."""
    number = float(value.strip()) if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError(value)
    return number


def _to_int(value: Any) -> int:
    number = _number(value)
    if not float(number).is_integer():
        raise ValueError(value)
    return int(number)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, int)) and str(value).strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[str(value).strip().lower()]
    raise ValueError(value)


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(value)


def _to_numbers(value: Any) -> tuple | str:
    if isinstance(value, str):  # "1,5": parse_class_weights splits it and says what is wrong
        return value
    if isinstance(value, (list, tuple)):
        return tuple(float(_number(v)) for v in value)
    raise ValueError(value)


def _to_none(value: Any) -> None:
    if value is not None:
        raise ValueError(value)


CONVERTERS = {int: _to_int, float: lambda v: float(_number(v)), bool: _to_bool, str: _to_str, tuple: _to_numbers,
              _Names: _to_names, type(None): _to_none}
TYPE_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text", tuple: "a list of numbers",
              _Names: "a list of names", type(None): "null"}


def coerce_values(cls, values: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """``values`` converted to ``cls``'s field types where unambiguous (``"10"``, ``"1e2"`` and ``8.0`` are
    whole numbers, ``"yes"`` is true); otherwise one ``ConfigError`` naming the key, value and expected type.
    Unknown keys pass through for the caller's own check."""
    types = _field_types(cls)
    out = dict(values)
    for key, value in values.items():
        if key not in types:
            continue
        try:
            out[key] = _convert(types[key], value)
        except ValueError:
            expected = " or ".join(_type_name(k, types[key]) for k in types[key])
            hint = " (YAML reads unquoted yes/no/on/off as true/false: quote it)" \
                if isinstance(value, bool) and str in types[key] else ""
            raise ConfigError(f"{source + ': ' if source else ''}{key} must be {expected}, got {value!r}{hint}") from None
    return out


def _type_name(kind: type, kinds: tuple) -> str:
    if kind is str and {int, float} & set(kinds):
        return "'auto'"  # the one word every number-or-text option (lr, bs, workers) takes
    return TYPE_NAMES[kind]


def _convert(kinds: tuple, value: Any) -> Any:
    """``value`` as the first of ``kinds`` it converts to unambiguously; ValueError when none fits."""
    if set(kinds) <= {str, type(None)} and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a text option given as a number (`name: 2024`)
    for kind in kinds:
        try:
            return CONVERTERS[kind](value)
        except ValueError:
            pass
    raise ValueError(value)


def coerce_fields(config) -> None:
    """Convert a frozen config's fields in place (see ``coerce_values``): one place for every entry point."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for key, value in coerce_values(type(config), values).items():
        if value is not values[key]:
            object.__setattr__(config, key, value)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as e:  # both parsers raise their own error types
        raise ConfigError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in values.items()}


BACKEND_CHOICES = ("auto", "torch", "torch-bf16", "onnx", "onnx-int8", "openvino")  # fastseg.infer.backends builds each
FORMAT_CHOICES = ("png", "coco", "cvat")  # fastseg.infer.prelabels writes coco and cvat
EXPORT_FORMAT_CHOICES = ("safetensors", "onnx", "torchscript")  # fastseg.export.formats writes each
SPLIT_CHOICES = ("valid", "test", "all")  # fastseg.infer.evaluate.select_split picks each
DEMO_IMAGES = 60  # demo-data: enough for the 4 classes to be learnt from scratch in a few CPU minutes
DEMO_SIZE = 128  # demo-data image side: small files, yet shapes large enough to segment
DEMO_SEED = 0  # demo-data: same seed, same files
EVAL_SPLIT = "valid"  # evaluate: images the model was not trained on, which every data set has
EVAL_BS = 4  # evaluate runs whole (padded) images, not predict's tiles or fit's crops: a small batch bounds memory


@dataclass(frozen=True)
class PredictConfig:
    """How ``fastseg predict`` / ``Predictor.predict`` turn images into masks."""

    bs: int = 8  # images (or tiles) per forward pass: amortises per-call overhead, fits CPU RAM at 512 px
    tile: int | None = None  # None: whole image in one pass (padded to /32); else sliding-window side in px
    overlap: float = 0.25  # tile overlap share: enough for blended seams, only ~1.8x the work of no overlap
    tta: bool = False  # flips cost 3x the compute; off unless asked
    probs: bool = False  # per-class float16 .npy files are large (C x H x W); off unless asked
    overlay: bool = False  # <stem>_overlay.jpg for eyeballing; off unless asked
    workers: int | str = "auto"  # decode processes; auto: none on CPUs with <= 4 cores (measured: 1 worker cost
    # ONNX Runtime 13% on 2 cores), else they keep decoding off the cores/GPU that run the model
    backend: str = "auto"  # auto: the fastest backend here whose masks match fp32 on >= 99.5% of validation pixels
    format: str = "png"  # png: the index masks fit/evaluate read; coco/cvat: pre-annotations for a labelling tool
    min_area: int = 0  # off: merging regions under N px into their surroundings changes the model's answer
    fill_holes: bool = False  # off: background enclosed by a region may be real (a lumen, a gap between cells)

    def __post_init__(self) -> None:
        coerce_fields(self)
        if self.bs < 1:
            raise ConfigError(f"bs (batch size) must be at least 1, got {self.bs}")
        if self.tile is not None and (self.tile < STRIDE or self.tile % STRIDE):
            raise ConfigError(f"tile must be a multiple of 32 (the Unet downsamples 5 times), got {self.tile}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.workers != "auto" and not (isinstance(self.workers, int) and self.workers >= 0):
            raise ConfigError(f"workers must be 'auto' or 0 or more, got {self.workers!r}")
        if self.backend not in BACKEND_CHOICES:
            raise ConfigError(f"unknown backend {self.backend!r}; valid choices: {', '.join(BACKEND_CHOICES)}")
        if self.format not in FORMAT_CHOICES:
            raise ConfigError(f"unknown format {self.format!r}; valid choices: {', '.join(FORMAT_CHOICES)}")
        if self.min_area < 0:
            raise ConfigError(f"min_area must be 0 (off) or a number of pixels, got {self.min_area}")

    @property
    def postprocess(self) -> bool:
        """Whether masks are cleaned after the argmax (``fastseg.infer.postprocess``)."""
        return self.min_area > 0 or self.fill_holes
