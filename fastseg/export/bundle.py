"""The safe bundle: a folder with ``model.safetensors`` (weights) and ``fastseg.json`` (everything else).

A fastai ``.pkl`` is a pickle: loading it runs whatever code the file names, and it only loads with
the fastai/torch/SMP versions (and the fastseg code) it was written with. The bundle holds only
tensors (safetensors: a JSON header plus raw bytes) and plain JSON, so loading it executes nothing
from the file; the Unet is rebuilt from the architecture named in the JSON.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import ConfigError, ModelError
from ..io import atomic_dir, atomic_write_bytes, default_mode
from ..model import check_encoder

__all__ = ["BUNDLE_FORMAT", "WEIGHTS_FILE", "INFO_FILE", "bundle_path_for", "is_bundle", "model_info", "write_bundle",
           "read_info", "check_info", "read_bundle"]

BUNDLE_FORMAT = "fastseg-bundle/1"
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "fastseg.json"
REQUIRED = ("arch", "encoder", "codes", "mean", "std")
ARCHS = ("Unet",)
CHANNELS = 3  # models that do not say otherwise (written before "channels" was stored) take RGB input
MAX_CHANNELS = 16  # fastseg.data.channels.MAX_CHANNELS: the most a data set's images can have
MIN_CLASSES, MAX_CLASSES = 2, 255  # one class is no segmentation; mask value 255 is void
SIZES = (32, 8192)  # training sizes: the Unet's stride up to far beyond any GPU's memory for one image
INPUTS = ("crop", "resize")  # how training fed images: crops at full scale, or whole images resized to `size`


def bundle_path_for(pkl: str | os.PathLike) -> Path:
    """Where ``fit`` puts the bundle for an export: ``exports/model.pkl`` -> ``exports/model/``."""
    pkl = Path(pkl)
    return pkl.with_suffix("") if pkl.suffix else pkl.with_name(pkl.name + "_bundle")


def is_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p.is_dir() and (p / INFO_FILE).is_file()) or (p.is_file() and p.name in (INFO_FILE, WEIGHTS_FILE))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("fastseg", "torch", "segmentation-models-pytorch", "timm", "fastai", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def model_info(meta: dict, codes: list[str], mean, std) -> dict:
    """The JSON-safe description of a model: the learner's meta plus normalisation stats and versions."""
    info = json.loads(json.dumps(meta, default=str))  # drop anything JSON cannot hold (as strings)
    mean, std = ([float(v) for v in torch.as_tensor(s).flatten()] for s in (mean, std))
    rgb = not (meta.get("scaling") or {}).get("channels")
    info.update(format=BUNDLE_FORMAT, arch=meta.get("arch", "Unet"), codes=list(codes), mean=mean, std=std,
                channels=len(mean), pad_multiple=32, versions=_versions(),
                scale="inputs are RGB scaled to 0-1, then (x - mean) / std" if rgb else
                f"inputs are the image's {len(mean)} channels scaled to 0-1 by `scaling`, then (x - mean) / std")
    return info


def write_bundle(model: torch.nn.Module, info: dict, dest: str | os.PathLike, force: bool = False) -> Path:
    """Write the bundle folder at ``dest`` all at once (a temporary folder renamed into place)."""
    from safetensors.torch import save_file

    dest = Path(dest).absolute()
    if dest.exists() and not force:
        raise ModelError(f"{dest}: already exists (use --force to overwrite)")
    if dest.exists() and not is_bundle(dest):
        raise ModelError(f"{dest}: exists and is not a fastseg bundle (choose another --out)")
    state = {k: v.detach().cpu().float().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_dir(dest) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": BUNDLE_FORMAT})
        atomic_write_bytes(tmp / INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    return dest


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.parent if p.is_file() else p


def read_info(path: str | os.PathLike) -> dict:
    """The bundle's ``fastseg.json``, checked for the fields needed to rebuild and run the model."""
    f = _folder(path) / INFO_FILE
    try:
        info = json.loads(f.read_text())
    except OSError as e:
        raise ModelError(f"{f}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{f}: not valid JSON ({e}); re-export the bundle with `fastseg export`") from None
    missing = [k for k in REQUIRED if k not in info] if isinstance(info, dict) else list(REQUIRED)
    if missing:
        raise ModelError(f"{f}: missing {', '.join(missing)} (not a fastseg bundle; re-export with `fastseg export`)")
    return check_info(info, f)


def check_info(info: dict, where) -> dict:
    """``info`` (with the ``REQUIRED`` keys) if it describes a model fastseg can rebuild and run; else one
    ``ModelError`` line naming the field. The JSON decides which code runs, so nothing is taken on trust."""
    problem = _model_problem(info) or _codes_problem(info["codes"]) or _stats_problem(info) or _input_problem(info)
    if problem:
        raise ModelError(f"{where}: {problem} (re-export the model with `fastseg export`)")
    return info


def _model_problem(info: dict) -> str | None:
    if not isinstance(info["arch"], str) or info["arch"] not in ARCHS:
        return f"unsupported arch {reprlib.repr(info['arch'])}; supported: {', '.join(ARCHS)}"
    if not isinstance(info["encoder"], str):
        return f"encoder must be an encoder name, got {reprlib.repr(info['encoder'])}"
    try:
        check_encoder(info["encoder"])
    except ConfigError as e:
        return str(e)
    return None


def _codes_problem(codes) -> str | None:
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        return f"codes must be a list of class names, got {reprlib.repr(codes)}"
    if not MIN_CLASSES <= len(codes) <= MAX_CLASSES:
        return f"codes must name {MIN_CLASSES} to {MAX_CLASSES} classes, got {len(codes)}"
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if repeated:
        return f"codes must be unique, got {', '.join(map(repr, repeated))} more than once"
    return None


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _stats_problem(info: dict) -> str | None:
    n = info.get("channels", CHANNELS)
    if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_CHANNELS):
        return f"channels must be a whole number from 1 to {MAX_CHANNELS}, got {reprlib.repr(n)}"
    for key in ("mean", "std"):
        v = info[key]
        if not isinstance(v, list) or len(v) != n or not all(_is_number(x) for x in v):
            per = "RGB channel" if n == 3 else "input channel"
            return f"{key} must be a list of {n} numbers (one per {per}), got {reprlib.repr(v)}"
    if not all(x > 0 for x in info["std"]):
        return f"std must be positive, got {info['std']}"
    return None


def _input_problem(info: dict) -> str | None:
    size, kind = info.get("size"), info.get("input", "crop")
    if not isinstance(kind, str) or kind not in INPUTS:
        return f"input must be one of {', '.join(INPUTS)}, got {reprlib.repr(kind)}"
    if size is None and kind == "crop":  # only resized inputs need the size at prediction time
        return None
    if not (isinstance(size, int) and not isinstance(size, bool) and SIZES[0] <= size <= SIZES[1] and size % 32 == 0):
        return f"size must be a multiple of 32 from {SIZES[0]} to {SIZES[1]}, got {reprlib.repr(size)}"
    return None


def read_bundle(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from a bundle folder (or a file in it) without unpickling anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..model import build_model

    info = read_info(path)
    weights = _folder(path) / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device="cpu")
    except (OSError, SafetensorError) as e:
        raise ModelError(f"{weights}: cannot read weights ({e.__class__.__name__}: {e}); re-export the bundle") from None
    model, _ = build_model(info["encoder"], len(info["codes"]), "none", in_channels=info.get("channels", CHANNELS))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{weights}: weights do not fit {info['arch']}/{info['encoder']} with {len(info['codes'])} "
                         f"classes ({str(e).splitlines()[0]})") from None
    return model.eval(), info
