"""Every format works for the architectures beside the Unet: bundle, TorchScript, ONNX (where ONNX can)."""

import numpy as np
import pytest
import torch

from fastseg.card import ModelCard
from fastseg.errors import ModelError
from fastseg.export.bundle import write_bundle
from fastseg.export.formats import export_model
from fastseg.infer.predictor import load
from fastseg.model import build_model

TINY = "tu-test_efficientnet"
IMAGES = [np.random.default_rng(i).integers(0, 255, shape, dtype=np.uint8) for i, shape in
          enumerate([(50, 70, 3), (150, 200, 3)])]  # sides no arch takes as they are: padded and cropped back


def _bundle(tmp_path, arch: str, encoder: str = TINY):
    torch.manual_seed(0)
    model, _ = build_model(encoder, 3, "none", arch=arch)
    card = ModelCard.from_meta({"arch": arch, "encoder": encoder, "size": 64}, ["a", "b", "c"], [0.5] * 3, [0.25] * 3,
                               model)
    return write_bundle(model.eval(), card, tmp_path / arch)


def _masks(path, **kw):
    return [load(path, **kw).predict([img])[0] for img in IMAGES]  # one image a batch: two sizes


@pytest.mark.parametrize("arch, encoder", [("FPN", "timm-efficientnet-b0"), ("DeepLabV3Plus", TINY), ("PAN", TINY),
                                           ("Segformer", TINY)])
def test_bundle_torchscript_and_onnx_agree(tmp_path, arch, encoder):
    bundle = _bundle(tmp_path, arch, encoder)
    ref = _masks(bundle, backend="torch")
    assert [m.shape for m in ref] == [img.shape[:2] for img in IMAGES]
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx")):
        out = export_model(bundle, fmt, out=tmp_path / name).path
        assert load(out).meta["arch"] == arch
        for a, b in zip(ref, _masks(out)):
            assert (a == b).mean() >= 0.999, fmt


@pytest.mark.parametrize("arch", ["PSPNet", "UPerNet"])
def test_pyramid_pooling_archs_export_torchscript_and_refuse_onnx_in_one_line(tmp_path, arch, capfd):
    bundle = _bundle(tmp_path, arch)
    ref = _masks(bundle, backend="torch")
    out = export_model(bundle, "torchscript", out=tmp_path / "m.pt").path
    assert all((a == b).all() for a, b in zip(ref, _masks(out)))
    with pytest.raises(ModelError) as e:
        export_model(bundle, "onnx", out=tmp_path / "m.onnx")
    assert str(e.value).startswith(f"{tmp_path / 'm.onnx'}: cannot be converted to ONNX with any image size (its "
                                   "AdaptiveAvgPool2d to ")
    assert str(e.value).endswith("use the bundle or --format torchscript")
    assert "graph" not in capfd.readouterr().out  # the exporter's IR dump never reaches the terminal
    assert not (tmp_path / "m.onnx").exists()
    assert load(bundle).backend_note.startswith("torch (")  # auto falls back to torch, saying why not onnx
