"""The model card: one typed description of a trained model, the same in every format fastseg writes.

The .pkl (``FastsegInfo.meta``), the bundle's ``fastseg.json``, the ONNX metadata (key ``fastseg``) and the
TorchScript extra file ``fastseg.json`` all hold ``ModelCard.to_dict()``; ``ModelCard.from_dict`` reads any of
them back, including what older fastseg versions wrote: a missing field takes the value those versions implied
(no arch: a Unet; no pad_multiple: 32). The card decides which code runs when a model is loaded, so every field
is checked, and a bad one is one ``ModelError`` line naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import ARCH_CHOICES
from .constants import STRIDE
from .errors import ConfigError, ModelError

__all__ = ["ModelCard", "CARD_VERSION", "REQUIRED", "card_problem"]

CARD_VERSION = 2  # 1: the description before the card (no `version`); 2: any --arch, input rule from the model
FORMAT = "fastseg-bundle/1"  # the tag older fastseg versions wrote (and read nothing from); kept for them
REQUIRED = ("encoder", "codes", "mean", "std")  # what rebuilding and feeding the model needs; the rest has defaults
DERIVED = ("format", "version", "scale")  # written for readers, recomputed on reading
MIN_CLASSES, MAX_CLASSES = 2, 255  # one class is no segmentation; mask value 255 is void
SIZES = (32, 8192)  # training sizes: multiples of 32 (every arch's stride divides it), up to far beyond one GPU image
INPUTS = ("crop", "resize")  # how training fed images: crops at full scale, or whole images resized to `size`
MAX_SIDE_RULE = 1024  # pad_multiple / min_side beyond this are no encoder's: a corrupt card
SCALE = "inputs are RGB scaled to 0-1, then (x - mean) / std"


@dataclass(frozen=True)
class ModelCard:
    """What a model is, how to feed it, and how it was made. Fields the code acts on are typed and checked;
    fields a newer fastseg (or another tool) added are kept in ``extra`` and written back unchanged."""

    encoder: str  # SMP encoder name, or tu-<timm model>
    codes: tuple[str, ...]  # class names, in output-channel order
    mean: tuple[float, ...]  # per input channel, for inputs scaled to 0-1
    std: tuple[float, ...]
    arch: str = "Unet"  # SMP architecture; every model before --arch was a Unet
    in_channels: int = 3  # RGB
    size: int | None = None  # training crop side
    input: str = "crop"  # crop: trained on full-scale crops; resize: on whole images resized to `size`
    pad_multiple: int = STRIDE  # inputs are padded to a multiple of this (the encoder's output stride)
    min_side: int = STRIDE  # and to at least this side
    void_code: str | None = None
    ignore_index: int | None = None
    scaling: dict | None = None  # how 16-bit / float images were scaled to 0-255 (fastseg.data.images.Scaling)
    weights: dict | None = None  # the encoder weights training started from
    split: dict | None = None  # valid_pct and seed: `fastseg evaluate` rebuilds the same split
    data_options: dict | None = None  # layout, void, ignore_index, colour table: masks read as in training
    data: str | None = None  # the training data folder (calibration images for the int8 export)
    images: dict | None = None  # images per split
    config: dict | None = None  # the FitConfig the model was trained with
    precision: dict | None = None
    lr: float | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    final: dict | None = None  # validation scores of the exported epoch (centre crops)
    run: str | None = None  # the run folder
    agreement: dict | None = None  # reduced-precision backends' agreement with fp32 (fastseg.infer.agreement)
    versions: dict | None = None  # package versions at export
    pkl_sha256: str | None = None  # bundle only: the .pkl written with it
    opset: int | None = None  # ONNX only
    quantization: dict | None = None  # int8 ONNX only
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.codes)

    def fit_side(self, side: int) -> int:
        """The smallest input side the model takes that is >= ``side`` (what to pad to)."""
        return max(-(-side // self.pad_multiple) * self.pad_multiple, self.min_side)

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-safe: what every format stores (unset fields left out, ``extra`` kept)."""
        out = {**self.extra, "format": FORMAT, "version": CARD_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        out["scale"] = SCALE
        return json.loads(json.dumps(out, default=str))  # anything JSON cannot hold, as text

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, values: Mapping, where: Any = "model card") -> "ModelCard":
        """The card in ``values`` (any fastseg version's), checked; else one ``ModelError`` naming ``where``."""
        if not isinstance(values, Mapping):
            raise ModelError(f"{where}: the model description is not a mapping (re-export the model with "
                             "`fastseg export`)")
        version = values.get("version", 1)
        if _is_int(version) and version > CARD_VERSION:
            raise ModelError(f"{where}: model card version {reprlib.repr(version)} is newer than this fastseg reads "
                             f"({CARD_VERSION}); upgrade fastseg (pip install -U fastseg)")
        missing = [k for k in REQUIRED if k not in values]
        problem = (f"missing {', '.join(missing)}" if missing else None) or card_problem(values)
        if problem:
            raise ModelError(f"{where}: {problem} (re-export the model with `fastseg export`)")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: tuple(v) if isinstance(v, list) and k in ("codes", "mean", "std") else v
                  for k, v in values.items() if k in known}
        extra = {k: v for k, v in values.items() if k not in known and k not in DERIVED}
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json(cls, text: str | None, where: Any = "model card") -> "ModelCard":
        try:
            values = json.loads(text or "")
        except json.JSONDecodeError as e:
            raise ModelError(f"{where}: the model description is not valid JSON ({e}); re-export the model with "
                             "`fastseg export`") from None
        return cls.from_dict(values, where)

    @classmethod
    def from_meta(cls, meta: Mapping, codes, mean, std, model=None, where: Any = "model") -> "ModelCard":
        """The card of a model from the facts recorded with it (a learner's meta, an older card), its classes
        and normalisation, and, given the torch ``model``, the input rule read off the model itself."""
        from .model import input_rule

        mean, std = _floats(mean), _floats(std)
        values = {"in_channels": len(mean), **meta, "codes": list(codes), "mean": mean, "std": std}
        rule = input_rule(model) if model is not None else None
        if rule is not None:
            values.update(pad_multiple=rule.multiple, min_side=rule.minimum)
        return cls.from_dict(values, where)


def _floats(values) -> list[float]:
    """A tensor, array or sequence of numbers as a flat list of floats."""
    if hasattr(values, "flatten"):
        values = values.flatten().tolist()
    return [float(v) for v in values]


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


TYPES = {  # field -> (check, what it must be), for the fields without a check of their own
    **dict.fromkeys(("void_code", "data", "run", "pkl_sha256"), (lambda v: isinstance(v, str), "text")),
    **dict.fromkeys(("scaling", "weights", "split", "data_options", "images", "config", "precision", "final",
                     "agreement", "versions", "quantization"), (lambda v: isinstance(v, dict), "a mapping")),
    **dict.fromkeys(("version", "ignore_index", "epochs", "best_epoch", "opset"), (_is_int, "a whole number")),
    "lr": (_is_number, "a number"),
}


def card_problem(values: Mapping) -> str | None:
    """What is wrong with the description ``values`` (with the ``REQUIRED`` keys), or None."""
    for key, (ok, what) in TYPES.items():
        if values.get(key) is not None and not ok(values[key]):
            return f"{key} must be {what}, got {reprlib.repr(values[key])}"
    return (_model_problem(values) or _codes_problem(values["codes"]) or _stats_problem(values)
            or _input_problem(values))


def _model_problem(values: Mapping) -> str | None:
    from .model import check_encoder

    arch = values.get("arch", "Unet")
    if not isinstance(arch, str) or arch not in ARCH_CHOICES:
        return f"unsupported arch {reprlib.repr(arch)}; supported: {', '.join(ARCH_CHOICES)}"
    if not isinstance(values["encoder"], str):
        return f"encoder must be an encoder name, got {reprlib.repr(values['encoder'])}"
    try:
        check_encoder(values["encoder"])
    except ConfigError as e:
        return str(e)
    return None


def _codes_problem(codes) -> str | None:
    if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) for c in codes):
        return f"codes must be a list of class names, got {reprlib.repr(codes)}"
    if not MIN_CLASSES <= len(codes) <= MAX_CLASSES:
        return f"codes must name {MIN_CLASSES} to {MAX_CLASSES} classes, got {len(codes)}"
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        return f"codes must be unique, got {', '.join(map(repr, repeated))} more than once"
    return None


def _stats_problem(values: Mapping) -> str | None:
    channels = values.get("in_channels", 3)
    if not _is_int(channels) or not 1 <= channels <= 64:
        return f"in_channels must be a whole number from 1 to 64, got {reprlib.repr(channels)}"
    each = "one per RGB channel" if channels == 3 else "one per input channel"
    for key in ("mean", "std"):
        v = values[key]
        if not isinstance(v, (list, tuple)) or len(v) != channels or not all(_is_number(x) for x in v):
            return f"{key} must be a list of {channels} numbers ({each}), got {reprlib.repr(v)}"
    if not all(x > 0 for x in values["std"]):
        return f"std must be positive, got {list(values['std'])}"
    return None


def _input_problem(values: Mapping) -> str | None:
    size, kind = values.get("size"), values.get("input", "crop")
    if not isinstance(kind, str) or kind not in INPUTS:
        return f"input must be one of {', '.join(INPUTS)}, got {reprlib.repr(kind)}"
    for key in ("pad_multiple", "min_side"):
        v = values.get(key, STRIDE)
        if not (_is_int(v) and 1 <= v <= MAX_SIDE_RULE):
            return f"{key} must be a whole number from 1 to {MAX_SIDE_RULE}, got {reprlib.repr(v)}"
    if size is None and kind == "crop":  # only resized inputs need the size at prediction time
        return None
    if not (_is_int(size) and SIZES[0] <= size <= SIZES[1] and size % STRIDE == 0):
        return f"size must be a multiple of 32 from {SIZES[0]} to {SIZES[1]}, got {reprlib.repr(size)}"
    return None
