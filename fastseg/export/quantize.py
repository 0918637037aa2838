"""The int8 ONNX model: static QDQ quantisation (onnxruntime.quantization) calibrated on training images.

``fastseg export MODEL --format onnx --int8`` writes ``model.int8.onnx`` beside the model. Its metadata
holds the model description, how it was calibrated, its agreement with the fp32 masks on validation
images, and a fingerprint of the fp32 weights it came from, so ``fastseg predict MODEL`` can use it as
the ``onnx-int8`` backend only for those same weights (and only when it agrees on >= 99.5% of pixels).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..card import ModelCard
from ..constants import STRIDE
from ..errors import ModelError

__all__ = ["CALIB_IMAGES", "int8_path_for", "weights_fingerprint", "calibration_images", "quantize_int8",
           "int8_beside"]

CALIB_IMAGES = 16  # calibration images: min/max activation ranges settle within a few images of one data set
CALIB_MAX_SIDE = 512  # larger images are centre-cropped: bounds the calibration time, ranges come from local statistics
QUANT_METHOD = "static QDQ, uint8 activations (min/max), int8 per-channel weights (onnxruntime)"


def int8_path_for(model: str | Path) -> Path:
    """``exports/model.pkl`` and the bundle ``exports/model/`` -> ``exports/model.int8.onnx``."""
    from .bundle import is_bundle

    model = Path(model)
    if is_bundle(model):
        folder = model.parent if model.is_file() else model
        return folder.with_name(folder.name + ".int8.onnx")
    return model.with_name(model.stem + ".int8.onnx")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of the fp32 weights (names and values): ties an int8 export to the model it came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes() if t.is_floating_point()
                 else t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def calibration_images(meta: dict, calib: str | Path | None) -> tuple[list[Path], list[Path], str]:
    """(calibration images, agreement images, where they came from): ``calib``'s images for both, else the
    model's training and validation images, from the data folder and split recorded in its metadata."""
    from ..data.dataset import IMAGE_EXTS, discover

    if calib is not None:
        found = sorted(p for p in Path(calib).rglob("*") if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith("."))
        if not found:
            raise ModelError(f"{calib}: no images to calibrate on (looked for {', '.join(IMAGE_EXTS)})")
        return found[:CALIB_IMAGES], found[:CALIB_IMAGES], f"{len(found[:CALIB_IMAGES])} images from {calib}"
    data = meta.get("data")
    if not data or not Path(data).is_dir():
        raise ModelError(f"the model's data folder {data or '(not recorded)'} is not here; "
                         "give --calib DIR (a folder of images like the training images)")
    split = meta.get("split", {})
    spec = discover(data, valid_pct=split.get("valid_pct", 0.2), seed=split.get("seed", 42))
    train = [s.image for s in spec.train][:CALIB_IMAGES]
    valid = [s.image for s in spec.valid] or train
    return train, valid, f"{len(train)} training images from {data}"


def _calibration_arrays(card: ModelCard, images: list[Path]) -> list[np.ndarray]:
    """Normalised 1 x channels x s x s centre crops (s a multiple of 32, at most ``CALIB_MAX_SIDE``), decoded
    as the model reads its inputs."""
    from ..data.channels import load_image
    from ..data.images import Scaling

    scaling = Scaling.from_dict(card.scaling)
    mean = torch.as_tensor(card.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.as_tensor(card.std, dtype=torch.float32).view(1, -1, 1, 1)
    out = []
    for path in images:
        img = load_image(path, scaling)
        h, w = img.shape[:2]
        s = min(h, w, CALIB_MAX_SIDE) // STRIDE * STRIDE
        if s < 32:
            continue
        top, left = (h - s) // 2, (w - s) // 2
        x = torch.from_numpy(np.array(img[top:top + s, left:left + s])).permute(2, 0, 1)[None].float() / 255
        out.append(((x - mean) / std).numpy())
    if not out:
        raise ModelError("no calibration image is at least 32 px on each side")
    return out


def quantize_int8(onnx_fp32: bytes, card: ModelCard, images: list[Path]) -> bytes:
    """The fp32 ONNX graph as a statically quantised int8 QDQ graph, calibrated on ``images``."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise ModelError("int8 export needs onnxruntime (pip install 'fastseg[onnx]')") from None

    class Reader(CalibrationDataReader):
        def __init__(self, arrays: list[np.ndarray]):
            self._it = iter(arrays)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"input": x}

    reader = Reader(_calibration_arrays(card, images))
    with tempfile.TemporaryDirectory(prefix="fastseg-int8-") as tmp:
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_fp32)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds and infers shapes for the quantiser
        quantize_static(str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # u8s8: x86's fast int8 path
        return out.read_bytes()


def int8_beside(model_path: Path, model: torch.nn.Module) -> tuple[str | None, float | None]:
    """(path, agreement) of the int8 export beside ``model_path`` when it was made from these weights."""
    path = int8_path_for(model_path)
    if not path.is_file():
        return None, None
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        info = json.loads(next(p.value for p in proto.metadata_props if p.key == "fastseg"))
        quant = info["quantization"]
    except Exception:  # unreadable or not ours: never used, never an error for predicting with the fp32 model
        return None, None
    if quant.get("weights_sha256") != weights_fingerprint(model):
        return None, None
    return str(path), quant.get("agreement")
