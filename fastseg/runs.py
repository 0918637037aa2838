"""The run folder ``runs/<name>/``: creating it, its JSON files, and the resumable checkpoint.

Layout: config.json (the resolved FitConfig), history.csv, metrics.json, the plots, best.pth
(weights of the best epoch by valid mIoU) and last.pth (weights, optimiser, epoch and the run's
bookkeeping after every completed epoch). Every file is written atomically, so a kill -9 leaves
the previous complete version in place.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from .config import FitConfig
from .device import plain_model
from .errors import ConfigError, TrainingError
from .io import atomic_path, atomic_write_bytes

__all__ = ["new_run_dir", "write_json", "read_run_config", "save_checkpoint", "load_checkpoint"]


def new_run_dir(runs_dir: str | Path, name: str | None) -> Path:
    """Create ``runs_dir/name`` (a timestamp when ``name`` is None); never reuse an existing folder."""
    runs_dir = Path(runs_dir)
    if name is not None:
        run = runs_dir / name
        if run.exists():
            raise ConfigError(f"{run}: run folder already exists (choose another --name, or --resume {run})")
        run.mkdir(parents=True)
        return run
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        run = runs_dir / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            run.mkdir(parents=True)
            return run
        except FileExistsError:
            continue
    raise ConfigError(f"{runs_dir}: cannot find a free run folder name for {stamp} (pass --name)")


def write_json(dest: str | Path, values: Any) -> Path:
    return atomic_write_bytes(dest, (json.dumps(values, indent=2, allow_nan=False, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_run_config(run: str | Path) -> FitConfig:
    """The FitConfig a run folder was started with (its config.json)."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise TrainingError(f"{run}: not a run folder (no config.json; pass a folder under runs/)")
    return FitConfig.from_file(path)


def save_checkpoint(dest: str | Path, learn, **state: Any) -> Path:
    """Model, optimiser and ``state`` (epoch, lr, best score...) in one file, atomically."""
    payload = {"model": plain_model(learn.model).state_dict(), "opt": learn.opt.state_dict() if learn.opt is not None else None,
               **state}
    with atomic_path(dest) as tmp:
        torch.save(payload, tmp)
    return Path(dest)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from (the run stopped before its first epoch "
                            "ended; start it again)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by save_checkpoint
    except Exception as e:
        raise TrainingError(f"{path}: cannot read checkpoint ({e.__class__.__name__})") from None
