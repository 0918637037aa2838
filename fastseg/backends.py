"""Inference backends: something that maps a normalised N x 3 x H x W float tensor to logits.

``TorchBackend`` runs the PyTorch module; ``OnnxBackend`` runs an ONNX model in ONNX Runtime (about
2x torch eager on CPU for this Unet, same logits to ~1e-6). ``choose_backend`` picks the fastest
installed one: ONNX Runtime on CPU when importable, converting the torch model in memory.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from .errors import ConfigError, ModelError

__all__ = ["TorchBackend", "OnnxBackend", "ONNX_OPSET", "onnx_available", "torch_to_onnx_bytes", "onnx_session",
           "choose_backend"]

ONNX_OPSET = 17  # supported by every onnxruntime >= 1.14 and the TorchScript-based exporter
ONNX_MISSING = "onnxruntime is not installed (pip install 'fastseg[onnx]')"


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model = model.to(device).eval().float()
        self.device = device

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device))


class OnnxBackend:
    name = "onnx"

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def torch_to_onnx_bytes(model: torch.nn.Module, opset: int = ONNX_OPSET, sample_side: int = 64) -> bytes:
    """The model as ONNX with dynamic batch, height and width (TorchScript-based exporter: no onnxscript needed)."""
    model = model.cpu().eval().float()
    buf = io.BytesIO()
    dyn = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter, nothing actionable
        torch.onnx.export(model, (torch.zeros(1, 3, sample_side, sample_side),), buf, dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": dyn, "logits": dyn})
    return buf.getvalue()


def onnx_session(model: bytes | str, source: str = "ONNX model"):
    """An ONNX Runtime CPU session using as many threads as torch does (one knob for both)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelError(f"{source}: {ONNX_MISSING}") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        raise ModelError(f"{source}: not a readable ONNX model ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None


def choose_backend(model: torch.nn.Module, device: torch.device, backend: str = "auto"):
    """(backend, note): ``auto`` converts to ONNX Runtime on CPU when it is installed, else torch."""
    if backend not in ("auto", "torch", "onnx"):
        raise ConfigError(f"unknown backend {backend!r}; valid choices: auto, torch, onnx")
    if backend == "torch" or (backend == "auto" and (device.type != "cpu" or not onnx_available())):
        why = "GPU" if device.type != "cpu" else ("requested" if backend == "torch" else ONNX_MISSING)
        return TorchBackend(model, device), f"torch ({why})"
    if not onnx_available():
        raise ConfigError(f"backend onnx: {ONNX_MISSING}")
    try:
        data = torch_to_onnx_bytes(model)
    except Exception as e:  # an op the exporter cannot handle: torch still works
        if backend == "onnx":
            raise ModelError(f"cannot convert the model to ONNX ({e.__class__.__name__}: {e})") from None
        return TorchBackend(model, device), f"torch (ONNX conversion failed: {e.__class__.__name__})"
    return OnnxBackend(onnx_session(data)), "onnxruntime"
