"""Reading a model file or folder as a torch module and its card (fastseg.export.read): what kind it is, told
by content, and one line for anything else (the unpickling faults: tests/faults/test_faults_loading.py)."""

import json
import zipfile

import pytest
import torch

from fastseg.errors import ConfigError, ModelError
from fastseg.export.read import MODEL_KINDS, card_from_text, model_kind, read_model
from fastseg.infer.predictor import load


def _torchscript(path):
    torch.jit.script(torch.nn.Conv2d(3, 2, 1)).save(str(path))
    return path


def test_model_kind_by_folder_suffix_and_content(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "fastseg.json").write_text("{}")
    for name in ("m.onnx", "m.pkl", "M.ONNX"):
        (tmp_path / name).write_bytes(b"x")
    assert model_kind(tmp_path / "b") == model_kind(tmp_path / "b" / "fastseg.json") == "bundle"
    assert [model_kind(tmp_path / n) for n in ("m.onnx", "m.pkl", "M.ONNX")] == ["onnx", "pkl", "onnx"]
    assert model_kind(_torchscript(tmp_path / "model.any")) == "torchscript"  # whatever the suffix
    with pytest.raises(ModelError, match=r"nope.pt: model file not found$"):
        model_kind(tmp_path / "nope.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "weights.ts")  # a torch.save archive is not TorchScript
    with pytest.raises(ModelError) as e:
        model_kind(tmp_path / "weights.ts")
    assert str(e.value) == f"{tmp_path / 'weights.ts'}: not a model fastseg loads; expected {MODEL_KINDS}"


def test_class_names_are_for_smp_folders_only(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"m.onnx: --classes names the outputs of an SMP model folder only; "):
        model_kind(tmp_path / "m.onnx", classes=["a", "b"])


def test_a_checkpoint_of_an_unfinished_run_says_to_finish_it(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"export": str(tmp_path / "exports" / "model.pkl")}))
    with zipfile.ZipFile(run / "last.pth", "w") as z:
        z.writestr("archive/data.pkl", b"x")
    with pytest.raises(ModelError) as e:
        model_kind(run / "last.pth")
    assert str(e.value) == (f"{run / 'last.pth'}: a training checkpoint, not a model fastseg loads; finish the run "
                            f"(`fastseg fit --resume {run}`) to export its model")


def test_card_from_text_needs_fastseg_metadata(tmp_path):
    card = {"arch": "Unet", "encoder": "timm-efficientnet-b0", "codes": ["bg", "fg"], "mean": [0.5] * 3, "std": [0.25] * 3}
    assert card_from_text(json.dumps(card), tmp_path / "m.pt").codes == ("bg", "fg")
    for text in (None, "", "{", "[]", json.dumps({"codes": ["bg", "fg"]})):
        with pytest.raises(ModelError, match=r"m.pt: has no fastseg metadata \(export it with `fastseg export`\)$"):
            card_from_text(text, tmp_path / "m.pt")


def test_torchscript_without_a_card_and_onnx_without_a_torch_model(tmp_path):
    ts = _torchscript(tmp_path / "m.pt")  # scripted by hand, not by `fastseg export`
    with pytest.raises(ModelError, match=r"m.pt: has no fastseg metadata"):
        read_model(ts, "torchscript")
    with pytest.raises(ModelError, match=r"m.onnx: has no torch model to export$"):
        read_model(tmp_path / "m.onnx", "onnx")


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="folder without fastseg.json"):
        load(tmp_path)
