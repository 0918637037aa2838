"""Plots people would rather look at than read: LR-finder curve, loss and metric curves, samples, confusion.

Pure drawing from arrays and numbers into image files, so every stage can draw (evaluation's confusion
matrix, the worst-images gallery); ``fastseg.report.plots`` draws a finished run's set with its model.
"""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

__all__ = ["plot_lr_find", "plot_history", "plot_samples", "plot_confusion", "error_map", "plot_gallery"]


def _figure(**kw):
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt, plt.subplots(**kw)


def plot_lr_find(result, dest: str | Path) -> Path:
    """Loss against learning rate (log x), with the four suggestions marked."""
    import numpy as np

    plt, (fig, ax) = _figure(figsize=(6, 4), dpi=110)
    lrs, losses = np.asarray(result.lrs), np.asarray(result.losses)
    ax.plot(lrs, losses, color="#333333", lw=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    finite = losses[np.isfinite(losses)]
    if finite.size:
        ax.set_ylim(finite.min() - 0.05 * abs(finite.min()), min(finite.max(), finite[0] * 2 if finite[0] > 0 else finite.max()) * 1.05)
    colours = {"valley": "#d62728", "slide": "#2ca02c", "minimum": "#1f77b4", "steep": "#ff7f0e"}
    for name, lr in result.suggestions.items():
        y = np.interp(np.log(lr), np.log(lrs), losses) if lrs.size else 0
        ax.plot([lr], [y], "o", color=colours.get(name, "k"), label=f"{name}: {lr:.1e}", ms=7)
    ax.legend(frameon=False)
    ax.set_title("LR finder")
    fig.tight_layout()
    return _save(plt, fig, dest)


def _save(plt, fig, dest) -> Path:
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".") or "png")
    plt.close(fig)
    return dest


def plot_history(rows: list[dict], keys: list[str], dest: str | Path, ylabel: str, title: str) -> Path:
    """One line per ``keys`` entry against the epoch (history.csv rows)."""
    plt, (fig, ax) = _figure(figsize=(6, 4), dpi=110)
    epochs = [r["epoch"] for r in rows]
    for k in keys:
        ax.plot(epochs, [r.get(k, float("nan")) for r in rows], marker="o", ms=3, lw=1.5, label=k.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    return _save(plt, fig, dest)


def _colour(mask, n_classes: int):
    import numpy as np

    from .io import palette_for

    pal = np.asarray(palette_for(n_classes), dtype=np.uint8).reshape(256, 3)
    return pal[mask]


def plot_samples(images: list, truths: list, preds: list, n_classes: int, dest: str | Path) -> Path:
    """A grid: one row per image, columns image | truth | prediction (class colours, void white)."""
    n = len(images)
    plt, (fig, axes) = _figure(nrows=n, ncols=3, figsize=(9, 3 * n), dpi=90, squeeze=False)
    for row, (img, truth, pred) in enumerate(zip(images, truths, preds)):
        for col, (arr, title) in enumerate(((img, "image"), (_colour(truth, n_classes), "truth"),
                                            (_colour(pred, n_classes), "prediction"))):
            axes[row][col].imshow(arr, interpolation="nearest")
            axes[row][col].set_axis_off()
            if row == 0:
                axes[row][col].set_title(title)
    fig.tight_layout()
    return _save(plt, fig, dest)


def error_map(image, truth, pred):
    """The image dimmed to grey, with the pixels where prediction and truth disagree in red (void not counted)."""
    import numpy as np

    from .constants import IGNORE_INDEX

    grey = np.asarray(image, dtype=np.float32)
    grey = grey.mean(axis=2) if grey.ndim == 3 else grey
    out = np.repeat((0.35 * grey + 80).clip(0, 255)[..., None], 3, axis=2).astype(np.uint8)
    wrong = (np.asarray(truth) != np.asarray(pred)) & (np.asarray(truth) != IGNORE_INDEX)
    out[wrong] = (230, 20, 20)
    return out


def plot_gallery(images: list, truths: list, preds: list, titles: list[str], n_classes: int, dest: str | Path) -> Path:
    """Like ``plot_samples`` plus an error-map column, one titled row per image (the worst-images gallery)."""
    n = len(images)
    plt, (fig, axes) = _figure(nrows=n, ncols=4, figsize=(12, 3.2 * n), dpi=90, squeeze=False)
    for row, (img, truth, pred, title) in enumerate(zip(images, truths, preds, titles)):
        panels = ((img, "image"), (_colour(truth, n_classes), "truth"), (_colour(pred, n_classes), "prediction"),
                  (error_map(img, truth, pred), "errors (red)"))
        for col, (arr, name) in enumerate(panels):
            axes[row][col].imshow(arr, interpolation="nearest")
            axes[row][col].set_axis_off()
            axes[row][col].set_title(f"{title}\n{name}" if col == 0 else name, fontsize=9, loc="left" if col == 0 else "center")
    fig.tight_layout()
    return _save(plt, fig, dest)


def plot_confusion(cm, codes, dest: str | Path) -> Path:
    """Row-normalised confusion matrix (truth rows, prediction columns), with the share in each cell."""
    import numpy as np

    cm = np.asarray(cm, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(cm / cm.sum(1, keepdims=True))
    k = len(codes)
    plt, (fig, ax) = _figure(figsize=(2.5 + 0.7 * k, 2 + 0.6 * k), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), codes, rotation=45, ha="right")
    ax.set_yticks(range(k), codes)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion (row-normalised)")
    fig.tight_layout()
    return _save(plt, fig, dest)
