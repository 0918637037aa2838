"""fastai callbacks for a fastseg run: best/last checkpoints, CSV history, early stopping, NaN guard.

They are passed to ``Learner.fit`` per call (never stored in the learner), so none of them ends
up in the exported ``.pkl``. All of them know the run's global epoch (``offset`` + fastai's
epoch), because a run can be several fits: frozen/unfrozen phases, or a resumed remainder.
None of them prints; ``fastseg.train`` reads what they recorded.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import CSVLogger
from fastai.callback.tracker import SaveModelCallback, TrackerCallback

from .io import atomic_path
from .device import plain_model
from .runs import save_checkpoint

__all__ = ["ResumedSchedule", "BestCheckpoint", "LastCheckpoint", "RunCSVLogger", "Patience", "StopOnNaN"]


class ResumedSchedule:
    """A one-cycle schedule ``f`` continued from position ``start`` (0-1): maps the remainder onto [start, 1]."""

    def __init__(self, f, start: float):
        self.f, self.start = f, start

    def __call__(self, pos: float):
        return self.f(self.start + pos * (1.0 - self.start))


class BestCheckpoint(SaveModelCallback):
    """``best.pth`` whenever valid mIoU improves, written atomically; silent; keeps its best across fits."""

    def __init__(self, fname: str = "best", best: float | None = None, best_epoch: int | None = None):
        super().__init__(monitor="miou", comp=np.greater, fname=fname, reset_on_fit=False)
        self.best, self.best_epoch, self.offset = best, best_epoch, 0

    def _save(self, name):
        from fastai.learner import save_model

        dest = Path(self.learn.path) / self.learn.model_dir / f"{name}.pth"
        with atomic_path(dest) as tmp:
            save_model(tmp, plain_model(self.learn.model), None, with_opt=False)
        self.last_saved_path = dest

    def after_epoch(self):
        TrackerCallback.after_epoch(self)
        if self.new_best:
            self.best_epoch = self.offset + self.epoch
            self._save(self.fname)

    def after_fit(self):
        self.run = True  # fastseg loads best.pth itself once the whole run (all fits) is over


class LastCheckpoint(Callback):
    """``last.pth`` after every completed epoch: model, optimiser, epochs done, and the run's state.

    Also keeps each epoch's validation confusion matrix (``cms``), so final and best per-class
    scores survive a resume without re-validating.
    """

    order = 62  # after the trackers (60, 61) have updated the best score

    def __init__(self, dest: str | Path, state: dict, best: BestCheckpoint, patience: "Patience | None" = None,
                 cms: list | None = None):
        self.dest, self.state, self.best_cb, self.patience = Path(dest), state, best, patience
        self.cms = list(cms or [])
        self.offset = 0

    def after_epoch(self):
        metric = self.learn.metrics[0]
        self.cms.append(None if metric.cm is None else metric.cm.detach().cpu().numpy().astype(np.int64))
        save_checkpoint(self.dest, self.learn, epoch=self.offset + self.epoch + 1, cms=self.cms,
                        best=self.best_cb.best, best_epoch=self.best_cb.best_epoch,
                        wait=self.patience.wait if self.patience is not None else 0, **self.state)


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

    order = 63  # last: LastCheckpoint has saved the epoch before this may stop the fit

    def __init__(self, patience: int, best: float | None = None, wait: int = 0):
        super().__init__(monitor="miou", comp=np.greater, reset_on_fit=False)
        self.patience, self.best, self.wait, self.stopped = patience, best, wait, False

    def after_epoch(self):
        super().after_epoch()
        self.wait = 0 if self.new_best else self.wait + 1
        if self.wait >= self.patience:
            self.stopped = True
            raise CancelFitException()


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
