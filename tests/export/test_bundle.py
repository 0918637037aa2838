"""The safe bundle (fastseg.export.bundle): written whole, read back without unpickling, its card checked."""

import json

import pytest
import torch

from fastseg.card import ModelCard
from fastseg.errors import ModelError
from fastseg.export.bundle import (INFO_FILE, WEIGHTS_FILE, bundle_path_for, is_bundle, read_bundle, read_card,
                                   write_bundle)
from fastseg.infer.predictor import load
from fastseg.model import build_model

TINY = "tu-test_efficientnet"
CARD = {"arch": "FPN", "encoder": TINY, "codes": ["bg", "a", "b"], "mean": [0.5] * 3, "std": [0.25] * 3, "size": 64}


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TINY, 3, "none", arch="FPN")[0].eval()


def test_bundle_paths():
    assert bundle_path_for("exports/model.pkl").as_posix() == "exports/model"
    assert bundle_path_for("exports/model").as_posix() == "exports/model_bundle"  # never the file itself


def test_write_then_read_gives_the_same_weights_and_card(model, tmp_path):
    dest = write_bundle(model, CARD, tmp_path / "m")
    assert dest == tmp_path / "m" and is_bundle(dest) and is_bundle(dest / WEIGHTS_FILE)
    back, card = read_bundle(dest / INFO_FILE)  # a file in the folder names the bundle too
    assert card == ModelCard.from_dict(CARD) and card == read_card(dest)
    theirs = back.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    assert not back.training


def test_write_bundle_replaces_only_a_bundle_and_only_with_force(model, tmp_path):
    dest = write_bundle(model, CARD, tmp_path / "m")
    with pytest.raises(ModelError, match=r"m: already exists \(use --force to overwrite\)$"):
        write_bundle(model, CARD, dest)
    (dest / "stale.txt").write_text("x")
    write_bundle(model, {**CARD, "codes": ["x", "y", "z"]}, dest, force=True)
    assert read_card(dest).codes == ("x", "y", "z") and not (dest / "stale.txt").exists()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"mine")
    with pytest.raises(ModelError, match=r"photos: exists and is not a fastseg bundle \(choose another --out\)$"):
        write_bundle(model, CARD, tmp_path / "photos", force=True)
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"mine"


def test_weights_that_do_not_fit_the_card_are_one_line(model, tmp_path):
    dest = write_bundle(model, CARD, tmp_path / "m")
    info = json.loads((dest / INFO_FILE).read_text())
    (dest / INFO_FILE).write_text(json.dumps({**info, "codes": ["bg", "a"]}))
    with pytest.raises(ModelError, match=r"model.safetensors: weights do not fit FPN/tu-test_efficientnet with 2 "
                                         r"classes \(") as e:
        read_bundle(dest)
    assert "\n" not in str(e.value)
    (dest / WEIGHTS_FILE).write_bytes(b"truncated")
    with pytest.raises(ModelError, match=r"model.safetensors: cannot read weights \(.*\); re-export the bundle$"):
        read_bundle(dest)


def test_bad_bundle_json_is_a_model_error(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "fastseg.json").write_text('{"arch": "Unet"}')
    with pytest.raises(ModelError, match=r"fastseg.json: missing encoder, codes, mean, std \(not a fastseg bundle"):
        load(b)
    (b / "fastseg.json").write_text("{")
    with pytest.raises(ModelError, match="fastseg.json: not valid JSON"):
        load(b)


@pytest.mark.slow
def test_bundle_loads_without_unpickling(trained, monkeypatch):
    import pickle

    def forbidden(*a, **k):
        raise AssertionError("unpickling while loading a bundle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    pred = load(bundle_path_for(trained.export), backend="torch")
    assert pred.codes == ["background", "disc", "square", "triangle"]
    assert pred.meta["encoder"] == "timm-efficientnet-b0" and len(pred.meta["mean"]) == 3
