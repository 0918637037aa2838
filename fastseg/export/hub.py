"""The bundle in the Hugging Face layout: SMP's ``config.json`` and a ``README.md`` model card.

With ``config.json`` (SMP's hub-mixin layout: the init arguments plus ``_model_class``) beside
``model.safetensors`` (the model's own state-dict keys, as SMP's ``save_pretrained`` writes them),
``segmentation_models_pytorch.from_pretrained(bundle)`` rebuilds the model, and ``huggingface-cli upload``
publishes the folder as it is. The other way round, a folder written by SMP's ``save_pretrained`` loads in
fastseg: its card is made here from ``config.json``, the README's ``classes`` (or the caller's) and the
encoder's pretrained normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..card import ModelCard
from ..config import Notify, silent
from ..errors import ConfigError, ModelError

__all__ = ["SMP_CONFIG", "README", "TAGS", "smp_config", "is_smp_folder", "smp_card", "smp_model"]

SMP_CONFIG = "config.json"
README = "README.md"
TAGS = ("fastseg", "segmentation-models-pytorch", "semantic-segmentation", "pytorch")


def smp_config(model: torch.nn.Module, card: ModelCard) -> dict:
    """SMP's ``config.json``: the model's recorded init arguments (SMP's hub mixin keeps them), else the
    card's; ``encoder_weights`` null, so loading never downloads ImageNet weights it would overwrite."""
    config = dict(getattr(model, "config", None) or {}) if not isinstance(model, torch.jit.ScriptModule) else {}
    config = config or {"encoder_name": card.encoder, "in_channels": card.in_channels, "classes": card.n_classes}
    config.update(_model_class=card.arch, encoder_weights=None)
    return json.loads(json.dumps(config, default=str))


def is_smp_folder(folder: Path) -> bool:
    """A folder SMP's ``save_pretrained`` wrote: ``config.json`` naming a model class, and ``model.safetensors``."""
    from .bundle import WEIGHTS_FILE

    if not ((folder / SMP_CONFIG).is_file() and (folder / WEIGHTS_FILE).is_file()):
        return False
    try:
        return "_model_class" in json.loads((folder / SMP_CONFIG).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _read_config(folder: Path) -> dict:
    f = folder / SMP_CONFIG
    try:
        config = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{f}: cannot read SMP's model config ({e})") from None
    if not isinstance(config, dict) or not isinstance(config.get("_model_class"), str):
        raise ModelError(f"{f}: not SMP's model config (no _model_class)")
    return config


def _readme_classes(folder: Path) -> list | None:
    """The ``classes`` list of the README's YAML front matter (fastseg's cards have one), if any."""
    from huggingface_hub import metadata_load

    try:
        meta = metadata_load(folder / README) if (folder / README).is_file() else None
    except Exception:  # a README without valid front matter names no classes
        return None
    classes = (meta or {}).get("classes")
    return [str(c) for c in classes] if isinstance(classes, list) else None


def _codes(folder: Path, n: int, classes: list[str] | None, notify: Notify) -> list[str]:
    named = _readme_classes(folder)
    if classes is not None and named is not None and list(classes) != named:
        raise ConfigError(f"{folder}: its model card names the classes {', '.join(named)}; drop --classes")
    codes = list(classes) if classes is not None else named
    if codes is None:
        notify(f"{folder}: the model names no classes; calling its {n} outputs class0..class{n - 1} "
               "(--classes a,b,... to name them)")
        return [f"class{i}" for i in range(n)]
    if len(codes) != n:
        raise ConfigError(f"{folder}: the model has {n} outputs, but {len(codes)} class names were given "
                          f"({', '.join(codes)})")
    return codes


def smp_card(folder: Path, classes: list[str] | None = None, notify: Notify = silent) -> ModelCard:
    """The card of a folder SMP's ``save_pretrained`` wrote; normalisation from the encoder's pretrained settings."""
    import segmentation_models_pytorch as smp

    config = _read_config(folder)
    encoder, n = config.get("encoder_name", "resnet34"), config.get("classes", 1)  # SMP's defaults
    if not isinstance(n, int) or n < 2:
        raise ModelError(f"{folder / SMP_CONFIG}: classes must be 2 or more for semantic segmentation, got {n!r}")
    try:
        params = smp.encoders.get_preprocessing_params(encoder)
    except Exception:  # unknown encoder or no pretrained settings: the card check below names the problem
        params = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    notify(f"{folder}: no fastseg.json; inputs normalised with {encoder}'s ImageNet mean and std (as SMP's "
           "get_preprocessing_params)")
    values = {"arch": config["_model_class"], "encoder": encoder, "in_channels": config.get("in_channels", 3),
              "codes": _codes(folder, n, classes, notify), "mean": list(params["mean"]), "std": list(params["std"])}
    return ModelCard.from_dict(values, folder / SMP_CONFIG)


def smp_model(folder: Path) -> torch.nn.Module:
    """The model SMP's ``config.json`` describes, with random weights (``encoder_weights`` forced off: no download)."""
    import warnings

    import segmentation_models_pytorch as smp

    config = _read_config(folder)
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return smp.create_model(config["_model_class"], **{**kwargs, "encoder_weights": None})
        except Exception as e:  # SMP raises KeyError/ValueError/TypeError for configs it cannot build
            raise ModelError(f"{folder / SMP_CONFIG}: SMP cannot build this model ({e.__class__.__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
