import json

import numpy as np
import pytest
from click.testing import CliRunner

from fastseg.export.bundle import INFO_FILE, WEIGHTS_FILE, bundle_path_for
from fastseg.cli import main
from fastseg.errors import ModelError


@pytest.fixture
def runner():
    return CliRunner()


def test_export_help_has_example(runner):
    res = runner.invoke(main, ["export", "--help"])
    assert res.exit_code == 0 and "Example" in res.output and "fastseg export" in res.output


def test_unknown_format_lists_choices(runner, tmp_path):
    res = runner.invoke(main, ["export", str(tmp_path / "m.pkl"), "--format", "tflite"])
    assert res.exit_code == 2
    assert "'tflite' is not one of 'safetensors', 'onnx', 'torchscript'" in res.output


def test_missing_model_is_one_line_error(runner, tmp_path):
    missing = tmp_path / "missing.pkl"
    res = runner.invoke(main, ["export", str(missing), "--format", "onnx"])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {missing}: model file not found"


@pytest.mark.slow
def test_fit_writes_a_bundle_beside_the_pkl(trained):
    b = bundle_path_for(trained.export)
    assert b == trained.export.with_suffix("") and (b / WEIGHTS_FILE).is_file()
    info = json.loads((b / INFO_FILE).read_text())
    assert info["codes"] == ["background", "disc", "square", "triangle"]
    assert info["format"] == "fastseg-bundle/1" and info["size"] == 64 and info["input"] == "crop"
    assert info["mean"] == pytest.approx([0.485, 0.456, 0.406], abs=1e-6)
    assert {"torch", "segmentation-models-pytorch", "timm"} <= set(info["versions"])


@pytest.mark.slow
def test_onnx_export_dynamic_axes_metadata_and_overwrite(runner, trained, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    res = runner.invoke(main, ["export", str(trained.export), "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "onnxruntime check: max |diff| vs torch" in res.output and "(opset 17)" in res.output
    s = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = json.loads(s.get_modelmeta().custom_metadata_map["fastseg"])
    assert meta["opset"] == 17 and meta["codes"][0] == "background"
    y = s.run(None, {"input": np.zeros((3, 3, 64, 96), np.float32)})[0]
    assert y.shape == (3, 4, 64, 96)
    before = out.stat().st_mtime_ns
    res = runner.invoke(main, ["export", str(trained.export), "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {out}: already exists (use --force to overwrite)"
    assert out.stat().st_mtime_ns == before


@pytest.mark.slow
def test_bundle_and_torchscript_exports(runner, trained, tmp_path):
    from fastseg.infer.predictor import load

    b = tmp_path / "safe"
    res = runner.invoke(main, ["export", str(trained.export), "--format", "safetensors", "--out", str(b)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in b.iterdir()) == ["README.md", "config.json", INFO_FILE, WEIGHTS_FILE]
    res = runner.invoke(main, ["export", str(trained.export), "--format", "safetensors", "--out", str(b)])
    assert res.output.strip() == f"Error: {b.absolute()}: already exists (use --force to overwrite)"
    (b / "stale.txt").write_text("x")
    res = runner.invoke(main, ["export", str(trained.export), "--format", "safetensors", "--out", str(b), "--force"])
    assert res.exit_code == 0 and not (b / "stale.txt").exists()  # replaced as a whole
    ts = tmp_path / "m.pt"
    res = runner.invoke(main, ["export", str(b), "--format", "torchscript", "--out", str(ts)])
    assert res.exit_code == 0, res.output
    img = np.random.default_rng(0).integers(0, 255, (80, 72, 3), dtype=np.uint8)
    a = load(b, backend="torch").predict([img])[0]
    t = load(ts).predict([img])[0]
    assert (a == t).mean() >= 0.999


@pytest.mark.slow
def test_onnx_check_failure_writes_nothing(trained, tmp_path, monkeypatch):
    import fastseg.export.formats as export

    monkeypatch.setattr(export, "ONNX_TOLERANCE", 0.0)
    out = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match=r"ONNX output differs from torch by .* \(limit 0\); not written"):
        export.export_model(trained.export, "onnx", out=out)
    assert not out.exists()


def test_written_files_get_umask_permissions_not_private(tmp_path):
    """Temp files are private (0600/0700); the renamed results must get the usual mode."""
    import os

    from fastseg.io import atomic_write_bytes, default_mode

    f = atomic_write_bytes(tmp_path / "x.bin", b"1")
    assert os.stat(f).st_mode & 0o777 == default_mode(0o666)


def test_int8_export_without_its_fp32_check_is_refused(tmp_path):
    """The int8 agreement is measured by inference, a later stage: the export stage takes it as ``int8_check``."""
    import fastseg
    from fastseg.errors import ConfigError
    from fastseg.export.formats import export_model

    with pytest.raises(ConfigError, match="an int8 export needs int8_check to measure it against fp32; "
                                          "use fastseg.export_model"):
        export_model(tmp_path / "model.pkl", "onnx", int8=True)
    assert fastseg.export_model.__module__ == "fastseg.pipeline"
