"""Plots people would rather look at than read: the LR-finder curve."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

__all__ = ["plot_lr_find"]


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
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=dest.suffix.lstrip(".") or "png")
    plt.close(fig)
    return dest
