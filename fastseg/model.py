"""Building the SMP Unet and loading its encoder weights: imagenet (hub or cache), none, or a local file.

SMP would fetch ImageNet weights from the Hugging Face hub itself, retrying for half a minute when
offline. fastseg asks the local cache first, then checks in a fraction of a second whether the hub
can be reached at all, and otherwise reports ``WeightsInfo(loaded=False)`` so training continues
from random initialisation with one clear warning.
"""

from __future__ import annotations

import pickle
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from .errors import ConfigError, WeightsError

__all__ = ["WeightsInfo", "build_model", "check_encoder", "encoder_names", "pretrained_source", "fetch_pretrained", "load_encoder_file",
           "input_channels", "adapt_first_conv"]


@dataclass(frozen=True)
class WeightsInfo:
    requested: str  # "imagenet", "none" or a file path
    loaded: bool  # False: random initialisation
    source: str  # where the weights came from, or why none were loaded


def encoder_names() -> list[str]:
    import segmentation_models_pytorch as smp

    return smp.encoders.get_encoder_names()


def check_encoder(name: str) -> None:
    """Raise ``ConfigError`` listing the choices unless ``name`` is an SMP encoder or an exact ``tu-<timm model>``."""
    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):  # an exact name (list_models would also match a pattern like `eff*`)
            raise ConfigError(f"unknown timm encoder `{name[3:]}` (see timm.list_models())")
        return
    names = encoder_names()
    if name not in names:
        raise ConfigError(f"wrong encoder name `{name}`, supported encoders: {', '.join(names)} (or tu-<timm model>)")


def pretrained_source(encoder: str, weights: str = "imagenet") -> tuple[str, str]:
    """(hub repo id, revision) that SMP uses for ``encoder``'s ``weights``."""
    import segmentation_models_pytorch as smp

    settings = smp.encoders.encoders[encoder]["pretrained_settings"]
    if weights not in settings:
        raise ConfigError(f"encoder `{encoder}` has no `{weights}` weights; available: {', '.join(settings)}")
    return settings[weights]["repo_id"], settings[weights]["revision"]


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Can a TCP connection to the hub (or the configured proxy) open within ``timeout``?"""
    import os

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch_pretrained(encoder: str, weights: str = "imagenet") -> Path | None:
    """Path of the encoder's pretrained ``model.safetensors``: the cached copy, else a download.

    Returns None when neither is possible (offline and not cached), quickly.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, revision = pretrained_source(encoder, weights)
    try:
        return Path(hf_hub_download(repo_id, "model.safetensors", revision=revision, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if not _hub_reachable():
        return None
    try:
        hf_hub_download(repo_id, "config.json", revision=revision)
        return Path(hf_hub_download(repo_id, "model.safetensors", revision=revision))
    except Exception:  # any network or hub failure means "not available"; the caller warns
        return None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        sd = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain types only: runs no code
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) and str(e).startswith("Weights only load failed"):
            raise WeightsError(f"{path}: refused: it pickles objects other than tensors, and loading them would run "
                               "code from the file (save a state dict of tensors, or use .safetensors)") from None
        raise WeightsError(f"{path}: cannot read weights ({e.__class__.__name__}; expected a .pth or .safetensors state dict)") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return sd


def input_channels(model: torch.nn.Module) -> int:
    """The channels a model takes: its first convolution's inputs (3, as RGB models, when it has none). Read
    from the weights, so TorchScript modules answer too."""
    return next((int(p.shape[1]) for p in model.parameters() if p.ndim == 4), 3)


def adapt_first_conv(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """An RGB first convolution's weights for ``channels`` inputs, as SMP's ``patch_first_conv`` makes them when
    it loads pretrained weights itself: 1 channel sums the RGB filters (a grey image repeated gives the same
    response); more repeat R, G, B, R, ... scaled by 3 / channels so the summed response keeps its size."""
    if channels == 1:
        return weight.sum(1, keepdim=True)
    idx = torch.arange(channels) % weight.shape[1]
    return weight[:, idx] * (weight.shape[1] / channels)


def _first_conv_key(own: dict, sd: dict) -> str | None:
    """The one key whose weights differ from the model's only in their input channels (RGB -> N), else None."""
    keys = [k for k, v in own.items() if k in sd and v.ndim == 4 and sd[k].ndim == 4 and sd[k].shape[1] == 3
            and v.shape[1] != 3 and v.shape[:1] + v.shape[2:] == sd[k].shape[:1] + sd[k].shape[2:]]
    return keys[0] if len(keys) == 1 else None


def load_encoder_file(encoder: torch.nn.Module, path: str | Path) -> None:
    """Load a local encoder state dict (a full Unet state dict with ``encoder.`` keys also works); RGB weights
    into an encoder of other input channels get their first convolution adapted (``adapt_first_conv``)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found (use --weights imagenet, none, or a .pth/.safetensors file)")
    sd = _read_state_dict(path)
    if any(k.startswith("encoder.") for k in sd):
        sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    own = encoder.state_dict()
    first = _first_conv_key(own, sd)
    if first is not None:
        sd = {**sd, first: adapt_first_conv(sd[first], own[first].shape[1])}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        detail = (f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} wrong-shaped keys"
                  f" (first: {(missing + unexpected + shapes)[0]})")
        raise WeightsError(f"{path}: does not fit this encoder: {detail}")
    encoder.load_state_dict(sd)


def build_model(encoder: str, n_classes: int, weights: str = "imagenet", *,
                in_channels: int = 3) -> tuple[torch.nn.Module, WeightsInfo]:
    """An ``smp.Unet`` with ``n_classes`` outputs, ``in_channels`` inputs and the requested encoder weights
    (RGB weights get their first convolution adapted to ``in_channels``, see ``load_encoder_file``)."""
    import segmentation_models_pytorch as smp

    check_encoder(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SMP flags `timm-` names as legacy; they still work
        model = smp.Unet(encoder_name=encoder, encoder_weights=None, classes=n_classes, in_channels=in_channels)
    if weights == "none":
        return model, WeightsInfo("none", False, "random initialisation (--weights none)")
    if weights == "imagenet" and encoder.startswith("tu-"):
        raise ConfigError("for tu- encoders use --weights none or a local file (timm hub weights are not wired up)")
    if weights == "imagenet":
        path = fetch_pretrained(encoder, "imagenet")
        if path is None:
            repo_id, _ = pretrained_source(encoder, "imagenet")
            return model, WeightsInfo("imagenet", False, f"ImageNet weights unavailable (offline, not cached: {repo_id}); "
                                                        "random initialisation")
        load_encoder_file(model.encoder, path)
        return model, WeightsInfo("imagenet", True, str(path))
    load_encoder_file(model.encoder, weights)
    return model, WeightsInfo(str(weights), True, str(Path(weights).resolve()))
