"""The benchmarks' own data preparation: what their reports claim about the data must hold."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import mni_tissue  # noqa: E402


def test_mni_labels_are_the_argmax_of_the_tissue_maps_inside_the_brain():
    t1 = np.array([[0, 10, 10, 10]], np.uint8)
    gm = np.array([[200, 200, 60, 30]], np.uint8)
    wm = np.array([[50, 50, 180, 40]], np.uint8)
    # outside the brain (t1 == 0) -> background whatever the maps say; then grey, white, csf+other
    assert mni_tissue.labels(t1, gm, wm).tolist() == [[0, 2, 3, 1]]
    assert mni_tissue.CODES == ["background", "csf_other", "grey_matter", "white_matter"]


def test_mni_split_keeps_training_slices_away_from_validation_slabs():
    zs = list(range(20, 170, mni_tissue.STEP))
    train, valid = mni_tissue.split_slices(zs)
    assert valid and train and not set(train) & set(valid)
    assert len(valid) % mni_tissue.BLOCK == 0  # whole slabs
    gap = min(abs(t - v) for t in train for v in valid)
    assert gap >= 2 * mni_tissue.STEP  # the slices touching a slab are not trained on
    assert set(train) | set(valid) | {v + d * mni_tissue.STEP for v in valid for d in (-1, 1)} >= set(zs)


def test_plain_loops_time_based_one_cycle_matches_torchs_onecyclelr():
    """The benchmarks' plain loop runs torch's OneCycleLR curve on wall time instead of a step count."""
    import pytest
    import torch
    from isbi_quality import one_cycle_lr

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    total = 1000
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=total, anneal_strategy="cos",
                                                cycle_momentum=False)
    for step in range(total):
        if step % 97 == 0:  # torch's curve reaches its ends at step 0 and total - 1
            assert one_cycle_lr(step / (total - 1)) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-2)  # step rounding
        opt.step()
        sched.step()
