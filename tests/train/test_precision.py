"""Training precision (--precision) and the CPU inference backends auto chooses among (no GPU needed)."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastseg.infer.backends import AGREEMENT_MIN, ModelSource, TorchBackend, TorchBf16Backend, choose_backend, decide_backend
from fastseg.cli import build_config, main
from fastseg.config import FitConfig
from fastseg.device import BF16_MIN_GAIN, CpuBf16, decide_precision, time_precisions
from fastseg.errors import ConfigError, ModelError
from fastseg.model import build_model


# --------------------------------------------------------------------------- training precision


@pytest.mark.parametrize("requested, device, native, times, expected", [
    ("auto", "cpu", True, {"fp32": 1.0, "bf16": 0.6}, "bf16"),  # measurably faster
    ("auto", "cpu", True, {"fp32": 1.0, "bf16": 1 / (BF16_MIN_GAIN - 0.05)}, "fp32"),  # within the noise margin
    ("auto", "cpu", True, {"fp32": 1.0, "bf16": 1.4}, "fp32"),  # slower
    ("auto", "cpu", False, None, "fp32"),  # no native bf16: not even timed
    ("auto", "cuda", True, None, "bf16"),
    ("auto", "cuda", False, None, "fp16"),
    ("fp32", "cpu", True, None, "fp32"),
    ("bf16", "cpu", False, None, "bf16"),  # asked for: honoured, with a warning in the reason
    ("fp16", "cuda", True, None, "fp16"),
])
def test_decide_precision(requested, device, native, times, expected):
    choice, reason, measured = decide_precision(requested, device, native, times)
    assert choice == expected and measured == times
    if times is not None:
        assert f"{times['bf16']:.3f} s in bf16, {times['fp32']:.3f} s in fp32" in reason
    if requested == "bf16" and not native:
        assert "no native bfloat16" in reason


@pytest.mark.parametrize("requested, device, native, message", [
    ("fp16", "cpu", True, "precision fp16 needs a CUDA GPU; on CPU choose auto, bf16 or fp32"),
    ("bf16", "cuda", False, "this GPU has no bfloat16; choose --precision fp16 (with loss scaling) or fp32"),
    ("fp8", "cpu", True, "precision must be one of auto, fp32, bf16, fp16, got 'fp8'"),
])
def test_decide_precision_refuses_what_the_device_cannot_do(requested, device, native, message):
    with pytest.raises(ConfigError) as e:
        decide_precision(requested, device, native)
    assert str(e.value) == message


def test_auto_on_a_bf16_cpu_needs_measured_times():
    with pytest.raises(ValueError, match="needs the measured step times"):
        decide_precision("auto", "cpu", True, None)


def test_config_precision_and_old_fp16_files(tmp_path):
    assert FitConfig().precision == "auto"
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, fp16, got 'half'"):
        FitConfig(precision="half")
    assert FitConfig.from_dict({"fp16": True}).precision == "auto"
    assert FitConfig.from_dict({"fp16": False}).precision == "fp32"
    assert FitConfig.from_dict({"fp16": False, "precision": "bf16"}).precision == "bf16"
    old = tmp_path / "config.json"  # a run folder's config.json from before --precision
    old.write_text(json.dumps({**{k: v for k, v in FitConfig().to_dict().items() if k != "precision"}, "fp16": False}))
    assert FitConfig.from_file(old).precision == "fp32"


def test_cli_precision_option_and_the_old_flag():
    assert build_config(None, precision="bf16").precision == "bf16"
    assert build_config(None, fp16=False).precision == "fp32"
    assert build_config(None, fp16=True).precision == "auto"
    assert build_config(None, fp16=False, precision="bf16").precision == "bf16"
    res = CliRunner().invoke(main, ["fit", "--precision", "half"])
    assert res.exit_code == 2 and "'half' is not one of 'auto', 'fp32', 'bf16', 'fp16'" in res.output


def test_time_precisions_leaves_the_model_and_the_random_stream_alone():
    torch.manual_seed(0)
    model, _ = build_model("timm-efficientnet-b0", 2, "none")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    times = time_precisions(model, bs=2, size=32, n_classes=2, rounds=1)
    assert set(times) == {"fp32", "bf16"} and all(0 < t < float("inf") for t in times.values())
    assert torch.equal(torch.get_rng_state(), rng)  # training's random stream is not consumed
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights and BN statistics


def test_auto_precision_reaches_the_learner_and_is_reported(tiny_data, tmp_path, monkeypatch):
    import fastseg.device as D
    from fastseg.train.loop import prepare

    monkeypatch.setattr(D, "bf16_supported", lambda device: True)
    monkeypatch.setattr(D, "time_precisions", lambda *a, **k: {"fp32": 1.0, "bf16": 0.5})
    session = prepare(FitConfig(data=str(tiny_data), bs=4, weights="none"), workdir=tmp_path)
    learn = session.learn
    assert [type(cb) for cb in learn.cbs if isinstance(cb, CpuBf16)] == [CpuBf16]
    assert learn.fastseg_info.meta["precision"]["train"] == "bf16" and session.plan.precision == "bf16"
    assert session.plan.why["precision"].startswith("auto: a training step took 0.500 s in bf16, 1.000 s in fp32")
    assert re.search(r"^precision +bf16 +auto: a training step", session.plan.table(), re.M)  # the printed plan
    monkeypatch.setattr(D, "time_precisions", lambda *a, **k: {"fp32": 1.0, "bf16": 1.2})
    learn = prepare(FitConfig(data=str(tiny_data), bs=4, weights="none"), workdir=tmp_path).learn
    assert not any(isinstance(cb, CpuBf16) for cb in learn.cbs)


@pytest.mark.slow
def test_cpu_bf16_computes_the_forward_in_bf16_and_the_loss_in_fp32(tiny_data, tmp_path):
    from fastai.callback.core import Callback

    from fastseg.train.loop import prepare

    learn = prepare(FitConfig(data=str(tiny_data), bs=4, weights="none", precision="bf16"), workdir=tmp_path).learn
    seen = {"conv": set(), "depthwise": set(), "pred": set(), "loss": set()}
    keys = list(learn.model.state_dict())
    learn.model.encoder.conv_stem.register_forward_hook(lambda m, i, out: seen["conv"].add(out.dtype))
    depthwise = next(m for m in learn.model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
    depthwise.register_forward_hook(lambda m, i, out: seen["depthwise"].add(out.dtype))

    class Spy(Callback):
        order = CpuBf16.order + 1

        def after_loss(self):
            seen["pred"].add(self.pred.dtype)
            seen["loss"].add(self.loss.dtype)

    learn.fit(1, 1e-3, cbs=[Spy()])
    # depthwise convolutions stay fp32 (oneDNN's bf16 depthwise backward is the slow one)
    assert seen == {"conv": {torch.bfloat16}, "depthwise": {torch.float32}, "pred": {torch.float32},
                    "loss": {torch.float32}}
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())  # master weights stay fp32
    assert not torch.is_autocast_enabled("cpu")  # nothing left switched on after fitting
    assert not any(m._forward_pre_hooks for m in learn.model.modules())  # the fp32 depthwise hooks are gone
    assert list(learn.model.state_dict()) == keys  # same structure: checkpoints and exports load as before


@pytest.mark.slow
def test_bf16_fit_exports_fp32_models_without_the_autocast_callback(tiny_data, tmp_path):
    import warnings

    from fastai.callback.fp16 import MixedPrecision
    from fastai.learner import load_learner
    from safetensors.torch import load_file

    from fastseg.export.bundle import WEIGHTS_FILE, bundle_path_for
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(tiny_data), epochs=1, lr=1e-3, bs=4, weights="none", precision="bf16",
                    export=str(tmp_path / "m.pkl"), runs_dir=str(tmp_path / "runs"))
    result = fit(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(result.export)
    assert not any(isinstance(cb, (CpuBf16, MixedPrecision)) for cb in learn.cbs)
    assert learn.fastseg_info.meta["precision"] == {"train": "bf16", "reason": "requested"}
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())
    img = sorted((tiny_data / "images").iterdir())[0]
    assert np.asarray(learn.predict(img)[0]).shape == (64, 64)  # fastai's own predict on the export
    state = load_file(str(bundle_path_for(result.export) / WEIGHTS_FILE))
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


# --------------------------------------------------------------------------- inference backends


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


def test_fit_records_the_fast_backends_agreement_and_the_data_folder(trained, tiny_data):
    from fastseg.export.bundle import bundle_path_for, read_info

    info = read_info(bundle_path_for(trained.export))
    found = info["agreement"]
    assert found["images"] == 2 and found["pixels"] == 2 * 64 * 64  # the tiny set's two validation images
    assert 0.5 < found["backends"]["torch-bf16"] <= 1.0
    assert info["data"] == str(tiny_data)  # where `fastseg export --int8` finds calibration images


# --------------------------------------------------------------------------- int8


@pytest.mark.slow
def test_int8_export_runs_agrees_and_is_found_beside_its_model(trained, tmp_path):
    import shutil

    from fastseg import export_model
    from fastseg.infer.predictor import load

    pkl = tmp_path / "model.pkl"
    shutil.copy(trained.export, pkl)
    res = export_model(pkl, "onnx", int8=True)
    assert res.path == tmp_path / "model.int8.onnx" and res.path.is_file()
    q = res.quantization
    assert q["agreement_images"] == 2 and "training images from" in q["calibration"]
    # the 1-epoch model's class probabilities are nearly uniform (see test_predict), so argmax flips on
    # tiny changes; int8 still gives the fp32 class on the great majority of pixels
    assert q["agreement"] > 0.8
    int8 = load(res.path)
    assert int8.backend.name == "onnx-int8" and int8.backend_note.startswith("onnx-int8 (onnxruntime, int8 model; ")
    fp32 = load(pkl, backend="torch")
    img = [np.asarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)), dtype=np.uint8)]
    assert (int8.predict(img)[0] == fp32.predict(img)[0]).mean() > 0.8
    beside = load(pkl, backend="onnx-int8")  # the sidecar of these very weights
    assert beside.backend.name == "onnx-int8"
    other = tmp_path / "other.pkl"  # same file name pattern, other weights: never used
    shutil.copy(pkl, other)
    shutil.copy(res.path, tmp_path / "other.int8.onnx")
    from fastseg.export.quantize import int8_beside

    model, _ = build_model("timm-efficientnet-b0", len(fp32.codes), "none")
    assert int8_beside(other, model) == (None, None)


def test_int8_needs_onnx_and_a_calibration_source(trained, tmp_path):
    from fastseg.export.formats import export_model
    from fastseg.export.quantize import calibration_images

    with pytest.raises(ConfigError, match="--int8 and --calib apply to --format onnx only"):
        export_model(trained.export, "torchscript", int8=True)
    with pytest.raises(ModelError, match=r"data folder /nowhere is not here; give --calib DIR"):
        calibration_images({"data": "/nowhere"}, None)
    with pytest.raises(ModelError, match="no images to calibrate on"):
        calibration_images({}, tmp_path)
