"""Writing models: the fastai ``.pkl``, the safe bundle, ONNX and TorchScript, each atomically.

Every format carries the same ``ModelCard`` (codes, normalisation, architecture, input rule, versions: the
.pkl's ``fastseg_info.meta``, the bundle's fastseg.json, ONNX metadata, a TorchScript extra file), so
``fastseg.load`` gives the same masks from any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..card import ModelCard
from ..config import EXPORT_FORMAT_CHOICES, Notify, silent
from ..errors import ConfigError, ModelError
from ..io import atomic_path, atomic_write_bytes
from ..model import input_channels
from .onnx import ONNX_MISSING, ONNX_OPSET, onnx_available, onnx_session, torch_to_onnx_bytes

__all__ = ["export_learner", "learner_card", "FORMATS", "ExportResult", "export_model", "write_onnx",
           "write_torchscript", "export_bundle_beside", "ONNX_TOLERANCE", "Int8Check"]

# (fp32 torch model, its card, the int8 ONNX graph, images, source for errors) -> the int8 graph's agreement with
# fp32 masks as ``fastseg.infer.agreement.measure_agreement`` gives it: inference, which runs after export
Int8Check = Callable[[torch.nn.Module, ModelCard, bytes, list, str], dict]

FORMATS = EXPORT_FORMAT_CHOICES
ONNX_TOLERANCE = 1e-3  # max |logit diff| ONNX Runtime vs torch; float32 reorderings give ~1e-6
SAMPLE = (2, 96, 128)  # check input (batch, height, width): unlike the export trace's, to exercise dynamic axes


def learner_card(learn) -> ModelCard:
    """The card of a trained learner: its meta (``fastseg_info``), its Normalize stats, its model's input
    rule and the package versions."""
    from fastai.data.transforms import Normalize

    from ..device import plain_model
    from .bundle import versions

    norm = next((t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)), None)
    if norm is None:
        raise ModelError("the learner has no Normalize transform; cannot tell how to scale inputs")
    info = getattr(learn, "fastseg_info", None)
    meta = dict(info.meta) if info is not None else {}
    codes = list(meta.get("codes") or learn.dls.vocab)
    card = ModelCard.from_meta(meta, codes, norm.mean.cpu(), norm.std.cpu(), plain_model(learn.model), where="learner")
    return card.replace(versions=versions())


def export_learner(learn, dest: str | Path) -> Path:
    """``learn.export`` to a temporary file beside ``dest``, then rename: never a half-written model.

    The learner's meta becomes its model card first (``learner_card``), as the bundle and the other formats
    write it. The export's crop transform is saved in whole-image mode, so fastai's ``learn.predict`` on the
    loaded learner segments whole images (padded to /32), not the centre crop validation used.
    """
    from ..device import precision_callbacks
    from ..train.transforms import whole_image_inference

    dest = Path(dest).absolute()
    if getattr(learn, "fastseg_info", None) is not None:
        learn.fastseg_info.meta = learner_card(learn).to_dict()
    # Mixed-precision callbacks stay behind: the export is fp32 and runs on any CPU (fastseg picks the fast path).
    with atomic_path(dest) as tmp, whole_image_inference(learn), learn.removed_cbs(precision_callbacks(learn)):
        learn.export(tmp)  # an absolute fname: learn.path / tmp == tmp
    return dest


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    opset: int | None = None  # ONNX only
    max_diff: float | None = None  # ONNX only: max |logit diff| vs torch on a random sample
    quantization: dict | None = None  # int8 ONNX only: calibration and agreement with fp32 (fastseg.export.quantize)


def _default_out(model: Path, fmt: str) -> Path:
    """``exports/model.pkl`` -> ``exports/model/`` (bundle), ``exports/model.onnx``, ``exports/model.pt``."""
    from .bundle import bundle_path_for, is_bundle

    if is_bundle(model):
        folder = model.parent if model.is_file() else model
        if fmt == "safetensors":
            return folder.with_name(folder.name + "_copy")
        return folder.with_name(folder.name + (".onnx" if fmt == "onnx" else ".pt"))
    if fmt == "safetensors":
        return bundle_path_for(model)
    return model.with_name(model.stem + (".onnx" if fmt == "onnx" else ".pt"))


OUT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".ts")}  # safetensors: a bundle folder
MODEL_SUFFIXES = (".pkl", ".onnx", ".pt", ".ts", ".pth", ".safetensors", ".json")  # files, never a bundle folder
EXPECTED = "onnx: a .onnx file, torchscript: a .pt or .ts file, safetensors: a folder"


def _sources(model: Path) -> list[Path]:
    """The paths that make up ``model``: the file, or a bundle folder and its files."""
    from .bundle import is_bundle

    if not is_bundle(model):
        return [model]
    folder = model.parent if model.is_file() else model
    return [folder, *folder.iterdir()]


def _check_out(model: Path, dest: Path, fmt: str) -> None:
    """Refuse a destination that is (part of) the source model, or that does not fit ``fmt``."""
    import os

    target = dest.resolve()
    for src in _sources(model):
        same = dest.exists() and src.exists() and os.path.samefile(src, dest)
        if same or target == src.resolve() or (src.is_dir() and target.is_relative_to(src.resolve())):
            raise ConfigError(f"{dest}: is the model being exported ({model}); --out must be a new path "
                              f"({EXPECTED})")
    suffix = dest.suffix.lower()
    if fmt == "safetensors":
        if dest.is_file() or suffix in MODEL_SUFFIXES:
            raise ConfigError(f"{dest}: --format safetensors writes a bundle folder, not a file; give a folder path "
                              f"({EXPECTED})")
    elif suffix not in OUT_SUFFIXES[fmt] or dest.is_dir():
        raise ConfigError(f"{dest}: --format {fmt} needs a path ending in {' or '.join(OUT_SUFFIXES[fmt])} "
                          f"({EXPECTED})")


def export_model(model: str | Path, fmt: str, out: str | Path | None = None, force: bool = False,
                 int8: bool = False, calib: str | Path | None = None, notify: Notify = silent,
                 classes: list[str] | None = None, int8_check: Int8Check | None = None) -> ExportResult:
    """Convert a fastseg model (.pkl, bundle, .pt; or a folder SMP's save_pretrained wrote, whose class names
    ``classes`` gives) to ``fmt``: a safe bundle, ONNX or TorchScript.

    ``int8`` (ONNX only): the statically quantised model, calibrated on the model's training images (or
    ``calib``'s), written to ``model.int8.onnx`` by default (see ``fastseg.export.quantize``), with its
    agreement with fp32 as ``int8_check`` measures it (``fastseg.export_model`` passes the inference stage's).

    Many parameters: one per ``fastseg export`` option, each with its default and passed by name; they
    travel together nowhere else, so a type would only wrap them at each call."""
    from .bundle import write_bundle
    from .read import model_kind, read_model

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    if (int8 or calib is not None) and fmt != "onnx":
        raise ConfigError("--int8 and --calib apply to --format onnx only")
    if int8 and int8_check is None:
        raise ConfigError("an int8 export needs int8_check to measure it against fp32; use fastseg.export_model")
    model = Path(model)
    dest = Path(out) if out is not None else _default_out(model, fmt)
    if int8 and out is None:
        from .quantize import int8_path_for

        dest = int8_path_for(model)
    _check_out(model, dest, fmt)
    if dest.exists() and not force:
        raise ModelError(f"{dest}: already exists (use --force to overwrite)")
    if model.suffix.lower() == ".onnx":
        raise ModelError(f"{model}: cannot convert from ONNX (export from the .pkl or the bundle folder)")
    net, card = read_model(model, model_kind(model, classes), notify, classes)  # notify: the pickle notice for a .pkl
    net = net.cpu().eval().float()
    card = ModelCard.from_meta(card.to_dict(), card.codes, card.mean, card.std, net)  # the input rule of the module
    if fmt == "safetensors":
        return ExportResult(write_bundle(net, card, dest, force=force), fmt)
    if fmt == "onnx" and int8:
        return write_onnx_int8(net, card, dest, calib, int8_check)
    if fmt == "onnx":
        return write_onnx(net, card, dest)
    return write_torchscript(net, card, dest)


def write_onnx(net: torch.nn.Module, card: ModelCard, dest: Path) -> ExportResult:
    """ONNX with dynamic batch/height/width and the model card in its metadata, verified in onnxruntime."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError(f"{dest}: onnx is not installed (pip install 'fastseg[onnx]')") from None
    onnx_bytes = torch_to_onnx_bytes(net, ONNX_OPSET, card.fit_side(64), source=str(dest), channels=card.in_channels)
    data = _with_info(onnx_bytes, card.replace(opset=ONNX_OPSET))
    if not onnx_available():
        raise ModelError(f"{dest}: cannot verify the ONNX model: {ONNX_MISSING}")
    session = onnx_session(data, source=str(dest))
    n, h, w = SAMPLE
    x = torch.randn(n, card.in_channels, card.fit_side(h), card.fit_side(w) + card.pad_multiple,
                    generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = net(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if not diff < ONNX_TOLERANCE:
        raise ModelError(f"{dest}: ONNX output differs from torch by {diff:.2e} (limit {ONNX_TOLERANCE:g}); not written")
    return ExportResult(atomic_write_bytes(dest, data), "onnx", ONNX_OPSET, diff)


def _with_info(data: bytes, card: ModelCard) -> bytes:
    """The ONNX graph with the model card as its ``fastseg`` metadata, checked."""
    import onnx

    proto = onnx.load_from_string(data)
    meta = proto.metadata_props.add()
    meta.key, meta.value = "fastseg", card.to_json()
    proto.producer_name = "fastseg"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def write_onnx_int8(net: torch.nn.Module, card: ModelCard, dest: Path, calib: str | Path | None,
                    int8_check: Int8Check) -> ExportResult:
    """The int8 ONNX model, calibrated, then compared with the fp32 masks on validation images (``int8_check``);
    its metadata records both and the fp32 weights' fingerprint (``fastseg.export.quantize``)."""
    from .quantize import QUANT_METHOD, calibration_images, quantize_int8, weights_fingerprint

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError(f"{dest}: onnx is not installed (pip install 'fastseg[onnx]')") from None
    train, valid, where = calibration_images(card.to_dict(), calib)
    fp32 = torch_to_onnx_bytes(net, ONNX_OPSET, card.fit_side(64), source=str(dest), channels=card.in_channels)
    data = quantize_int8(fp32, card, train)
    found = int8_check(net, card, data, valid, str(dest))
    quant = {"method": QUANT_METHOD, "calibration": where, "agreement": found["backends"]["onnx-int8"],
             "agreement_images": found["images"], "weights_sha256": weights_fingerprint(net)}
    data = _with_info(data, card.replace(opset=ONNX_OPSET, quantization=quant))
    return ExportResult(atomic_write_bytes(dest, data), "onnx", ONNX_OPSET, quantization=quant)


def write_torchscript(net: torch.nn.Module, card: ModelCard, dest: Path) -> ExportResult:
    """A traced TorchScript module with the model card embedded as the extra file ``fastseg.json``."""
    import warnings

    side = card.fit_side(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        traced = torch.jit.trace(net, torch.zeros(1, card.in_channels, side, side), check_trace=False)
    with atomic_path(dest) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={"fastseg.json": card.to_json()})
    return ExportResult(Path(dest), "torchscript")


def export_bundle_beside(learn, pkl: str | Path) -> Path:
    """The safe bundle for a freshly trained learner, next to its ``.pkl`` (``model.pkl`` -> ``model/``).

    Its fastseg.json records the .pkl's sha256, which tells later exports that fastseg wrote the pair."""
    from .bundle import bundle_path_for, write_bundle
    from ..device import plain_model
    from ..io import sha256_file

    card = learner_card(learn).replace(pkl_sha256=sha256_file(pkl))
    return write_bundle(plain_model(learn.model), card, bundle_path_for(pkl), force=True)
