"""Progressive resizing's rule and step count (fastseg.train.progressive), against the phases train.py plans."""

from types import SimpleNamespace

import pytest

from fastseg.config import FitConfig
from fastseg.train.progressive import crops_per_image, optimiser_steps, progressive_size, small_epochs


def isbi_like(min_side=512, n_train=24):
    return SimpleNamespace(min_side=min_side, train=[None] * n_train)


def test_progressive_size_rules():
    """auto: half-size crops only when images are at least twice the crop; on/off; short runs stay at one size."""
    big, small = SimpleNamespace(min_side=512), SimpleNamespace(min_side=300)
    cfg = FitConfig(epochs=14)
    assert progressive_size(cfg, big, 256) == (128, "auto: images >= 2 x crop 256")
    assert progressive_size(cfg, small, 256) == (None, "auto: smallest image side 300 < 2 x crop 256")
    assert progressive_size(cfg.replace(progressive="on"), small, 256) == (128, "--progressive on")
    assert progressive_size(cfg.replace(progressive="off"), big, 256)[0] is None
    assert progressive_size(cfg.replace(epochs=3), big, 256) == (None, "3 epochs < 4")
    assert progressive_size(cfg.replace(progressive="on"), big, 32)[0] is None  # a 16 px crop cannot pass the Unet
    assert progressive_size(cfg, big, 96)[0] == 32  # half of 96, down to a multiple of 32


def test_small_epochs_split_and_crops_per_image():
    assert small_epochs(17) == 11 and small_epochs(14) == 9 and small_epochs(4) == 2
    assert small_epochs(1) == 0  # nothing to split
    assert crops_per_image(256, 128) == 4 and crops_per_image(96, 32) == 9 and crops_per_image(224, 96) == 5


def test_optimiser_steps_count_the_half_size_crops():
    """The ISBI benchmark's run: 11 epochs of 4 x 24 half-size crops (12 batches of 8), 6 epochs of 3 batches."""
    cfg = FitConfig(epochs=17)
    assert progressive_size(cfg, isbi_like(), 256)[0] == 128
    assert optimiser_steps(cfg, isbi_like(), 256, 8) == 11 * 12 + 6 * 3
    assert optimiser_steps(cfg.replace(progressive="off"), isbi_like(), 256, 8) == 17 * 3
    assert optimiser_steps(cfg, isbi_like(min_side=300), 256, 8) == 17 * 3  # auto: images too small to split
    assert optimiser_steps(cfg.replace(epochs=3), isbi_like(), 256, 8) == 3 * 3  # too short to split
    assert optimiser_steps(cfg, isbi_like(n_train=5), 256, 8) == 11 * 2 + 6 * 1  # fewer images than a batch: 1 step


@pytest.mark.parametrize("epochs,pretrained", [(4, False), (17, False), (25, False), (10, True)])
def test_optimiser_steps_match_the_planned_phases(epochs, pretrained):
    """The count --aug auto uses is the one plan_phases trains (trained epochs; a frozen warm-up is extra)."""
    from fastseg.train.loop import plan_phases

    cfg, spec = FitConfig(epochs=epochs), isbi_like()
    small, _ = progressive_size(cfg, spec, 256)
    phases = [p for p in plan_phases(cfg, pretrained, 1e-3, small) if not p.frozen]
    per_epoch = {None: 24 // 8, small: 24 * crops_per_image(256, small) // 8}
    assert sum(p.epochs * per_epoch[p.size] for p in phases) == optimiser_steps(cfg, spec, 256, 8)
