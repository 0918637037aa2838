"""Post-processing predicted masks on synthetic masks: small regions, holes; and through predict/evaluate."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main
from fastseg.config import PredictConfig
from fastseg.errors import ConfigError
from fastseg.infer.postprocess import fill_holes, postprocess, remove_small_regions


def _mask(rows: str) -> np.ndarray:
    return np.array([[int(c) for c in row] for row in rows.split()], np.uint8)


def test_speck_takes_the_class_of_its_surroundings_not_the_background():
    m = _mask("""
        000000
        011110
        012110
        011110
        000000""")
    assert (remove_small_regions(m, 2) == _mask("""
        000000
        011110
        011110
        011110
        000000""")).all()


def test_speck_on_a_border_takes_the_majority_and_diagonals_connect():
    m = _mask("""
        11100
        11200
        11100
        00100""")  # the 2's surroundings: five 1s, three 0s
    out = remove_small_regions(m, 2)
    assert out[1, 2] == 1
    d = _mask("""
        1000
        0100
        0010
        0001""")  # one 8-connected diagonal line of 4 px, kept at min_area 4
    assert (remove_small_regions(d, 4) == d).all()
    assert not remove_small_regions(d, 5).any()


def test_regions_with_only_removed_neighbours_wait_and_lone_ones_stay():
    m = _mask("""
        0000000
        0122220
        0000000""")  # 1 sits next to the small 2s: it waits for them to be decided
    assert not remove_small_regions(m, 5).any()
    single = _mask("""
        11
        11""")
    assert (remove_small_regions(single, 10) == single).all()  # nothing around it to become


def test_fill_holes_fills_background_only_and_the_innermost_region_wins():
    m = _mask("""
        1111111
        1000001
        1022201
        1020201
        1022201
        1000001
        1111111
        0000000""")
    assert (fill_holes(m) == _mask("""
        1111111
        1111111
        1122211
        1122211
        1122211
        1111111
        1111111
        0000000""")).all()
    nucleus = _mask("""
        11111
        10201
        11111""")  # another class inside a region is structure: kept, its background ring filled
    assert (fill_holes(nucleus) == _mask("""
        11111
        11211
        11111""")).all()
    open_bay = _mask("""
        111
        101
        101""")  # background touching the border is no hole
    assert (fill_holes(open_bay) == open_bay).all()


def test_postprocess_is_a_new_array_and_off_by_default():
    m = _mask("010 000")
    out = postprocess(m)
    assert (out == m).all() and out is not m
    assert not postprocess(m, min_area=2).any()
    with pytest.raises(ConfigError, match=r"^min_area must be 0 \(off\) or a number of pixels, got -1$"):
        PredictConfig(min_area=-1)


class Speckled(torch.nn.Module):
    """Logits for class 1 in the left half, class 0 elsewhere, and a one-pixel class-1 speck at (5, 40)."""

    def forward(self, x):
        n, _, h, w = x.shape
        out = torch.zeros(n, 2, h, w)
        out[:, 1, :, : w // 2] = 1
        out[:, 1, 5, 40] = 1
        return out


@pytest.fixture
def speckled():
    from fastseg.infer.predictor import Predictor

    return Predictor(Speckled(), ["bg", "fg"], [0.5] * 3, [0.25] * 3, device=torch.device("cpu"))


def test_predict_applies_min_area(speckled):
    img = np.zeros((32, 64, 3), np.uint8)
    raw = speckled.predict([img])[0]
    assert raw[5, 40] == 1
    clean = speckled.predict([img], min_area=4)[0]
    assert clean[5, 40] == 0 and (clean[:, :32] == 1).all()


def test_predict_cli_says_and_applies_post_processing(tmp_path, monkeypatch, speckled):
    import fastseg.infer.predictor as predictor

    monkeypatch.setattr(predictor, "load", lambda *a, **k: speckled)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["predict", "model", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                                       "--min-area", "4", "--fill-holes"])
    assert res.exit_code == 0, res.output + res.stderr
    assert "post-processing: regions < 4 px merged into their surroundings, background holes inside regions filled" \
        in res.stderr
    assert np.asarray(Image.open(tmp_path / "out" / "a.png"))[5, 40] == 0


def test_evaluate_prints_both_numbers(tmp_path, tiny_data, monkeypatch, speckled):
    import fastseg.infer.predictor as predictor

    speckled.codes = ["background", "disc", "square", "triangle"]
    monkeypatch.setattr(predictor, "load", lambda *a, **k: speckled)
    args = ["evaluate", "model", "--data", str(tiny_data), "--plot", str(tmp_path / "c.png"), "--min-area", "4"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1] == "scores after post-processing (regions < 4 px merged into their surroundings):"
    assert any(line.startswith("before post-processing: mIoU ") for line in lines)
    out = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    assert out["postprocess"] == {"min_area": 4, "fill_holes": False}
    assert out["before_postprocess"]["miou"] != out["miou"]
