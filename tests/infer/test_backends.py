"""The CPU inference backends (fastseg.infer.backends): bf16 against fp32, and how auto picks among them."""

import pytest
import torch

from fastseg.errors import ConfigError, ModelError
from fastseg.infer.backends import AGREEMENT_MIN, ModelSource, TorchBackend, TorchBf16Backend, choose_backend, decide_backend
from fastseg.model import build_model


def _agree(a, b) -> float:
    return float((a == b).float().mean())


def test_bf16_gives_the_fp32_argmax_on_a_tiny_model():
    torch.manual_seed(0)
    model, _ = build_model("timm-efficientnet-b0", 3, "none")
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    ref = TorchBackend(model, torch.device("cpu"))(x).argmax(1)
    out = TorchBf16Backend(model, torch.device("cpu"))(x)
    assert out.dtype == torch.float32
    assert _agree(ref, out.argmax(1)) >= 0.99


def test_decide_backend_takes_the_fastest_trusted_one():
    name, why = decide_backend({"onnx": 0.10, "openvino": 0.05, "torch": 0.30},
                               {"onnx": 1.0, "openvino": 0.999, "torch": 1.0})
    assert name == "openvino"
    assert why == ("auto: fastest on a probe here: openvino 50 ms, onnx 100 ms, torch 300 ms; "
                   "99.90% of validation pixels as fp32")


def test_decide_backend_refuses_backends_under_the_agreement_bar_or_never_checked():
    name, why = decide_backend({"onnx": 0.10, "onnx-int8": 0.04, "torch-bf16": 0.03},
                               {"onnx": 1.0, "onnx-int8": AGREEMENT_MIN - 0.005, "torch-bf16": None})
    assert name == "onnx"
    assert why.endswith("not used: onnx-int8 (99.00% of pixels as fp32 < 99.5%), torch-bf16 (not checked against fp32)")
    with pytest.raises(ModelError, match="no inference backend to choose from: onnx-int8: 98.00%"):
        decide_backend({"onnx-int8": 0.04}, {"onnx-int8": 0.98})


@pytest.mark.parametrize("shares, expected", [({"torch-bf16": 0.999}, "torch-bf16"), ({"torch-bf16": 0.99}, "torch"),
                                              ({}, "torch")])
def test_auto_backend_picks_the_winner_of_the_probe_among_trusted_ones(monkeypatch, shares, expected):
    import fastseg.infer.backends as B

    monkeypatch.setattr(B, "_auto_candidates", lambda source, device: (["torch", "torch-bf16"], {}))
    probed = {}

    def fake_probe(backends, x, rounds=2):
        probed.update(backends)
        return {n: {"torch": 0.2, "torch-bf16": 0.1}[n] for n in backends}

    monkeypatch.setattr(B, "probe_seconds", fake_probe)
    model, _ = build_model("timm-efficientnet-b0", 2, "none")
    backend, note = choose_backend(ModelSource(model=model), torch.device("cpu"), "auto", agreement=shares, probe_side=64)
    raced = shares.get("torch-bf16", 0) >= AGREEMENT_MIN
    assert backend.name == expected
    assert note.startswith(f"{expected} (auto: fastest on a probe here: " if raced else
                           f"{expected} (auto: the one backend here that matches fp32; not used: torch-bf16 (")
    assert set(probed) == ({"torch", "torch-bf16"} if raced else set())  # a lone trusted backend is not timed


def test_decide_backend_needs_times_only_to_race_trusted_backends():
    assert decide_backend({"onnx": None, "torch-bf16": None}, {"onnx": 1.0, "torch-bf16": 0.9}) == \
        ("onnx", "auto: the one backend here that matches fp32; not used: torch-bf16 (90.00% of pixels as fp32 < 99.5%)")
    with pytest.raises(ValueError, match="needs the probe's times"):
        decide_backend({"onnx": None, "openvino": None}, {"onnx": 1.0, "openvino": 0.999})


def test_requested_backends_that_cannot_run_say_what_to_do():
    model, _ = build_model("timm-efficientnet-b0", 2, "none")
    with pytest.raises(ConfigError, match=r"backend onnx-int8: no int8 model beside this one \(make it with "
                                          r"`fastseg export MODEL --format onnx --int8`\)"):
        choose_backend(ModelSource(model=model), torch.device("cpu"), "onnx-int8")
    with pytest.raises(ConfigError, match="unknown backend 'tpu'; valid choices: auto, torch, torch-bf16, onnx, "
                                          "onnx-int8, openvino"):
        choose_backend(model, torch.device("cpu"), "tpu")
