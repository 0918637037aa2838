"""The exceptions the core raises (fastseg.errors): every one is a FastsegError, which the CLI turns
into one ``Error: ...`` line; Ctrl-C's Interrupted is a TrainingError that carries where the run stands."""

import pytest

import fastseg.errors as errors
from fastseg.errors import FastsegError, Interrupted, TrainingError


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_is_a_fastseg_error_with_a_reason(name):
    cls = getattr(errors, name)
    assert issubclass(cls, FastsegError) and cls.__doc__


def test_interrupted_is_a_training_error_that_says_where_the_run_stands():
    e = Interrupted("interrupted after epoch 2", run="runs/r", epoch=2)
    assert isinstance(e, TrainingError) and str(e) == "interrupted after epoch 2"
    assert (e.run, e.epoch) == ("runs/r", 2)
    assert (Interrupted("before the run folder").run, Interrupted("x").epoch) == (None, None)
