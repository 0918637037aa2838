"""Scoring an exported model on labelled images at full resolution (``fastseg evaluate``).

Predictions come from ``fastseg.predict.Predictor`` (pad to a multiple of 32, crop back, no
resize), truths from the data folder through ``fastseg.data.discover``'s mask mapping; every
pixel of every image goes into one confusion matrix, so the numbers match other tools'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import PredictConfig
from .data import DataSpec, discover
from .errors import DataError
from .metrics import confusion_matrix, scores_from_confusion

__all__ = ["EvalResult", "SPLITS", "select_split", "evaluate"]

SPLITS = ("valid", "test", "all")


@dataclass
class EvalResult:
    scores: dict  # {"miou", "dice", "pixel_accuracy", "per_class": {name: {"iou", "dice", "support"}}}
    confusion: np.ndarray  # truth rows x prediction columns
    n_images: int
    plot: Path | None


def select_split(spec: DataSpec, split: str) -> list:
    """The samples of ``split`` as ``discover`` split them: valid, test (the layout's own test split and
    ``<data>/test.txt``'s images, never trained on), or all."""
    if split == "valid":
        return list(spec.valid)
    if split == "all":
        return [*spec.train, *spec.valid, *spec.test]
    if split != "test":
        raise DataError(f"unknown split `{split}`; valid splits: {', '.join(SPLITS)}")
    if not spec.test:
        raise DataError(f"{spec.root / 'test.txt'}: no test.txt (list the test images there, one name per line, "
                        "or use --split valid|all)")
    return list(spec.test)


def evaluate(model: str | Path, data: str | Path, split: str = "valid", plot: str | Path | None = None,
             bs: int = 4) -> EvalResult:
    """Scores of the exported ``model`` on ``split`` of ``data``; optionally the confusion-matrix PNG."""
    from .predict import load

    predictor = load(model)
    split_meta = predictor.meta.get("split", {})
    opts = predictor.meta.get("data_options") or {}  # --layout/--void/--ignore-index/--colors as in training
    spec = discover(data, valid_pct=split_meta.get("valid_pct", 0.2), seed=split_meta.get("seed", 42),
                    layout=opts.get("layout") or "auto", colors=opts.get("colors"), void=opts.get("void"),
                    ignore_index=opts.get("ignore_index"))
    if list(spec.codes) != list(predictor.codes):
        raise DataError(f"{data}: classes {', '.join(spec.codes)} do not match the model's "
                        f"{', '.join(predictor.codes)} (evaluate on data labelled like the training set)")
    samples = select_split(spec, split)
    n = spec.n_classes
    decode = spec.decoder  # raw mask -> class indices, void as 255: exactly as in training
    cm = torch.zeros((n, n), dtype=torch.int64)
    for p in predictor.iter_predictions([s.image for s in samples], PredictConfig(bs=bs)):
        if p.error is not None:
            raise p.error
        truth = decode(samples[p.index].mask)
        cm += confusion_matrix(torch.from_numpy(p.mask), torch.from_numpy(truth), n)
    scores = scores_from_confusion(cm).as_dict(spec.codes)
    out = None
    if plot is not None:
        from .plots import plot_confusion

        out = plot_confusion(cm.numpy(), spec.codes, plot)
    return EvalResult(scores=scores, confusion=cm.numpy(), n_images=len(samples), plot=out)
