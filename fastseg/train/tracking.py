"""Experiment tracking (``fit --log tensorboard|mlflow|wandb``): params, per-epoch metrics, the final
per-class table and the exported model, sent to each tracker the user asked for.

TensorBoard and Weights & Biases go through fastai's own callbacks (``TensorBoardCallback``,
``WandbCallback``: per-batch loss and learning rate, per-epoch metrics); MLflow's fastai autolog
targets older fastai, so a small callback logs its epochs. Every package is optional
(``pip install 'fastseg[mlflow]'``); ``require`` names the missing one before any work starts.
Only the main process tracks (DDP ranks > 0 get an empty ``Trackers``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from pathlib import Path

from fastai.callback.core import Callback

from ..config import LOG_CHOICES
from ..errors import ConfigError

__all__ = ["PACKAGES", "TRACKERS", "require", "Trackers", "open_trackers", "flat_params", "EpochMetrics", "final_metrics",
           "final_rows", "FINAL_COLUMNS", "markdown_table"]

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> module it needs
TRACKERS = {"tensorboard": "track_tensorboard", "mlflow": "track_mlflow", "wandb": "track_wandb"}  # -> fastseg module
assert set(PACKAGES) == set(TRACKERS) == set(LOG_CHOICES)


def require(names) -> None:
    """Raise one ConfigError naming the install command when a tracker's package is missing."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(f"--log {name} needs the {PACKAGES[name]} package, which is not installed "
                              f"(pip install 'fastseg[{name}]', or drop --log {name})")


def flat_params(values: dict, prefix: str = "") -> dict[str, str]:
    """Nested config/plan values as flat ``a.b`` -> string pairs, the form every tracker takes."""
    out = {}
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = v if isinstance(v, str) else json.dumps(v)
    return out


def epoch_metrics(learn) -> dict[str, float]:
    """The epoch's numbers from fastai's Recorder: losses, mIoU, Dice, and the epoch time in seconds."""
    row = dict(zip(learn.recorder.metric_names, learn.recorder.log))
    out = {k: float(v) for k, v in row.items() if k not in ("epoch", "time") and isinstance(v, (int, float))}
    if isinstance(row.get("time"), str):
        out["epoch_time_s"] = sum(float(p) * 60 ** i for i, p in enumerate(reversed(row["time"].split(":"))))
    return out


class EpochMetrics(Callback):
    """Calls ``log(metrics, step)`` after each epoch, ``step`` the run's global epoch."""

    order = 52  # after fastai's Recorder (50) has the epoch's log

    def __init__(self, log):
        self.log_fn, self.offset = log, 0

    def after_epoch(self):
        self.log_fn(epoch_metrics(self.learn), self.offset + self.epoch)


def final_rows(summary: dict) -> list[list]:
    """[class, IoU, Dice, IoU crops, Dice crops] per class: full-resolution and centre-crop scores."""
    full, crops = summary.get("full") or {}, summary.get("crops") or {}
    names = list((full or crops).get("per_class", {}))
    pick = lambda s, n, k: (s.get("per_class", {}).get(n) or {}).get(k)  # noqa: E731
    return [[n, pick(full, n, "iou"), pick(full, n, "dice"), pick(crops, n, "iou"), pick(crops, n, "dice")] for n in names]


FINAL_COLUMNS = ["class", "iou_full", "dice_full", "iou_crops", "dice_crops"]


def markdown_table(rows: list[list]) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(FINAL_COLUMNS) + " |", "|" + "---|" * len(FINAL_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows])


def _safe_key(name: str) -> str:
    """Class names as metric-key parts every tracker accepts (letters, digits, _ - . /)."""
    return re.sub(r"[^0-9A-Za-z_\-./]", "_", name)


def final_metrics(summary: dict) -> dict[str, float]:
    """``final/full/miou``, ``final/full/iou_<class>``... (full images) and ``final/crops/...`` (centre crops);
    no key is a prefix folder of another (MLflow's file store keeps each key as a file path)."""
    out = {}
    for key in ("full", "crops"):
        s = summary.get(key) or {}
        out.update({f"final/{key}/{k}": s.get(k) for k in ("miou", "dice", "pixel_accuracy")})
    for name, iou, dice, *_ in final_rows(summary):
        out.update({f"final/full/iou_{_safe_key(name)}": iou, f"final/full/dice_{_safe_key(name)}": dice})
    return {k: float(v) for k, v in out.items() if v is not None}

class Trackers:
    """The run's trackers: their fastai callbacks, the final summary, and FAILED on an exception (a context)."""

    def __init__(self, items: list | None = None, notify=None):
        self.items, self.notify = list(items or []), notify

    @property
    def cbs(self) -> list:
        return [cb for t in self.items for cb in t.callbacks()]

    def finish(self, summary: dict) -> None:
        """Final per-class table and metrics, the model and report as artifacts; then close each tracker.
        The model is exported by now, so a tracker that fails here is a warning, not a failed run."""
        for t in self.items:
            try:
                t.finish(summary)
            except Exception as e:  # each tracker library raises its own types
                (self.notify or (lambda m: None))(f"Warning: {t.NAME}: could not log the final results "
                                                  f"({type(e).__name__}: {e})")
                t.fail()
        self.items = []

    def fail(self) -> None:
        """Mark every tracker run failed and close it."""
        for t in self.items:
            t.fail()
        self.items = []

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is not None:
            self.fail()


def open_trackers(names, run: str | Path, config: dict, resumed: bool = False, notify=None) -> Trackers:
    """Start one tracker run per name in ``names`` for run folder ``run``, logging ``config`` (and plan.json
    when the run folder has one) as params. A tracker that cannot start raises a ConfigError saying why."""
    import importlib

    run = Path(run)
    params = flat_params(config)
    if (run / "plan.json").is_file():
        params.update(flat_params(json.loads((run / "plan.json").read_text()), "plan."))
    started = []
    for name in names:
        module = importlib.import_module(f".{TRACKERS[name]}", __package__)
        try:
            started.append(module.Tracker(run, params, resumed))
        except ConfigError:
            Trackers(started).fail()
            raise
        except Exception as e:  # each tracker library raises its own types (no login, unreachable server...)
            Trackers(started).fail()
            raise ConfigError(f"--log {name}: cannot start a {name} run ({type(e).__name__}: {e}); "
                              f"{module.HINT}") from None
    return Trackers(started, notify)


def summary_for_trackers(result, outputs=None) -> dict:
    """What ``Trackers.finish`` logs, from a FitResult (and fastseg.report.html.RunOutputs when written)."""
    files = [result.export] + ([f for f in outputs.files if f.suffix in (".csv", ".png")] + [outputs.report]
                               if outputs is not None else [])
    return {"crops": result.metrics, "full": outputs.scores if outputs is not None else None,
            "best_epoch": result.best_epoch, "epochs_run": len(result.history), "export": str(result.export),
            "files": [str(f) for f in files], "time": time.time()}
