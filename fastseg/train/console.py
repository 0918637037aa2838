"""Training output that reads well in a log file: one line per epoch instead of fastai's progress bars.

fastai's bars redraw themselves with carriage returns, and fastprogress draws them even when stdout
is a file (CI, nohup, ``> log.txt``). When the caller asks for no bars, ``hide_bars`` takes fastai's
``ProgressCallback`` (and its table printer) off the learner for the run and ``EpochLines`` sends one
line per epoch through ``notify``; ``show_bars`` puts them back before the export is pickled, so the
exported learner is the same either way.
"""

from __future__ import annotations

from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastcore.basics import noop

from ..config import Notify

__all__ = ["EpochLines", "epoch_line", "hide_bars", "show_bars"]

LABELS = {"train_loss": "train loss", "valid_loss": "valid loss", "miou": "mIoU", "dice": "Dice"}


def epoch_line(epoch: int, total: int, row: dict) -> str:
    """``epoch 3  train loss 0.4123  valid loss 0.3981  mIoU 0.7712  Dice 0.8530  time 00:41  (4/25)``: the
    run's 0-based epoch, as in history.csv and "best epoch", then how many of the run's epochs are done."""
    parts = [f"epoch {epoch}"]
    for key, label in LABELS.items():
        value = row.get(key)
        if value is not None:
            parts.append(f"{label} {value:.4f}" if isinstance(value, float) else f"{label} {value}")
    if row.get("time") is not None:
        parts.append(f"time {row['time']}")
    return "  ".join(parts) + f"  ({epoch + 1}/{total})"


class EpochLines(Callback):
    """One ``epoch_line`` per completed epoch of the run's ``total``, sent to ``notify``."""

    order = 51  # right after fastai's Recorder (50) has filled in the epoch's log

    def __init__(self, notify: Notify, total: int):
        self.notify, self.total, self.offset = notify, total, 0

    def after_epoch(self):
        row = dict(zip(self.recorder.metric_names, self.recorder.log))
        self.notify(epoch_line(self.offset + self.epoch, self.total, row))


def hide_bars(learn) -> None:
    """No progress bars or printed metric table on ``learn`` (also in the LR finder) until ``show_bars``."""
    if hasattr(learn, "progress"):
        learn.remove_cb(ProgressCallback)
    learn.logger = noop


def show_bars(learn) -> None:
    """fastai's defaults back: the progress callback and ``print`` as the metric logger."""
    if not hasattr(learn, "progress"):
        learn.add_cb(ProgressCallback())
    learn.logger = print
