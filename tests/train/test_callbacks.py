"""The run's fastai callbacks (fastseg.train.callbacks): a resumed one-cycle schedule, the NaN guard,
early stopping that survives a resume."""

import math
from types import SimpleNamespace

import pytest
import torch
from fastai.callback.core import CancelFitException

from fastseg.train.callbacks import Patience, StopOnNaN


def test_resumed_schedule_continues_the_one_cycle_curve():
    from fastai.callback.schedule import combined_cos

    from fastseg.train.callbacks import ResumedSchedule

    f = combined_cos(0.25, 1e-4, 1e-2, 1e-7)
    done, total = 2, 5
    g = ResumedSchedule(f, done / total)
    for pos in (0.0, 0.1, 0.5, 0.9):
        assert float(g(pos)) == pytest.approx(float(f(done / total + pos * (1 - done / total))))



def test_stop_on_nan_checks_training_batches_and_says_where():
    cb = StopOnNaN()
    cb.offset = 2  # the run's third fit: global epochs count on
    cb.learn = SimpleNamespace(training=False, loss=torch.tensor(math.nan), epoch=1, iter=3)
    cb.after_batch()  # a validation batch: not the training loss
    cb.learn.training, cb.learn.loss = True, torch.tensor(0.5)
    cb.after_batch()
    assert cb.where is None
    cb.learn.loss = torch.tensor(math.inf)
    with pytest.raises(CancelFitException):
        cb.after_batch()
    assert cb.where == (3, 3, math.inf)


def _epochs(cb, mious):
    for miou in mious:
        cb.learn = SimpleNamespace(recorder=SimpleNamespace(values=[[miou]]))
        cb.after_epoch()


def test_patience_stops_after_epochs_without_a_better_miou_and_resumes_its_count():
    cb = Patience(2)
    cb.idx, cb.best = 0, -math.inf  # what before_fit sets: the mIoU column, no best yet
    _epochs(cb, [0.5, 0.6, 0.55])
    assert (cb.best, cb.wait, cb.stopped) == (0.6, 1, False)
    resumed = Patience(2, best=cb.best, wait=cb.wait)
    resumed.idx = 0
    _epochs(resumed, [0.59])
    assert resumed.stopped and resumed.best == 0.6
