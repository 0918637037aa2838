"""The model card: one typed description, checked on reading, the same in every format."""

import json

import pytest
import torch

from fastseg.card import CARD_VERSION, ModelCard
from fastseg.errors import ModelError

GOOD = {"arch": "FPN", "encoder": "resnet18", "codes": ["bg", "fg"], "mean": [0.5, 0.5, 0.5], "std": [0.25] * 3,
        "size": 64, "input": "crop", "pad_multiple": 32, "min_side": 32}


def test_round_trip_keeps_every_field_and_unknown_keys():
    card = ModelCard.from_dict({**GOOD, "lr": 1e-3, "final": {"miou": 0.5}, "added_by_a_newer_fastseg": [1, 2]})
    assert card.arch == "FPN" and card.codes == ("bg", "fg") and card.n_classes == 2
    assert card.extra == {"added_by_a_newer_fastseg": [1, 2]}
    out = card.to_dict()
    assert out["version"] == CARD_VERSION and out["added_by_a_newer_fastseg"] == [1, 2]
    assert ModelCard.from_dict(out) == card
    assert ModelCard.from_json(card.to_json()).to_dict() == out
    assert json.loads(json.dumps(out)) == out  # JSON-safe


def test_description_of_an_older_fastseg_loads_with_the_values_it_implied():
    """fastseg.json before the card: no version, no arch choice (every model was a Unet), pad_multiple 32."""
    old = {"format": "fastseg-bundle/1", "encoder": "timm-efficientnet-b0", "codes": ["bg", "fg"],
           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": "inputs are ...",
           "void_code": None, "size": 256}
    card = ModelCard.from_dict(old)
    assert (card.arch, card.pad_multiple, card.min_side, card.input, card.in_channels) == ("Unet", 32, 32, "crop", 3)
    assert card.extra == {}  # format and scale are derived, not carried as unknown keys
    assert card.fit_side(50) == 64


def test_newer_card_version_is_refused_with_what_to_do():
    with pytest.raises(ModelError) as e:
        ModelCard.from_dict({**GOOD, "version": CARD_VERSION + 1}, "m.json")
    assert str(e.value) == (f"m.json: model card version {CARD_VERSION + 1} is newer than this fastseg reads "
                            f"({CARD_VERSION}); upgrade fastseg (pip install -U fastseg)")


@pytest.mark.parametrize("change, problem", [
    ({"arch": "DPT"}, "unsupported arch 'DPT'; supported: Unet, UnetPlusPlus, FPN, DeepLabV3, DeepLabV3Plus, "
                      "Linknet, MAnet, PAN, PSPNet, UPerNet, Segformer"),
    ({"pad_multiple": 0}, "pad_multiple must be a whole number from 1 to 1024, got 0"),
    ({"min_side": "32"}, "min_side must be a whole number from 1 to 1024, got '32'"),
    ({"in_channels": 4}, "mean must be a list of 4 numbers (one per input channel), got [0.5, 0.5, 0.5]"),
    ({"agreement": [0.99]}, "agreement must be a mapping, got [0.99]"),
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"best_epoch": 1.5}, "best_epoch must be a whole number, got 1.5"),
    ({"version": "2"}, "version must be a whole number, got '2'"),
])
def test_bad_field_is_one_line_naming_it(change, problem):
    with pytest.raises(ModelError) as e:
        ModelCard.from_dict({**GOOD, **change}, "where")
    assert str(e.value) == f"where: {problem} (re-export the model with `fastseg export`)"


def test_from_meta_reads_the_input_rule_off_the_model():
    from fastseg.model import build_model

    model, _ = build_model("tu-test_efficientnet", 2, "none", arch="PAN")
    card = ModelCard.from_meta({"arch": "PAN", "encoder": "tu-test_efficientnet", "pad_multiple": 32}, ["a", "b"],
                               torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), [0.25] * 3, model)
    assert (card.pad_multiple, card.min_side) == (16, 128)  # the model wins over a stale recorded value
    assert card.mean == (0.5, 0.5, 0.5) and card.fit_side(50) == 128 and card.fit_side(130) == 144


@pytest.mark.slow
def test_every_format_holds_the_same_card(trained, tmp_path):
    """The .pkl's meta, the bundle's fastseg.json, ONNX metadata and the TorchScript extra file: one card."""
    import onnx
    from fastai.learner import load_learner

    from fastseg.export.bundle import bundle_path_for, read_info
    from fastseg.export.formats import export_model

    pkl = load_learner(trained.export).fastseg_info.meta
    bundle = read_info(bundle_path_for(trained.export))
    onnx_path = export_model(trained.export, "onnx", out=tmp_path / "m.onnx").path
    in_onnx = json.loads(next(p.value for p in onnx.load(str(onnx_path)).metadata_props if p.key == "fastseg"))
    extra = {"fastseg.json": ""}
    torch.jit.load(str(export_model(trained.export, "torchscript", out=tmp_path / "m.pt").path), _extra_files=extra)
    in_ts = json.loads(extra["fastseg.json"])
    assert pkl["version"] == CARD_VERSION and pkl["arch"] == "Unet" and pkl["pad_multiple"] == 32
    assert pkl["final"]["miou"] == trained.metrics["miou"] and pkl["images"] == {"train": 8, "valid": 2}
    assert {k: v for k, v in bundle.items() if k != "pkl_sha256"} == pkl
    assert {k: v for k, v in in_onnx.items() if k != "opset"} == pkl and in_onnx["opset"] == 17
    assert in_ts == pkl
