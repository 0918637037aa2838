"""fastai callbacks for a fastseg run: best/last checkpoints, CSV history, early stopping, NaN guard.

They are passed to ``Learner.fit`` per call (never stored in the learner), so none of them ends
up in the exported ``.pkl``. All of them know the run's global epoch (``offset`` + fastai's
epoch), because a run can be several fits: frozen/unfrozen phases, or a resumed remainder.
None of them prints; ``fastseg.train.loop`` reads what they recorded.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import CSVLogger
from fastai.callback.tracker import TrackerCallback

from .runs import RunState, model_state, save_epoch

__all__ = ["ResumedSchedule", "BestCheckpoint", "LastCheckpoint", "RunCSVLogger", "Patience", "StopOnNaN"]


class ResumedSchedule:
    """A one-cycle schedule ``f`` continued from position ``start`` (0-1): maps the remainder onto [start, 1]."""

    def __init__(self, f, start: float):
        self.f, self.start = f, start

    def __call__(self, pos: float):
        return self.f(self.start + pos * (1.0 - self.start))


class BestCheckpoint(TrackerCallback):
    """Tracks the best valid mIoU and its epoch across fits; ``LastCheckpoint`` writes best.pth with last.pth."""

    def __init__(self, best: float | None = None, best_epoch: int | None = None):
        super().__init__(monitor="miou", comp=np.greater, reset_on_fit=False)
        self.best, self.best_epoch, self.offset, self.new_best = best, best_epoch, 0, False

    def after_epoch(self):
        super().after_epoch()
        if self.new_best:
            self.best_epoch = self.offset + self.epoch


class LastCheckpoint(Callback):
    """last.pth (and best.pth on a new best) after every completed epoch, as one ``RunState``.

    Also keeps each epoch's validation confusion matrix (``cms``), so final and best per-class
    scores survive a resume without re-validating. A failed write (disk full) stops the fit and is
    kept in ``failed`` as (epochs completed, error); the previous epoch's files are left intact.
    """

    order = 62  # after the trackers (60, 61) have updated the best score

    def __init__(self, folder: str | Path, base: RunState, best: BestCheckpoint, patience: "Patience | None" = None):
        self.folder, self.base, self.best_cb, self.patience = Path(folder), base, best, patience
        self.cms = list(base.cms)
        self.saved = base.epoch  # epochs completed in the last.pth on disk
        self.failed: tuple[int, OSError] | None = None
        self.offset = 0

    def state(self, epoch: int) -> RunState:
        return dataclasses.replace(
            self.base, epoch=epoch, cms=self.cms, best=self.best_cb.best, best_epoch=self.best_cb.best_epoch,
            wait=self.patience.wait if self.patience is not None else 0,
            stopped=bool(self.patience is not None and self.patience.stopped),
            model=model_state(self.learn), opt=self.learn.opt.state_dict() if self.learn.opt is not None else None)

    def after_epoch(self):
        metric = self.learn.metrics[0]
        self.cms.append(None if metric.cm is None else metric.cm.detach().cpu().to(torch.int64))
        epoch = self.offset + self.epoch + 1
        state = self.state(epoch)
        try:
            save_epoch(self.folder, state, state.model if self.best_cb.new_best else None)
        except OSError as e:
            self.failed = (epoch, e)
            raise CancelFitException() from None
        self.saved = epoch
        if self.patience is not None and self.patience.stopped:
            raise CancelFitException()  # early stop, once the epoch that decided it is saved


class RunCSVLogger(CSVLogger):
    """fastai's CSVLogger with the run's global epoch and one header, also when appending on resume."""

    def __init__(self, fname: str = "history.csv"):
        super().__init__(fname=fname, append=True)
        self.offset = 0

    def before_fit(self):
        if hasattr(self, "gather_preds"):
            return
        path = self.path / self.fname
        fresh = not path.exists() or path.stat().st_size == 0
        self.file = path.open("a")
        if fresh:
            self.file.write(",".join(self.recorder.metric_names) + "\n")
        self.old_logger, self.learn.logger = self.logger, self._write_line

    def _write_line(self, log):
        log = list(log)
        if log:
            log[0] = int(log[0]) + self.offset
        super()._write_line(log)


class Patience(TrackerCallback):
    """Early stopping on valid mIoU after ``patience`` epochs without improvement; silent; resumable."""

    order = 61  # before LastCheckpoint, which saves the decision and then ends the fit

    def __init__(self, patience: int, best: float | None = None, wait: int = 0, stopped: bool = False):
        super().__init__(monitor="miou", comp=np.greater, reset_on_fit=False)
        self.patience, self.best, self.wait, self.stopped = patience, best, wait, stopped

    def after_epoch(self):
        super().after_epoch()
        self.wait = 0 if self.new_best else self.wait + 1
        self.stopped = self.wait >= self.patience


class StopOnNaN(Callback):
    """Stop at the first training batch whose loss is NaN or infinite; remember where."""

    order = -9

    def __init__(self):
        self.where: tuple[int, int, float] | None = None  # (fit epoch, batch, loss value)
        self.offset = 0

    def after_batch(self):
        if not self.training:
            return
        loss = float(self.loss.detach())
        if not math.isfinite(loss):
            self.where = (self.offset + self.epoch, self.iter, loss)
            raise CancelFitException()
