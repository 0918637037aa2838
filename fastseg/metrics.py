"""Segmentation metrics from one confusion matrix accumulated over the whole validation set.

Per-batch averaging over-weights small batches and images with few pixels of a class; summing a
confusion matrix and computing IoU/Dice once at the end does not. Void pixels (IGNORE_INDEX) are
excluded everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from fastai.learner import Metric

from .constants import IGNORE_INDEX


__all__ = ["class_argmax", "confusion_matrix", "scores_from_confusion", "Scores", "ConfusionMetric", "MeanIoU", "MeanDice"]


def class_argmax(scores: torch.Tensor, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``scores.argmax(dim=1)`` for N x C x H x W scores, first maximum on ties, ~10-30x faster on CPU.

    torch's argmax over a strided middle dimension of a contiguous NCHW tensor is slow (435 ms for
    8 x 2 x 512 x 512 on 2 cores: a tenth of an ONNX Runtime forward); a running maximum over the C
    class planes reads memory in order (14 ms).
    """
    best = scores[:, 0]
    index = torch.zeros(best.shape, dtype=dtype, device=scores.device)
    for c in range(1, scores.shape[1]):
        better = scores[:, c] > best
        index.masked_fill_(better, c)
        best = torch.maximum(best, scores[:, c])
    return index


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``n_classes x n_classes`` counts (rows: truth, columns: prediction), void pixels dropped."""
    pred, target = pred.reshape(-1), target.reshape(-1).long()
    keep = target != IGNORE_INDEX
    idx = target[keep] * n_classes + pred[keep].long()
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class Scores:
    iou: np.ndarray  # per class; NaN where a class is absent from both truth and prediction
    dice: np.ndarray
    support: np.ndarray  # truth pixels per class
    pixel_accuracy: float

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou)) if np.isfinite(self.iou).any() else float("nan")

    @property
    def mdice(self) -> float:
        return float(np.nanmean(self.dice)) if np.isfinite(self.dice).any() else float("nan")

    def as_dict(self, codes) -> dict:
        return {
            "miou": self.miou, "dice": self.mdice, "pixel_accuracy": self.pixel_accuracy,
            "per_class": {name: {"iou": _num(self.iou[i]), "dice": _num(self.dice[i]), "support": int(self.support[i])}
                          for i, name in enumerate(codes)},
        }


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def scores_from_confusion(cm) -> Scores:
    cm = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    tp = np.diag(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (truth + predicted - tp)
        dice = 2 * tp / (truth + predicted)
        acc = tp.sum() / cm.sum() if cm.sum() else float("nan")
    return Scores(iou=iou, dice=dice, support=truth.astype(np.int64), pixel_accuracy=float(acc))


class ConfusionMetric(Metric):
    """fastai metric base: accumulates the confusion matrix on the batch's device, syncs once per epoch.

    Subclasses pick the number to report via ``_pick``. Top-level so exported learners unpickle.
    """

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.cm = None

    def reset(self):
        self.cm = None

    def accumulate(self, learn):
        pred = class_argmax(learn.pred)
        cm = confusion_matrix(pred, learn.yb[0], self.n_classes)
        self.cm = cm if self.cm is None else self.cm + cm

    @property
    def scores(self) -> Scores:
        return scores_from_confusion(self.cm if self.cm is not None else np.zeros((self.n_classes,) * 2))

    @property
    def value(self):
        return self._pick(self.scores)

    def _pick(self, s: Scores) -> float:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__.lower()


class MeanIoU(ConfusionMetric):
    """Mean over classes of intersection over union."""

    def _pick(self, s: Scores) -> float:
        return s.miou

    @property
    def name(self) -> str:
        return "miou"


class MeanDice(ConfusionMetric):
    """Mean over classes of the Dice coefficient (F1 per pixel)."""

    def _pick(self, s: Scores) -> float:
        return s.mdice

    @property
    def name(self) -> str:
        return "dice"
