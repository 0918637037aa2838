"""The DataLoaders pipeline: RAM cache (served from memory, never pickled), resolved options, batches."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from fastseg.config import FitConfig
from fastseg.data.dataset import discover
from fastseg.train.loaders import Getters, ImageForPath, MaskForImage, make_dataloaders


@pytest.fixture
def tiny_copy(tiny_data, tmp_path):
    """A private copy of the tiny set (tests here delete files from it)."""
    return shutil.copytree(tiny_data, tmp_path / "data")


def test_cached_loader_serves_batches_after_files_are_gone(tiny_copy):
    spec = discover(tiny_copy)
    dls = make_dataloaders(spec, size=64, bs=4, getters=Getters.for_spec(spec, cache=True))
    shutil.rmtree(tiny_copy / "images")
    shutil.rmtree(tiny_copy / "masks")
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 64, 64)
    assert int(y.max()) < spec.n_classes


def test_uncached_loader_reads_from_disk(tiny_copy):
    spec = discover(tiny_copy)
    dls = make_dataloaders(spec, size=64, bs=4, getters=Getters.for_spec(spec, cache=False))
    shutil.rmtree(tiny_copy / "images")
    with pytest.raises(Exception):
        dls.one_batch()


def test_cache_holds_what_disk_decoding_gives(tiny_data):
    spec = discover(tiny_data)
    s = spec.train[0]
    get_x, get_y = ImageForPath(), MaskForImage({str(s.image): str(s.mask)}, spec.lut)
    assert get_x.preload([s.image]) == 64 * 64 * 3
    get_y.preload([s.image])
    fresh_x, fresh_y = ImageForPath(), MaskForImage({str(s.image): str(s.mask)}, spec.lut)
    assert np.array_equal(get_x(s.image), fresh_x(s.image))
    assert get_x(s.image).shape == (64, 64, 3) and get_x(s.image).dtype == np.uint8
    assert np.array_equal(np.asarray(get_y(s.image)), np.asarray(fresh_y(s.image)))


def test_cache_is_not_pickled(tiny_data):
    spec = discover(tiny_data)
    items = [s.image for s in spec.train]
    masks = {str(s.image): str(s.mask) for s in spec.train}
    get_x, get_y = ImageForPath(), MaskForImage(masks, spec.lut)
    get_x.preload(items), get_y.preload(items)
    assert len(get_x.cache) == len(items) == len(get_y.cache)
    blob_x, blob_y = pickle.dumps(get_x), pickle.dumps(get_y)
    assert len(blob_x) < 1000  # 8 cached 64x64x3 images would be ~98 kB
    back_x, back_y = pickle.loads(blob_x), pickle.loads(blob_y)
    assert back_x.cache == {} and back_y.cache == {}
    assert np.array_equal(back_x(items[0]), get_x(items[0]))  # decodes from disk again
    assert np.array_equal(np.asarray(back_y(items[0])), np.asarray(get_y(items[0])))


def test_isbi_cached_batches_are_binary_classes(isbi):
    spec = discover(isbi)
    getters = Getters.for_spec(spec, cache=True)
    dls = make_dataloaders(spec, size=128, bs=4, getters=getters)
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 128, 128) and x.dtype == torch.float32
    assert set(torch.unique(y).tolist()) <= {0, 1}
    assert len(getters.x.cache) == len(spec.train) + len(spec.valid)


def test_segcrop_crops_during_fit_and_passes_whole_images_for_the_export(tiny_data):
    """Random/centre 32 px crops while training; whole (64 px, already a multiple of 32) images only
    inside ``whole_image_inference`` (what export_learner pickles), and back to crops after it."""
    from types import SimpleNamespace

    from fastseg.train.transforms import SegCrop, whole_image_inference

    spec = discover(tiny_data)
    dls = make_dataloaders(spec, size=32, bs=2, getters=Getters.for_spec(spec, cache=False))
    assert any(isinstance(t, SegCrop) for t in dls.valid.after_item.fs)
    x, y = dls.valid.one_batch()
    assert x.shape[-2:] == (32, 32) and y.shape[-2:] == (32, 32)
    with whole_image_inference(SimpleNamespace(dls=dls)) as crops:
        assert crops and all(t.whole for t in crops)
        x, y = dls.valid.one_batch()
        assert x.shape[-2:] == (64, 64) and y.shape[-2:] == (64, 64)
        assert dls.train.one_batch()[0].shape[-2:] == (32, 32)  # training still crops
    x, _ = dls.valid.one_batch()
    assert x.shape[-2:] == (32, 32) and not any(t.whole for t in crops)


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


def test_crop_loaders_keep_validation_and_repeat_images(tiny_data, monkeypatch):
    """Progressive resizing's first part: smaller training crops, k per image per epoch, same validation,
    the plan's batch size and augmentation, and the run's one RAM cache."""
    from types import SimpleNamespace

    import fastseg.train.loaders as loaders_mod
    from fastseg.train.loaders import crop_loaders, plan_loaders

    spec = discover(tiny_data)
    plan = SimpleNamespace(size=64, bs=4, workers=0, device="cpu", aug="flips")
    getters = Getters.for_spec(spec, cache=True)
    dls = plan_loaders(spec, plan, getters)
    decoded = []
    real = loaders_mod._open_image
    monkeypatch.setattr(loaders_mod, "_open_image", lambda *a: decoded.append(a) or real(*a))
    small = crop_loaders(dls, spec, plan, getters, 32, repeats=4)
    assert decoded == []  # the RAM cache is shared, not decoded again
    assert small.valid is dls.valid
    assert [type(t).__name__ for t in small.train.after_batch.fs][-2:] == ["Dihedral", "Normalize"]
    assert len(small.train.dataset) == 4 * len(spec.train) and small.train.bs == 4
    xb, yb = small.train.one_batch()
    assert xb.shape[-2:] == (32, 32) and yb.shape[-2:] == (32, 32)
    assert small.valid.one_batch()[0].shape[-2:] == (64, 64)
