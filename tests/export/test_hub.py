"""The bundle other tools load: SMP's from_pretrained, the Hugging Face layout; and SMP's own folders in fastseg."""

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fastseg.card import ModelCard
from fastseg.cli import main
from fastseg.errors import ConfigError
from fastseg.export.bundle import INFO_FILE, WEIGHTS_FILE, write_bundle
from fastseg.infer.predictor import load
from fastseg.model import build_model

TINY = "tu-test_efficientnet"
FINAL = {"miou": 0.61, "dice": 0.7, "pixel_accuracy": 0.9,
         "per_class": {"bg": {"iou": 0.9, "dice": 0.95, "support": 900}, "cell": {"iou": 0.32, "dice": 0.45, "support": 100}}}


@pytest.fixture
def bundle(tmp_path):
    torch.manual_seed(0)
    model, _ = build_model(TINY, 2, "none", arch="Linknet")
    meta = {"arch": "Linknet", "encoder": TINY, "size": 64, "final": FINAL, "best_epoch": 3, "lr": 2e-3, "epochs": 4,
            "data": "/data/cells", "images": {"train": 8, "valid": 2}, "split": {"valid_pct": 0.2, "seed": 42},
            "config": {"epochs": 4, "loss": "ce+dice", "data": "/secret/path"}}
    card = ModelCard.from_meta(meta, ["bg", "cell"], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], model)
    return write_bundle(model.eval(), card, tmp_path / "cells")


def _smp_from_pretrained(path):
    import segmentation_models_pytorch as smp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smp.from_pretrained(str(path)).eval()


def test_smp_from_pretrained_gives_fastsegs_logits(bundle):
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "config.json", INFO_FILE, WEIGHTS_FILE]
    theirs = _smp_from_pretrained(bundle)
    ours = load(bundle, backend="torch")
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert type(theirs).__name__ == "Linknet"
        assert torch.allclose(theirs(x), ours.backend(x), atol=1e-5)
    assert json.loads((bundle / "config.json").read_text())["encoder_weights"] is None  # loading downloads nothing


def test_folder_saved_by_smp_loads_and_predicts(tmp_path):
    import segmentation_models_pytorch as smp

    net = smp.create_model("FPN", encoder_name=TINY, encoder_weights=None, classes=3).eval()
    net.save_pretrained(str(tmp_path / "smp"))
    said = []
    pred = load(tmp_path / "smp", backend="torch", notify=said.append)
    assert pred.codes == ["class0", "class1", "class2"] and pred.meta["arch"] == "FPN"
    assert said == [f"{tmp_path / 'smp'}: no fastseg.json; inputs normalised with {TINY}'s ImageNet mean and std "
                    "(as SMP's get_preprocessing_params)",
                    f"{tmp_path / 'smp'}: the model names no classes; calling its 3 outputs class0..class2 "
                    "(--classes a,b,... to name them)"]
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    mask = pred.predict([img])[0]
    x = (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - pred.mean.cpu()) / pred.std.cpu()
    with torch.inference_mode():
        expected = net(torch.nn.functional.pad(x, (0, 14, 0, 24), mode="reflect"))[0, :, :40, :50].argmax(0)
    assert np.array_equal(mask, expected.numpy())
    assert load(tmp_path / "smp", backend="torch", classes=["a", "b", "c"]).codes == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"the model has 3 outputs, but 2 class names were given \(a, b\)$"):
        load(tmp_path / "smp", classes=["a", "b"])


def test_predict_cli_names_the_classes_of_an_smp_folder(tmp_path):
    import segmentation_models_pytorch as smp
    from PIL import Image

    smp.create_model("Unet", encoder_name=TINY, encoder_weights=None, classes=2).save_pretrained(str(tmp_path / "m"))
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "m"), str(tmp_path / "a.png"), "--out",
                                    str(tmp_path / "out"), "--classes", "sky,ground", "--overlay"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "a_overlay.jpg").is_file()
    res = CliRunner().invoke(main, ["predict", str(tmp_path / "m"), str(tmp_path / "a.png"), "--classes", "sky,"])
    assert res.exit_code == 2 and "'sky,' is not a comma-separated list of class names" in res.output


def test_fastseg_bundle_refuses_other_class_names(bundle):
    from fastseg.errors import ModelError

    with pytest.raises(ModelError, match=r"the model names its classes bg, cell; drop --classes$"):
        load(bundle, classes=["a", "b"])
