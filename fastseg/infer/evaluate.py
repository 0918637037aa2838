"""Scoring an exported model on labelled images at full resolution (``fastseg evaluate``).

Predictions come from ``fastseg.infer.predictor.Predictor`` (pad to a multiple of 32, crop back, no
resize), truths from the data folder through ``fastseg.data.dataset.discover``'s mask mapping; every
pixel of every image goes into one confusion matrix, so the numbers match other tools'. With post-processing
(``--min-area`` / ``--fill-holes``, ``fastseg.infer.postprocess``) the scores are those of the cleaned masks, and
the model's own are kept beside them (``raw_scores``): one prediction, both numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import EVAL_BS, EVAL_SPLIT, SPLIT_CHOICES, Notify, PredictConfig, silent
from ..data.dataset import DataSpec, discover
from ..errors import DataError
from .per_image import PerImage, cleaned_confusions, per_image_scores, write_details

__all__ = ["EvalResult", "SPLITS", "select_split", "evaluate"]

SPLITS = SPLIT_CHOICES


@dataclass
class EvalResult:
    scores: dict  # {"miou", "dice", "pixel_accuracy", "per_class": {name: {"iou", "dice", "support"}}}
    confusion: np.ndarray  # truth rows x prediction columns
    n_images: int
    plot: Path | None
    per_image: PerImage | None = None  # one row per image (fastseg.infer.per_image), in split order
    files: list[Path] = field(default_factory=list)  # per_image.csv/.json and worst.png, when asked for
    raw_scores: dict | None = None  # with post-processing: the scores of the model's masks before it


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


def evaluate(model: str | Path, data: str | Path, split: str = EVAL_SPLIT, plot: str | Path | None = None,
             bs: int = EVAL_BS, details: str | Path | None = None, worst: int = 0, notify: Notify = silent,
             post: PredictConfig | None = None, classes: list[str] | None = None) -> EvalResult:
    """Scores of the exported ``model`` on ``split`` of ``data``; optionally the confusion-matrix PNG, and in
    folder ``details`` the per-image scores (per_image.csv/.json) and a gallery of the ``worst`` images.
    ``post``: a PredictConfig whose min_area / fill_holes clean the masks before scoring; ``classes``: the class
    names of an SMP model folder (``fastseg.infer.predictor.load``).

    Many parameters: ``fastseg evaluate``'s options, each with its default and passed by name; the clean-up
    ones already travel as ``post``."""
    from .predictor import load

    predictor = load(model, notify=notify, classes=classes)  # notify: the pickle notice for a .pkl
    split_meta = predictor.meta.get("split", {})
    opts = predictor.meta.get("data_options") or {}  # --layout/--void/--ignore-index/--colors as in training
    spec = discover(data, valid_pct=split_meta.get("valid_pct", 0.2), seed=split_meta.get("seed", 42),
                    layout=opts.get("layout") or "auto", colors=opts.get("colors"), void=opts.get("void"),
                    ignore_index=opts.get("ignore_index"))
    if list(spec.codes) != list(predictor.codes):
        raise DataError(f"{data}: classes {', '.join(spec.codes)} do not match the model's "
                        f"{', '.join(predictor.codes)} (evaluate on data labelled like the training set)")
    samples = select_split(spec, split)
    # raw mask -> class indices, void as 255: exactly as in training; one confusion matrix per image
    raw, cleaned = cleaned_confusions(predictor, samples, spec.decoder, spec.n_classes, bs, post=post)
    names = [s.image.name for s in samples]
    images = per_image_scores(names, raw if cleaned is None else cleaned, spec.codes)
    cm = images.confusion
    out = None
    if plot is not None:
        from ..figures import plot_confusion

        out = plot_confusion(cm, spec.codes, plot)
    files = write_details(predictor, samples, images, spec.decoder, details, worst, post=post) \
        if details is not None else []
    raw_scores = per_image_scores(names, raw, spec.codes).scores if cleaned is not None else None
    return EvalResult(scores=images.scores, confusion=cm, n_images=len(samples), plot=out, per_image=images, files=files,
                      raw_scores=raw_scores)

