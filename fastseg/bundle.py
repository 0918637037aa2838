"""The safe bundle: a folder with ``model.safetensors`` (weights) and ``fastseg.json`` (everything else).

A fastai ``.pkl`` is a pickle: loading it runs whatever code the file names, and it only loads with
the fastai/torch/SMP versions (and the fastseg code) it was written with. The bundle holds only
tensors (safetensors: a JSON header plus raw bytes) and plain JSON, so loading it executes nothing
from the file; the Unet is rebuilt from the architecture named in the JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .errors import ModelError
from .io import atomic_dir, atomic_write_bytes

__all__ = ["BUNDLE_FORMAT", "WEIGHTS_FILE", "INFO_FILE", "bundle_path_for", "is_bundle", "model_info", "write_bundle",
           "read_info", "read_bundle"]

BUNDLE_FORMAT = "fastseg-bundle/1"
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "fastseg.json"
REQUIRED = ("arch", "encoder", "codes", "mean", "std")
ARCHS = ("Unet",)


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
    info.update(format=BUNDLE_FORMAT, arch=meta.get("arch", "Unet"), codes=list(codes),
                mean=[float(v) for v in torch.as_tensor(mean).flatten()[:3]],
                std=[float(v) for v in torch.as_tensor(std).flatten()[:3]],
                scale="inputs are RGB scaled to 0-1, then (x - mean) / std", pad_multiple=32,
                versions=_versions())
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
    if info["arch"] not in ARCHS:
        raise ModelError(f"{f}: unsupported arch {info['arch']!r}; supported: {', '.join(ARCHS)}")
    return info


def read_bundle(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model from a bundle folder (or a file in it) without unpickling anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import build_model

    info = read_info(path)
    weights = _folder(path) / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device="cpu")
    except (OSError, SafetensorError) as e:
        raise ModelError(f"{weights}: cannot read weights ({e.__class__.__name__}: {e}); re-export the bundle") from None
    model, _ = build_model(info["encoder"], len(info["codes"]), "none")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{weights}: weights do not fit {info['arch']}/{info['encoder']} with {len(info['codes'])} "
                         f"classes ({str(e).splitlines()[0]})") from None
    return model.eval(), info
