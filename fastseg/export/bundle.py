"""The safe bundle: a folder with ``model.safetensors`` (weights), ``fastseg.json`` (the model card), and for
other tools SMP's ``config.json`` and a ``README.md`` model card (``fastseg.export.hub``, ``fastseg.export.readme``).

A fastai ``.pkl`` is a pickle: loading it runs whatever code the file names, and it only loads with
the fastai/torch/SMP versions (and the fastseg code) it was written with. The bundle holds only
tensors (safetensors: a JSON header plus raw bytes) and plain JSON, so loading it executes nothing
from the file; the model is rebuilt from the architecture named in the card. A folder written by SMP's
``save_pretrained`` (config.json + model.safetensors, no fastseg.json) loads too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..card import FORMAT, REQUIRED, ModelCard
from ..config import Notify, silent
from ..errors import ModelError
from ..io import atomic_dir, atomic_write_bytes
from .hub import README, SMP_CONFIG, is_smp_folder, smp_card, smp_config, smp_model

__all__ = ["BUNDLE_FORMAT", "WEIGHTS_FILE", "INFO_FILE", "bundle_path_for", "is_bundle", "versions", "write_bundle",
           "read_info", "read_card", "read_bundle"]

BUNDLE_FORMAT = FORMAT
WEIGHTS_FILE = "model.safetensors"  # the name and keys (the model's state dict) SMP's save_pretrained uses
INFO_FILE = "fastseg.json"


def bundle_path_for(pkl: str | os.PathLike) -> Path:
    """Where ``fit`` puts the bundle for an export: ``exports/model.pkl`` -> ``exports/model/``."""
    pkl = Path(pkl)
    return pkl.with_suffix("") if pkl.suffix else pkl.with_name(pkl.name + "_bundle")


def is_bundle(path: str | os.PathLike) -> bool:
    """A fastseg bundle folder (or a file in one), or a folder SMP's ``save_pretrained`` wrote."""
    p = Path(path)
    if p.is_file() and p.name in (INFO_FILE, WEIGHTS_FILE, SMP_CONFIG):
        p = p.parent
    return p.is_dir() and ((p / INFO_FILE).is_file() or is_smp_folder(p))


def versions() -> dict[str, str]:
    """The versions of the packages that wrote a model (recorded in its card at export)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("fastseg", "torch", "segmentation-models-pytorch", "timm", "fastai", "safetensors"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def write_bundle(model: torch.nn.Module, card: ModelCard | dict, dest: str | os.PathLike, force: bool = False) -> Path:
    """Write the bundle folder at ``dest`` all at once (a temporary folder renamed into place): weights, the
    card (or its dict, as ``Predictor.info()`` gives) as fastseg.json, SMP's config.json and the README.md."""
    from safetensors.torch import save_file

    from .readme import readme_text

    card = card if isinstance(card, ModelCard) else ModelCard.from_dict(card, "the model card")
    dest = Path(dest).absolute()
    if dest.exists() and not force:
        raise ModelError(f"{dest}: already exists (use --force to overwrite)")
    if dest.exists() and not (dest / INFO_FILE).is_file():
        raise ModelError(f"{dest}: exists and is not a fastseg bundle (choose another --out)")
    state = {k: v.detach().cpu().float().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    with atomic_dir(dest) as tmp:
        # "pt", as Hugging Face writes it: loaders that check the tag take the file
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "fastseg": BUNDLE_FORMAT})
        atomic_write_bytes(tmp / INFO_FILE, (json.dumps(card.to_dict(), indent=2) + "\n").encode())
        atomic_write_bytes(tmp / SMP_CONFIG, (json.dumps(smp_config(model, card), indent=2) + "\n").encode())
        atomic_write_bytes(tmp / README, readme_text(card, dest.name).encode())
    return dest


def _folder(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.parent if p.is_file() else p


def read_card(path: str | os.PathLike) -> ModelCard:
    """The bundle's ``fastseg.json`` as a checked ``ModelCard``."""
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
    return ModelCard.from_dict(info, f)


def read_info(path: str | os.PathLike) -> dict:
    """The bundle's card as a dict (``read_card(path).to_dict()``)."""
    return read_card(path).to_dict()


def read_bundle(path: str | os.PathLike, classes: list[str] | None = None,
                notify: Notify = silent) -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model from a bundle folder (or a file in it) without unpickling anything. A folder SMP's
    ``save_pretrained`` wrote takes its class names from ``classes`` (or its README)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..model import build_model

    folder = _folder(path)
    fastseg = (folder / INFO_FILE).is_file()
    card = read_card(folder) if fastseg else smp_card(folder, classes, notify)
    if fastseg and classes is not None and list(classes) != list(card.codes):
        raise ModelError(f"{folder}: the model names its classes {', '.join(card.codes)}; drop --classes")
    weights = folder / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device="cpu")
    except (OSError, SafetensorError) as e:
        raise ModelError(f"{weights}: cannot read weights ({e.__class__.__name__}: {e}); re-export the bundle") from None
    model = build_model(card.encoder, card.n_classes, "none", arch=card.arch,
                        in_channels=card.in_channels)[0] if fastseg else smp_model(folder)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{weights}: weights do not fit {card.arch}/{card.encoder} with {card.n_classes} "
                         f"classes ({str(e).splitlines()[0]})") from None
    return model.eval(), card
