"""Converting a torch model to ONNX in memory, and opening an ONNX graph in ONNX Runtime.

Used by the ONNX exports (``fastseg.export.formats``) and by the ``onnx`` inference backends
(``fastseg.infer.backends``), which convert the same way, so both give the same graph.
"""

from __future__ import annotations

import io
import warnings

import torch

from ..errors import ModelError
from ..model import input_channels

__all__ = ["ONNX_OPSET", "ONNX_MISSING", "onnx_available", "torch_to_onnx_bytes", "onnx_session"]

ONNX_OPSET = 17  # supported by every onnxruntime >= 1.14 and the TorchScript-based exporter
ONNX_MISSING = "onnxruntime is not installed (pip install 'fastseg[onnx]')"


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def torch_to_onnx_bytes(model: torch.nn.Module, opset: int = ONNX_OPSET, sample_side: int = 64,
                        source: str = "the model", channels: int | None = None) -> bytes:
    """The model as ONNX with dynamic batch, height and width (TorchScript-based exporter: no onnxscript needed),
    traced on a ``sample_side`` input the model takes; an op the exporter cannot convert is a ``ModelError``."""
    model = model.cpu().eval().float()
    blocker = next((m for m in model.modules() if isinstance(m, (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d))
                    and m.output_size not in (1, (1, 1))), None)
    if blocker is not None:  # checked first: the exporter would fail too, after dumping its graph on stdout
        raise ModelError(f"{source}: cannot be converted to ONNX with any image size (its {blocker.__class__.__name__} "
                         f"to {blocker.output_size} has no ONNX form for variable sizes, as in PSPNet and UPerNet); "
                         "use the bundle or --format torchscript")
    buf = io.BytesIO()
    dyn = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter, nothing actionable
        try:
            x = torch.zeros(1, channels or input_channels(model), sample_side, sample_side)  # None: the model's own
            torch.onnx.export(model, (x,), buf, dynamo=False,
                              opset_version=opset, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": dyn, "logits": dyn})
        except Exception as e:  # the exporter raises its own error types (e.g. PSPNet's adaptive pooling)
            why = str(e).splitlines()[0][:160] if str(e) else e.__class__.__name__
            raise ModelError(f"{source}: cannot be converted to ONNX with any image size ({why}); use the bundle "
                             "or --format torchscript") from None
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
