"""``fit --log tensorboard`` (fastseg.train.track_tensorboard): event files hold the config, per-epoch
metrics with one increasing step across the run's fits, the final per-class table and the model's path."""

import importlib.util

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                                   reason="tensorboard is not installed (pip install 'fastseg[tensorboard]')")]


def test_tensorboard_event_files_hold_config_epochs_and_final_table(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _, _ = tracked
    acc = EventAccumulator(str(result.run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert {"train_loss", "lr_0", "valid_loss", "miou", "dice", "final/full/miou", "final/full/iou_triangle"} <= set(scalars)
    assert len(acc.Scalars("miou")) == 2  # one per epoch
    assert acc.Scalars("miou")[-1].value == pytest.approx(result.history[-1]["miou"], rel=1e-5)
    steps = [e.step for e in acc.Scalars("train_loss")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one increasing step across the run's fits
    texts = {t: acc.Tensors(t)[-1].tensor_proto.string_val[0].decode() for t in acc.Tags()["tensors"]}
    assert "lr_find_iters = 30" in texts["config/text_summary"]
    assert "| triangle |" in texts["per_class/text_summary"] and str(result.export) in texts["model/text_summary"]
