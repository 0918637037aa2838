"""Per-image scores: rows that sum back to the global confusion-matrix numbers, the worst-images gallery,
``evaluate --per-image --worst K`` and the full-resolution pass ``fit`` writes into the run folder."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fastseg.cli import main
from fastseg.metrics import scores_from_confusion
from fastseg.infer.per_image import per_image_scores, worst_indices

CODES = ["background", "disc", "square", "triangle"]


def _sum_back(rows, codes):
    """Global per-class IoU, Dice and pixel accuracy from the rows' pixel counts alone (pixel-weighted)."""
    tp = np.array([sum(r["per_class"][c]["intersection"] for r in rows) for c in codes], dtype=float)
    truth = np.array([sum(r["per_class"][c]["truth_pixels"] for r in rows) for c in codes], dtype=float)
    pred = np.array([sum(r["per_class"][c]["pred_pixels"] for r in rows) for c in codes], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (truth + pred - tp), 2 * tp / (truth + pred), tp.sum() / truth.sum()


def test_per_image_rows_sum_back_to_the_global_scores():
    rng = np.random.default_rng(0)
    cms = [rng.integers(0, 50, size=(4, 4)) * (rng.random((4, 4)) > 0.3) for _ in range(7)]
    cms[2][3, :] = cms[2][:, 3] = 0  # a class absent from one image: NaN there, still counted globally
    result = per_image_scores([f"im{i}.png" for i in range(7)], cms, CODES)
    want = scores_from_confusion(np.sum(cms, axis=0))
    iou, dice, acc = _sum_back(result.rows, CODES)
    np.testing.assert_allclose(iou, want.iou)
    np.testing.assert_allclose(dice, want.dice)
    assert acc == pytest.approx(want.pixel_accuracy) == pytest.approx(result.scores["pixel_accuracy"])
    assert result.rows[2]["per_class"]["triangle"]["iou"] is None
    plain = np.mean([r["miou"] for r in result.rows])  # the per-image mean is another number, reported beside
    assert result.as_dict()["mean_per_image"]["miou"] == pytest.approx(plain)


def test_worst_indices_lowest_miou_first_unscored_last():
    rows = [{"miou": 0.9, "pixel_accuracy": 0.9}, {"miou": None, "pixel_accuracy": None},
            {"miou": 0.2, "pixel_accuracy": 0.8}, {"miou": 0.2, "pixel_accuracy": 0.5}]
    assert worst_indices(rows, 3) == [3, 2, 0]
    assert worst_indices(rows, 10)[-1] == 1 and worst_indices(rows, 0) == []


@pytest.mark.slow
def test_evaluate_per_image_and_worst_gallery(trained, tiny_data, tmp_path):
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["evaluate", str(trained.export), "--data", str(tiny_data), "--split", "all",
                                    "--plot", str(tmp_path / "cm.png"), "--per-image", "--worst", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f"per-image scores saved to {out / 'per_image.csv'}, {out / 'per_image.json'}, {out / 'worst.png'}" in res.output
    assert res.output.count("  worst: ") == 3
    with (out / "per_image.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 10 and {"image", "miou", "background_iou", "triangle_pred_pixels"} <= set(table[0])
    assert sum(int(r[f"{c}_truth_pixels"]) for r in table for c in CODES) == 10 * 64 * 64  # every pixel, once
    saved = json.loads((out / "per_image.json").read_text())
    iou, _, acc = _sum_back(saved["images"], CODES)
    for k, c in enumerate(CODES):  # the CSV/JSON rows, summed, are the numbers evaluate prints
        want = saved["global"]["per_class"][c]["iou"]
        assert (np.isnan(iou[k]) and want is None) or iou[k] == pytest.approx(want)
    assert acc == pytest.approx(saved["global"]["pixel_accuracy"])
    gallery = Image.open(out / "worst.png")
    assert gallery.format == "PNG" and gallery.height > gallery.width / 4 * 2  # 3 rows of 4 panels


@pytest.mark.slow
def test_fit_scores_the_exported_model_per_image_at_full_resolution(trained):
    run = trained.run
    for name in ("per_image.csv", "per_image.json", "worst.png", "env.json", "report.html"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "per_image.json").read_text())
    assert saved["n_images"] == 2 and saved["resolution"] == "full" and saved["epoch"] == trained.best_epoch
    # 64 px images validate uncropped, so training's (centre-crop) scores and the full-image pass agree
    assert saved["global"]["miou"] == pytest.approx(trained.metrics["miou"])
    assert saved["crop_scores"]["miou"] == pytest.approx(trained.metrics["miou"])
    assert trained.outputs.scores["miou"] == pytest.approx(saved["global"]["miou"])
    env = json.loads((run / "env.json").read_text())
    assert env["device"] == "cpu" and env["precision"] == "fp32" and env["torch"]
