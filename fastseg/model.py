"""Building the SMP model (any ``--arch``) and loading its encoder weights: imagenet (hub or cache), none, or a
local file; and the input sizes each architecture accepts.

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

from .config import check_arch
from .errors import ConfigError, WeightsError

__all__ = ["WeightsInfo", "build_model", "check_encoder", "encoder_names", "pretrained_source", "fetch_pretrained",
           "load_encoder_file", "InputRule", "input_rule", "min_side", "check_input_size", "input_channels",
           "adapt_first_conv"]

# Smallest input side beyond the output stride, per architecture. PAN's feature pyramid attention max-pools its
# stride-16 features three more times (16 x 2**3): a smaller input leaves nothing to pool and SMP fails deep inside.
MIN_SIDES = {"PAN": 128}


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
        from timm.models import get_arch_pretrained_cfgs, split_model_name_tag

        model, tag = split_model_name_tag(name[3:])
        if not timm.is_model(model):  # an exact name (list_models would also match a pattern like `eff*`)
            raise ConfigError(f"unknown timm encoder `{name[3:]}` (see timm.list_models())")
        tags = [full.partition(".")[2] for full in get_arch_pretrained_cfgs(model)]
        if tag and tag not in tags:
            raise ConfigError(f"timm model `{model}` has no weights tagged `{tag}`; its tags: {', '.join(tags)}")
        return
    names = encoder_names()
    if name not in names:
        raise ConfigError(f"wrong encoder name `{name}`, supported encoders: {', '.join(names)} (or tu-<timm model>)")


def pretrained_source(encoder: str, weights: str = "imagenet") -> tuple[str, str | None]:
    """(hub repo id, revision) that SMP uses for ``encoder``'s ``weights``; for ``tu-`` encoders, timm's
    pretrained weights of the model (its default tag, or the one named: ``tu-resnet18.a1_in1k``), latest revision."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if weights != "imagenet" or cfg is None or not getattr(cfg, "hf_hub_id", None):
            raise ConfigError(f"timm model `{encoder[3:]}` has no pretrained weights on the Hugging Face hub; use "
                              "--weights none or a local file")
        return cfg.hf_hub_id, None
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


@dataclass(frozen=True)
class InputRule:
    """The input sides a model accepts: multiples of ``multiple`` (its encoder's output stride), at least ``minimum``."""

    multiple: int = 32  # what every fastseg model padded to before the rule was recorded (Unets, stride 32)
    minimum: int = 32


def input_rule(model: torch.nn.Module) -> InputRule | None:
    """The rule of an SMP model, from its encoder's output stride (8 for PSPNet and DeepLabV3, 16 for DeepLabV3Plus
    and PAN, 32 for the others) and ``MIN_SIDES``; Unets keep 32 (SMP would take any side; 32 is what they trained
    on). None for other modules (TorchScript, ONNX): their card says."""
    stride = getattr(getattr(model, "encoder", None), "output_stride", None)
    if not isinstance(stride, int):
        return None
    minimum = max(stride, MIN_SIDES.get(type(model).__name__, stride))
    return InputRule(multiple=stride, minimum=-(-minimum // stride) * stride)


def min_side(model: torch.nn.Module) -> int:
    """The smallest input side ``model`` takes (32 where it has no rule of its own)."""
    rule = input_rule(model)
    return rule.minimum if rule is not None else InputRule().minimum


def check_input_size(model: torch.nn.Module, size: int) -> None:
    """Raise ``ConfigError`` when training crops of ``size`` are too small for ``model``'s architecture."""
    least = min_side(model)
    if size < least:
        raise ConfigError(f"{type(model).__name__} needs inputs of at least {least} px, but the training size is "
                          f"{size} (--size {least} resizes smaller images up; or choose another --arch)")


def _create(arch: str, encoder: str, n_classes: int, in_channels: int = 3, timm_file: Path | None = None
            ) -> torch.nn.Module:
    """``smp.create_model`` with random weights, or for a ``tu-`` encoder the timm weights in ``timm_file`` (timm
    loads them into its feature extractor itself); SMP's refusals (an encoder an arch cannot use) as ``ConfigError``."""
    import segmentation_models_pytorch as smp

    arch = check_arch(arch)
    check_encoder(encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SMP flags `timm-` names as legacy; they still work
        try:
            if timm_file is not None:
                return smp.create_model(arch, encoder_name=encoder, encoder_weights=True, classes=n_classes,
                                        in_channels=in_channels, pretrained_cfg_overlay={"file": str(timm_file)})
            return smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=n_classes,
                                    in_channels=in_channels)
        except (ValueError, KeyError, AttributeError, RuntimeError) as e:  # e.g. an encoder without dilation
            reason = str(e.args[0] if e.args else e).splitlines()[0] if str(e) else e.__class__.__name__
            raise ConfigError(f"arch {arch} cannot use encoder `{encoder}` ({reason}); choose another --encoder "
                              "or --arch") from None


def build_model(encoder: str, n_classes: int, weights: str = "imagenet", *,
                arch: str = "Unet", in_channels: int = 3) -> tuple[torch.nn.Module, WeightsInfo]:
    """An SMP ``arch`` (Unet, FPN, ... see ``config.ARCH_CHOICES``) with ``n_classes`` outputs, ``in_channels``
    inputs and the requested encoder weights (RGB weights get their first convolution adapted to
    ``in_channels``, see ``load_encoder_file``)."""
    model = _create(arch, encoder, n_classes, in_channels)
    if weights == "none":
        return model, WeightsInfo("none", False, "random initialisation (--weights none)")
    if weights == "imagenet":
        path = fetch_pretrained(encoder, "imagenet")
        if path is None:
            repo_id, _ = pretrained_source(encoder, "imagenet")
            return model, WeightsInfo("imagenet", False, f"ImageNet weights unavailable (offline, not cached: {repo_id}); "
                                                        "random initialisation")
        if encoder.startswith("tu-"):
            return (_create(arch, encoder, n_classes, in_channels, timm_file=path),
                    WeightsInfo("imagenet", True, str(path)))
        load_encoder_file(model.encoder, path)
        return model, WeightsInfo("imagenet", True, str(path))
    load_encoder_file(model.encoder, weights)
    return model, WeightsInfo(str(weights), True, str(Path(weights).resolve()))
