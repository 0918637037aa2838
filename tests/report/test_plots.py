"""A finished run's plots (fastseg.report.plots): curves, sample predictions of its model, its confusion matrix."""

import warnings

import numpy as np
import pytest
from PIL import Image

import fastseg.figures
from fastseg.report import plots


def test_the_drawing_functions_are_the_shared_ones():
    assert all(getattr(plots, name) is getattr(fastseg.figures, name) for name in fastseg.figures.__all__)


@pytest.mark.slow
def test_write_run_plots_draws_the_runs_model_on_its_validation_images(trained, tiny_data, tmp_path):
    from fastai.learner import load_learner

    from fastseg.data.dataset import discover

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(trained.model)
    spec = discover(tiny_data)
    written = plots.write_run_plots(tmp_path, learn, spec, trained.history, np.eye(4), n_samples=1)
    assert [p.name for p in written] == ["losses.png", "metrics.png", "samples.png", "confusion.png"]
    assert all(p.parent == tmp_path for p in written)
    one = Image.open(tmp_path / "samples.png").size
    plots.write_run_plots(tmp_path, learn, spec, trained.history, np.eye(4))  # the default: up to 4 samples
    assert Image.open(tmp_path / "samples.png").size[1] > one[1]  # a row per validation image (the tiny set has 2)
