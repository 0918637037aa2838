"""The batch augmentation recipe (fastseg.train.augment) for each level."""

import pytest

from fastseg.config import FitConfig


def test_aug_levels():
    from fastseg.errors import ConfigError
    from fastseg.train.augment import seg_batch_tfms

    names = {level: [type(t).__name__ for t in seg_batch_tfms(level)] for level in ("full", "flips", "none")}
    assert names["none"] == ["Normalize"]
    assert names["flips"] == ["Dihedral", "Normalize"]
    assert len(names["full"]) > 2 and names["full"][-1] == "Normalize"
    assert FitConfig(aug=True).aug == "full" and FitConfig(aug=False).aug == "none"  # old config.json files
    with pytest.raises(ConfigError, match="aug must be one of auto, full, flips, none, got 'heavy'"):
        FitConfig(aug="heavy")


def test_augmentation_ends_with_the_given_statistics_and_refuses_unknown_levels():
    from fastseg.train.augment import seg_batch_tfms

    norm = seg_batch_tfms("none", stats=((0.5,), (0.25,)))[-1]
    assert norm.mean.flatten().tolist() == [0.5] and norm.std.flatten().tolist() == [0.25]
    with pytest.raises(ValueError, match="augmentation level must be full, flips or none, got 'auto'"):
        seg_batch_tfms("auto")  # the plan resolves auto before the recipe is built
