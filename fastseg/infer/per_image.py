"""Per-image scores: where a model fails, one row per image (as nnU-Net's summary.json lists cases).

Everything starts from one confusion matrix per image (truth rows, prediction columns, void pixels
dropped). Each row keeps, per class, the intersection and the truth and predicted pixel counts, so
summing rows (pixel-weighted) gives back exactly the global confusion-matrix scores; the plain mean
of per-image IoUs is a different number, and both are written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import PredictConfig
from ..io import atomic_write_bytes
from ..metrics import confusion_matrix, scores_from_confusion

__all__ = ["PerImage", "image_confusions", "cleaned_confusions", "per_image_rows", "per_image_scores", "worst_indices",
           "write_per_image", "save_worst", "write_details"]


def image_confusions(predictor, samples: Sequence, decoder, n_classes: int, bs: int = 4,
                     workers: int | str = "auto") -> list[np.ndarray]:
    """One ``n x n`` confusion matrix per sample (in ``samples`` order), the model at full resolution."""
    return cleaned_confusions(predictor, samples, decoder, n_classes, bs, workers)[0]


def cleaned_confusions(predictor, samples: Sequence, decoder, n_classes: int, bs: int = 4, workers: int | str = "auto",
                       post: PredictConfig | None = None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per sample, the confusion matrix of the model's masks and (with ``post``'s min_area / fill_holes) of the
    same masks post-processed (None without): one prediction, both numbers."""
    from .postprocess import postprocess

    cms: list = [None] * len(samples)
    cleaned: list | None = [None] * len(samples) if post is not None and post.postprocess else None
    for p in predictor.iter_predictions([s.image for s in samples], PredictConfig(bs=bs, workers=workers)):
        if p.error is not None:
            raise p.error
        truth = torch.from_numpy(decoder(samples[p.index].mask))
        cms[p.index] = confusion_matrix(torch.from_numpy(p.mask), truth, n_classes).numpy()
        if cleaned is not None:
            mask = postprocess(p.mask, post.min_area, post.fill_holes)
            cleaned[p.index] = confusion_matrix(torch.from_numpy(mask), truth, n_classes).numpy()
    return cms, cleaned


def _num(x) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def per_image_rows(names: Sequence[str], cms: Sequence[np.ndarray], codes: Sequence[str]) -> list[dict]:
    """Per image: mIoU, Dice, pixel accuracy, and per class IoU, Dice, truth/predicted/intersection pixels."""
    rows = []
    for name, cm in zip(names, cms):
        s = scores_from_confusion(cm)
        tp, truth, pred = np.diag(cm), cm.sum(1), cm.sum(0)
        rows.append({"image": name, "miou": _num(s.miou), "dice": _num(s.mdice), "pixel_accuracy": _num(s.pixel_accuracy),
                     "per_class": {c: {"iou": _num(s.iou[i]), "dice": _num(s.dice[i]), "truth_pixels": int(truth[i]),
                                       "pred_pixels": int(pred[i]), "intersection": int(tp[i])}
                                   for i, c in enumerate(codes)}})
    return rows


def worst_indices(rows: Sequence[dict], k: int) -> list[int]:
    """The ``k`` rows with the lowest mIoU (then lowest pixel accuracy); images with no scored pixel last."""
    def key(i):
        r = rows[i]
        return (r["miou"] is None, r["miou"] if r["miou"] is not None else 0.0, r["pixel_accuracy"] or 0.0)

    return sorted(range(len(rows)), key=key)[:max(0, k)]


@dataclass
class PerImage:
    """Per-image rows plus the global scores of their summed confusion matrices."""

    rows: list[dict]
    codes: list[str]
    confusion: np.ndarray  # the sum of the per-image matrices

    @property
    def scores(self) -> dict:
        return scores_from_confusion(self.confusion).as_dict(self.codes)

    def as_dict(self) -> dict:
        """``{"global": ..., "mean_per_image": ..., "images": [...]}`` for per_image.json."""
        return {"global": self.scores, "mean_per_image": _means(self.rows, self.codes), "n_images": len(self.rows),
                "images": self.rows}


def per_image_scores(names: Sequence[str], cms: Sequence[np.ndarray], codes: Sequence[str]) -> PerImage:
    total = np.sum(np.stack(cms), axis=0) if cms else np.zeros((len(codes),) * 2, dtype=np.int64)
    return PerImage(rows=per_image_rows(names, cms, codes), codes=list(codes), confusion=total)


def _means(rows: Sequence[dict], codes: Sequence[str]) -> dict:
    """Plain means over images (NaN-skipping): how a typical image fares, unlike the pixel-weighted global."""
    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {"miou": mean(r["miou"] for r in rows), "dice": mean(r["dice"] for r in rows),
            "pixel_accuracy": mean(r["pixel_accuracy"] for r in rows),
            "per_class": {c: {"iou": mean(r["per_class"][c]["iou"] for r in rows),
                              "dice": mean(r["per_class"][c]["dice"] for r in rows)} for c in codes}}


CLASS_COLUMNS = ("iou", "dice", "truth_pixels", "pred_pixels", "intersection")


def _csv_text(result: PerImage) -> str:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["image", "miou", "dice", "pixel_accuracy", *(f"{c}_{k}" for c in result.codes for k in CLASS_COLUMNS)])
    for r in result.rows:
        cells = [r["image"], r["miou"], r["dice"], r["pixel_accuracy"],
                 *(r["per_class"][c][k] for c in result.codes for k in CLASS_COLUMNS)]
        out.writerow(["" if v is None else f"{v:.6f}" if isinstance(v, float) else v for v in cells])
    return buf.getvalue()


def write_per_image(result: PerImage, folder: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """``folder/per_image.csv`` (one row per image) and ``folder/per_image.json`` (rows, means, global)."""
    from ..train.runs import write_json

    folder = Path(folder)
    csv_path = atomic_write_bytes(folder / "per_image.csv", _csv_text(result).encode())
    json_path = write_json(folder / "per_image.json", {**(extra or {}), **result.as_dict()})
    return csv_path, json_path


def save_worst(predictor, samples: Sequence, result: PerImage, decoder, k: int, dest: str | Path,
               post: PredictConfig | None = None) -> Path | None:
    """A gallery PNG of the ``k`` worst images: image | truth | prediction (post-processed as ``post`` says) |
    errors; None when there are none."""
    from ..figures import plot_gallery

    picks = worst_indices(result.rows, k)
    if not picks:
        return None
    images = [predictor.read(samples[i].image) for i in picks]  # as the model takes them (channels, scaling)
    preds = predictor.predict(images, post)
    truths = [decoder(samples[i].mask) for i in picks]
    titles = [_title(result.rows[i]) for i in picks]
    return plot_gallery([predictor.shown(im) for im in images], truths, preds, titles, len(result.codes), dest)


def _title(row: dict) -> str:
    miou = "n/a" if row["miou"] is None else f"{row['miou']:.3f}"
    acc = "n/a" if row["pixel_accuracy"] is None else f"{row['pixel_accuracy']:.3f}"
    return f"{row['image']}  mIoU {miou}  pixel acc. {acc}"


def write_details(predictor, samples: Sequence, result: PerImage, decoder, folder: str | Path, worst: int = 0,
                  extra: dict | None = None, post: PredictConfig | None = None) -> list[Path]:
    """per_image.csv/.json in ``folder`` (``extra`` keys added to the JSON), and worst.png when ``worst`` > 0.

    Many parameters: worst.png re-predicts its images, so it needs the predictor, samples and mask decoder
    beside the scores; the two callers (evaluate, the run report) hold exactly these values."""
    files = list(write_per_image(result, folder, extra))
    if worst > 0:
        files.append(save_worst(predictor, samples, result, decoder, worst, Path(folder) / "worst.png", post))
    return [f for f in files if f is not None]
