"""Writing the trained learner: fastai ``.pkl`` export, atomically."""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

__all__ = ["export_learner"]


def export_learner(learn, dest: str | Path) -> Path:
    """``learn.export`` to a temporary file beside ``dest``, then rename: never a half-written model."""
    dest = Path(dest).absolute()
    with atomic_path(dest) as tmp:
        learn.export(tmp)  # an absolute fname: learn.path / tmp == tmp
    return dest
