"""Reading a fastseg model as a torch module and its model card: a bundle folder, a fastai ``.pkl``, TorchScript.

``fastseg.export.formats`` converts what this reads; ``fastseg.infer.predictor.load`` runs it (and opens
``.onnx`` files itself: they hold no torch module). Only a ``.pkl`` is unpickled; a file of any other kind
is refused unread.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch

from ..card import REQUIRED, ModelCard
from ..config import Notify, silent
from ..errors import ConfigError, ModelError
from .bundle import bundle_path_for, is_bundle, read_bundle

__all__ = ["MODEL_KINDS", "model_kind", "read_model", "card_from_text"]

MODEL_KINDS = ("a bundle folder (fastseg.json + model.safetensors, or SMP's config.json + model.safetensors), .onnx, "
               "TorchScript .pt/.ts or a fastai .pkl")


def model_kind(path: Path, classes: Sequence[str] | None = None) -> str:
    """``"bundle"``, ``"onnx"``, ``"pkl"`` or ``"torchscript"``: what ``path`` holds, else a ``ModelError`` saying
    what fastseg loads. ``classes`` (an SMP folder's class names) is refused for every other kind."""
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if is_bundle(path):
        return "bundle"
    if path.is_dir():
        raise ModelError(f"{path}: folder without fastseg.json (expected {MODEL_KINDS})")
    if classes is not None:
        raise ConfigError(f"{path}: --classes names the outputs of an SMP model folder only; this model names its own")
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".pkl"):
        return suffix[1:]
    if _is_torchscript(path):  # by content, whatever the suffix (.pt, .ts, .torchscript, ...)
        return "torchscript"
    raise ModelError(_not_a_model(path))


def read_model(path: Path, kind: str, notify: Notify = silent,
               classes: Sequence[str] | None = None) -> tuple[torch.nn.Module, ModelCard]:
    """The torch module and card of a ``model_kind`` ``kind`` model; a ``.pkl`` is unpickled after ``notify``
    says so."""
    if kind == "bundle":
        return read_bundle(path, list(classes) if classes is not None else None, notify)
    if kind == "pkl":
        from .formats import learner_card

        notify(_pickle_warning(path))
        learn = _read_learner(path)
        return learn.model, learner_card(learn)
    if kind == "torchscript":
        return _read_torchscript(path)
    raise ModelError(f"{path}: has no torch model to export")


def _is_torchscript(path: Path) -> bool:
    """A zip archive with TorchScript's ``code/`` folder and ``constants.pkl`` (torch.save archives have neither)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    parts = [n.split("/", 1) for n in names if "/" in n]
    return any(rest.startswith("code/") for _, rest in parts) and any(rest == "constants.pkl" for _, rest in parts)


def _pickle_warning(path: Path) -> str:
    bundle = bundle_path_for(path)
    safe = (f"the bundle {bundle} loads without running any" if is_bundle(bundle) else
            f"`fastseg export {path} --format safetensors` writes a bundle that loads without running any")
    return f"Warning: {path} is a pickle: loading it runs code stored in the file (load only files you trust); {safe}"


def _not_a_model(path: Path) -> str:
    """Why ``path`` is refused, and what to load instead (a run's checkpoint: the run's exported model)."""
    import json

    config = path.parent / "config.json"
    if path.suffix.lower() == ".pth" and config.is_file():
        try:
            export = Path(json.loads(config.read_text())["export"])
        except (OSError, ValueError, KeyError, TypeError):
            export = None
        if export is not None:
            bundle = bundle_path_for(export)
            use = (f"use the run's exported model {bundle}" if is_bundle(bundle) else
                   f"use the run's exported model {export}" if export.is_file() else
                   f"finish the run (`fastseg fit --resume {path.parent}`) to export its model")
            return f"{path}: a training checkpoint, not a model fastseg loads; {use}"
    why = " (a .pth/.pt checkpoint holds weights, not the model)" if path.suffix.lower() in (".pth", ".pt") else ""
    return f"{path}: not a model fastseg loads{why}; expected {MODEL_KINDS}"


def _read_learner(path: Path):
    from fastai.learner import load_learner

    try:
        with warnings.catch_warnings():  # fastai's pickle notice: the caller's notify has said it already
            warnings.filterwarnings("ignore", message="load_learner` uses Python's insecure pickle")
            learn = load_learner(path, cpu=not torch.cuda.is_available())
    except Exception as e:
        raise ModelError(f"{path}: not a readable fastai export ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not (hasattr(learn, "dls") and hasattr(learn, "model")):
        raise ModelError(f"{path}: a pickle, but not a fastai Learner export (expected {MODEL_KINDS})")
    return learn


def card_from_text(text: str | None, path: Path) -> ModelCard:
    """The card stored as JSON text in an ONNX or TorchScript file (``path`` names it in errors)."""
    import json

    try:
        info = json.loads(text or "")
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict) or any(k not in info for k in REQUIRED):
        raise ModelError(f"{path}: has no fastseg metadata (export it with `fastseg export`)")
    return ModelCard.from_dict(info, path)


def _read_torchscript(path: Path) -> tuple[torch.nn.Module, ModelCard]:
    extra = {"fastseg.json": ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch raises RuntimeError/ValueError/... for non-TorchScript files
        raise ModelError(f"{path}: not a readable TorchScript model ({e.__class__.__name__})") from None
    return module, card_from_text(extra["fastseg.json"], path)
