"""Inference backends: each maps a normalised N x channels x H x W float tensor to N x C x H x W logits.

- ``torch``: the PyTorch module in fp32, the reference every other backend is checked against;
- ``torch-bf16``: the same module, channels_last, under bfloat16 autocast;
- ``onnx``: ONNX Runtime fp32 on the model converted in memory (same logits to ~1e-6);
- ``onnx-int8``: ONNX Runtime on the statically quantised model ``fastseg export --format onnx --int8`` writes;
- ``openvino``: OpenVINO on the same ONNX graph; it computes in bf16 on CPUs that have it, else in fp32.

``choose_backend``'s ``auto`` on CPU times every backend that is installed and trusted on a small probe
here and takes the fastest. Trusted: fp32 ones, and reduced-precision ones whose masks agreed with fp32
on at least ``AGREEMENT_MIN`` of the pixels of the model's validation images (measured when the model
was trained or exported, and kept in its metadata: see ``fastseg.infer.agreement``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..config import BACKEND_CHOICES
from ..errors import ConfigError, FastsegError, ModelError
from ..export.onnx import ONNX_MISSING, ONNX_OPSET, onnx_available, onnx_session, torch_to_onnx_bytes
from ..model import input_channels

__all__ = ["TorchBackend", "TorchBf16Backend", "OnnxBackend", "OpenVinoBackend", "ModelSource", "ONNX_OPSET",
           "AGREEMENT_MIN", "onnx_available", "openvino_available", "torch_to_onnx_bytes", "onnx_session",
           "openvino_compiled", "build_backend", "probe_seconds", "decide_backend", "choose_backend",
           "onnx_file_backend"]

OPENVINO_MISSING = "openvino is not installed (pip install 'fastseg[openvino]')"
INT8_MISSING = "no int8 model beside this one (make it with `fastseg export MODEL --format onnx --int8`)"
AGREEMENT_MIN = 0.995  # share of pixels whose class must equal fp32's: below it a faster backend changes results
PROBE_SIDE = 512  # one probe image of a typical input side; 2 x 256 px probes fit in cache as real batches do not,
# and compressed the gaps (openvino/onnx 1.14x there, 1.7x on batches of 8 x 512 px)
PROBE_ROUNDS = 2  # timed calls per backend after one warm-up, interleaved; the fastest counts


class TorchBackend:
    name = "torch"
    exact = True  # fp32: the reference

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.model = model.to(device).eval().float()
        self.device = device

    @property
    def key(self) -> str:
        """The name its fp32 agreement is recorded under (see ``fastseg.infer.agreement``)."""
        return self.name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x.to(self.device))


class TorchBf16Backend(TorchBackend):
    name = "torch-bf16"
    exact = False

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__(model.to(memory_format=torch.channels_last), device)  # oneDNN's fast bf16 layout

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16):
            return self.model(x).float()


class OnnxBackend:
    def __init__(self, session, name: str = "onnx"):
        self.session = session
        self.name = self.key = name
        self.exact = name == "onnx"
        self.input_name = session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, compiled):
        self.compiled = compiled
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # "bf16" or "f32"
        self.exact = self.precision == "f32"
        self.key = f"openvino-{self.precision}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.compiled(arr)[0])


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def openvino_compiled(model: bytes | str, source: str = "ONNX model"):
    """The ONNX graph compiled by OpenVINO for this CPU, with as many threads as torch uses; OpenVINO
    keeps its own default precision (bf16 where the CPU has it)."""
    try:
        import openvino as ov
    except ImportError:
        raise ModelError(f"{source}: {OPENVINO_MISSING}") from None
    core = ov.Core()
    try:
        graph = core.read_model(model)
        return core.compile_model(graph, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    except Exception as e:  # OpenVINO raises RuntimeError and its own types
        raise ModelError(f"{source}: OpenVINO cannot compile it ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None


@dataclass
class ModelSource:
    """What backends are built from: the torch module, an ONNX graph (converted from the module on first
    use), and the int8 ONNX export made from the same weights (with its measured fp32 agreement)."""

    model: torch.nn.Module | None = None
    int8_file: str | None = None
    int8_agreement: float | None = None
    sample_side: int = 64  # an input side the model takes, to trace the ONNX graph with
    channels: int = 3
    _onnx: bytes | None = None

    def onnx(self) -> bytes:
        if self._onnx is None:
            if self.model is None:
                raise ModelError("no torch model to convert to ONNX")
            self._onnx = torch_to_onnx_bytes(self.model, sample_side=self.sample_side, channels=self.channels)
        return self._onnx


def build_backend(name: str, source: ModelSource, device: torch.device):
    """The backend ``name`` for ``source``; ``ConfigError`` (what to install or make) when it cannot be had."""
    if name in ("torch", "torch-bf16"):
        if source.model is None:
            raise ConfigError(f"backend {name} needs a torch model (.pkl, bundle or .pt)")
        return (TorchBackend if name == "torch" else TorchBf16Backend)(source.model, device)
    if name in ("onnx", "onnx-int8"):
        if not onnx_available():
            raise ConfigError(f"backend {name}: {ONNX_MISSING}")
        if name == "onnx-int8":
            if source.int8_file is None:
                raise ConfigError(f"backend onnx-int8: {INT8_MISSING}")
            return OnnxBackend(onnx_session(source.int8_file, source=source.int8_file), name="onnx-int8")
        return OnnxBackend(onnx_session(source.onnx()))
    if name == "openvino":
        if not openvino_available():
            raise ConfigError(f"backend openvino: {OPENVINO_MISSING}")
        return OpenVinoBackend(openvino_compiled(source.onnx()))
    raise ConfigError(f"unknown backend {name!r}; valid choices: {', '.join(BACKEND_CHOICES)}")


def probe_seconds(backends: dict, x: torch.Tensor, rounds: int = PROBE_ROUNDS) -> dict[str, float]:
    """Seconds per call of each backend on ``x``: one warm-up each, then ``rounds`` interleaved; the fastest
    counts (other load on the machine only ever slows a call down)."""
    best = dict.fromkeys(backends, float("inf"))
    for i in range(rounds + 1):
        for name, backend in backends.items():
            t = time.perf_counter()
            backend(x)
            if i:
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def decide_backend(seconds: dict[str, float | None], agreement: dict[str, float | None],
                   minimum: float = AGREEMENT_MIN) -> tuple[str, str]:
    """(name, reason): the fastest backend whose masks agree with fp32 on at least ``minimum`` of the pixels.

    ``seconds``: probe time per candidate (None: not timed); ``agreement``: share of pixels equal to fp32's
    (1.0 for fp32 backends, None when never measured). Pure: the caller measures."""
    refused = {n: "not checked against fp32" if agreement.get(n) is None else
               f"{agreement[n]:.2%} of pixels as fp32 < {minimum:.1%}"
               for n in seconds if agreement.get(n) is None or agreement[n] < minimum}
    trusted = [n for n in seconds if n not in refused]
    timed = {n: seconds[n] for n in trusted if seconds[n] is not None}
    if len(trusted) == 1:  # nothing to race against: not timed
        best, why = trusted[0], "auto: the one backend here that matches fp32"
    elif len(timed) < len(trusted):
        raise ValueError("decide_backend: more than one trusted backend needs the probe's times")
    elif not timed:
        raise ModelError("no inference backend to choose from: " + "; ".join(f"{n}: {r}" for n, r in refused.items()))
    else:
        best = min(timed, key=timed.get)
        ranked = ", ".join(f"{n} {1000 * timed[n]:.0f} ms" for n in sorted(timed, key=timed.get))
        why = f"auto: fastest on a probe here: {ranked}"
    if agreement[best] < 1.0:
        why += f"; {agreement[best]:.2%} of validation pixels as fp32"
    if refused:
        why += "; not used: " + ", ".join(f"{n} ({r})" for n, r in refused.items())
    return best, why


def _auto_candidates(source: ModelSource, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The backends worth probing here, and why each other one is left out."""
    from ..device import bf16_supported

    skipped = {}
    if source.model is None:
        skipped["torch"] = skipped["torch-bf16"] = "no torch model"
    elif not bf16_supported(device):
        skipped["torch-bf16"] = "no native bf16 on this CPU"
    if not onnx_available():
        skipped["onnx"] = skipped["onnx-int8"] = "onnxruntime not installed"
    else:
        if source.model is not None:  # same fp32 masks, 2x torch eager (benchmarks/predict_speed.py): no probe
            skipped["torch"] = "onnx is the faster fp32 backend"
        if source.int8_file is None:
            skipped["onnx-int8"] = "no int8 export"
    if not openvino_available():
        skipped["openvino"] = "not installed"
    return [n for n in BACKEND_CHOICES[1:] if n not in skipped], skipped


def choose_backend(source: ModelSource | torch.nn.Module, device: torch.device, backend: str = "auto",
                   agreement: dict | None = None, probe_side: int = PROBE_SIDE):
    """(backend, note): ``backend`` as asked, or for ``auto`` the fastest trusted one here (torch on GPUs),
    timed on one ``probe_side`` px image when more than one is trusted.

    ``agreement``: the model's recorded ``{key: share of pixels as fp32}`` (``fastseg.infer.agreement``)."""
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {backend!r}; valid choices: {', '.join(BACKEND_CHOICES)}")
    if not isinstance(source, ModelSource):
        source = ModelSource(model=source)
    if backend != "auto":
        return build_backend(backend, source, device), f"{backend} (requested)"
    if device.type != "cpu":
        return build_backend("torch", source, device), "torch (GPU)"
    names, skipped = _auto_candidates(source, device)
    built = {}
    for name in names:
        try:
            built[name] = build_backend(name, source, device)
        except FastsegError as e:  # e.g. an op the ONNX exporter cannot handle: the others still work
            skipped[name] = f"failed: {str(e)[:80]}"
    if "onnx" not in built and "torch" not in built and source.model is not None:
        built["torch"] = build_backend("torch", source, device)  # the fp32 fallback when ONNX failed
        skipped.pop("torch", None)
    known = {**(agreement or {}), "onnx-int8": source.int8_agreement}
    shares = {n: 1.0 if b.exact else known.get(b.key) for n, b in built.items()}
    trusted = {n: b for n, b in built.items() if shares[n] is not None and shares[n] >= AGREEMENT_MIN}
    channels = input_channels(source.model) if source.model is not None else 3
    x = torch.randn(1, channels, probe_side, probe_side, generator=torch.Generator().manual_seed(0))
    seconds = {**dict.fromkeys(built), **(probe_seconds(trusted, x) if len(trusted) > 1 else {})}
    name, why = decide_backend(seconds, shares)
    if skipped:
        why += "; not available: " + ", ".join(f"{n} ({r})" for n, r in skipped.items())
    return built[name], f"{name} ({why})"


def onnx_file_backend(path: str, session, info: dict, backend: str = "auto"):
    """(backend, note) for an .onnx file already open in ``session``: ONNX Runtime, or OpenVINO on request.
    An int8 export (its metadata says so) runs as ``onnx-int8``."""
    if backend == "openvino":
        if not openvino_available():
            raise ConfigError(f"backend openvino: {OPENVINO_MISSING}")
        return OpenVinoBackend(openvino_compiled(path, source=path)), "openvino (requested)"
    quant = info.get("quantization")
    if quant is None:
        return OnnxBackend(session), "onnxruntime"
    share = quant.get("agreement")
    said = f"; {share:.2%} of validation pixels as fp32" if isinstance(share, float) else ""
    return OnnxBackend(session, name="onnx-int8"), f"onnx-int8 (onnxruntime, int8 model{said})"
