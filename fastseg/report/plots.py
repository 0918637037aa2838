"""A finished run's plots: loss and metric curves, sample predictions of its model, its confusion matrix.

The drawing itself is ``fastseg.figures`` (re-exported here, where old code and ``fastseg.plots`` find it).
"""

from __future__ import annotations

from pathlib import Path

from ..figures import error_map, plot_confusion, plot_gallery, plot_history, plot_lr_find, plot_samples

__all__ = ["plot_lr_find", "plot_history", "plot_samples", "plot_confusion", "write_run_plots", "error_map",
           "plot_gallery"]


def write_run_plots(run: Path, learn, spec, history: list[dict], cm, n_samples: int = 4) -> list[Path]:
    """losses.png, metrics.png, samples.png (first validation images, full size) and confusion.png."""
    from ..infer.predictor import Predictor

    run = Path(run)
    out = [plot_history(history, ["train_loss", "valid_loss"], run / "losses.png", "loss", "loss per epoch"),
           plot_history(history, ["miou", "dice"], run / "metrics.png", "score", "validation mIoU and Dice")]
    samples = list(spec.valid[:n_samples])
    predictor = Predictor.from_learner(learn)
    images = [predictor.read(s.image) for s in samples]  # as the model takes them (channels, scaling)
    preds = predictor.predict(images)
    truths = [spec.decoder(s.mask) for s in samples]  # colour masks too (codes.csv, CVAT), as in training
    out.append(plot_samples([predictor.shown(im) for im in images], truths, preds, spec.n_classes, run / "samples.png"))
    out.append(plot_confusion(cm, spec.codes, run / "confusion.png"))
    return out
