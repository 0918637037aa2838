"""Training precision (--precision): the choice, the bf16 step on CPU, fp32 exports (no GPU needed); the inference
backends are tested in tests/infer/test_backends.py."""

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastseg.cli import build_config, main
from fastseg.config import FitConfig
from fastseg.device import BF16_MIN_GAIN, CpuBf16, decide_precision, time_precisions
from fastseg.errors import ConfigError
from fastseg.model import build_model


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
