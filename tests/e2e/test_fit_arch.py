"""Training another architecture end to end: fit, the bundle SMP loads, evaluate, predict."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastseg.cli import main

pytestmark = pytest.mark.slow


def test_fit_pspnet_exports_a_bundle_smp_loads(tiny_data, tmp_path):
    import segmentation_models_pytorch as smp

    from fastseg.config import FitConfig
    from fastseg.export.bundle import bundle_path_for
    from fastseg.infer.predictor import load
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(tiny_data), arch="PSPNet", encoder="tu-test_efficientnet", epochs=1, lr=1e-3, bs=4,
                    weights="none", export=str(tmp_path / "model.pkl"), precision="fp32", runs_dir=str(tmp_path / "runs"))
    result = fit(cfg)
    bundle = bundle_path_for(result.export)
    card = json.loads((bundle / "fastseg.json").read_text())
    assert (card["arch"], card["pad_multiple"], card["min_side"]) == ("PSPNet", 8, 8)
    assert json.loads((bundle / "config.json").read_text())["_model_class"] == "PSPNet"
    assert "valid mean IoU" in (bundle / "README.md").read_text()
    theirs = smp.from_pretrained(str(bundle)).eval()
    ours = load(bundle, backend="torch")
    img = np.random.default_rng(0).integers(0, 255, (44, 60, 3), dtype=np.uint8)
    x = torch.nn.functional.pad(ours._normalised(img[None]), (0, 4, 0, 4), mode="reflect")  # PSPNet: sides / 8
    with torch.inference_mode():
        assert torch.allclose(theirs(x), ours.backend(x), atol=1e-5)
    assert load(result.export, backend="torch").predict([img])[0].shape == (44, 60)  # the .pkl, same card
    res = CliRunner().invoke(main, ["evaluate", str(bundle), "--data", str(tiny_data), "--plot",
                                    str(tmp_path / "c.png"), "--min-area", "10", "--fill-holes"])
    assert res.exit_code == 0, res.output
    assert "before post-processing: mIoU" in res.output
