"""The DataLoaders pipeline: RAM cache (served from memory, never pickled), resolved options, batches."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from fastseg.config import FitConfig
from fastseg.data.dataset import discover
from fastseg.device import resolve_num_workers
from fastseg.train.loaders import ImageForPath, MaskForImage, cache_bytes, dataloaders_for, make_dataloaders


@pytest.fixture
def tiny_copy(tiny_data, tmp_path):
    """A private copy of the tiny set (tests here delete files from it)."""
    return shutil.copytree(tiny_data, tmp_path / "data")


def test_cached_loader_serves_batches_after_files_are_gone(tiny_copy):
    spec = discover(tiny_copy)
    dls = make_dataloaders(spec, size=64, bs=4, cache=True)
    assert dls.fastseg_cache == "ram"
    shutil.rmtree(tiny_copy / "images")
    shutil.rmtree(tiny_copy / "masks")
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 64, 64)
    assert int(y.max()) < spec.n_classes


def test_uncached_loader_reads_from_disk(tiny_copy):
    spec = discover(tiny_copy)
    dls = make_dataloaders(spec, size=64, bs=4, cache=False)
    assert dls.fastseg_cache == "none"
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


def test_cache_bytes_counts_decoded_rgb_and_mask(tiny_data):
    spec = discover(tiny_data)
    assert cache_bytes(spec) == 10 * 64 * 64 * 4


@pytest.mark.parametrize("mode, expected", [("auto", "ram"), ("ram", "ram"), ("none", "none")])
def test_dataloaders_for_resolves_cache(tiny_data, mode, expected):
    spec = discover(tiny_data)
    dls = dataloaders_for(FitConfig(data=str(tiny_data), bs=4, cache=mode), spec, 64)
    assert dls.fastseg_cache == expected
    assert dls.train.fake_l.num_workers == resolve_num_workers("auto", torch.device(dls.device),
                                                               cached=expected == "ram", batches=len(spec.train) // 4)
    assert dls.train.bs == 4


def test_dataloaders_for_bs_auto_reports_choice(tiny_data):
    spec = discover(tiny_data)
    said = []
    dls = dataloaders_for(FitConfig(data=str(tiny_data), bs="auto"), spec, 64, notify=said.append)
    assert dls.train.bs == 8  # capped by the 8 training images
    assert said and said[0].startswith("batch size 8 (--bs auto: ")


def test_isbi_cached_batches_are_binary_classes(isbi):
    spec = discover(isbi)
    dls = make_dataloaders(spec, size=128, bs=4, cache=True)
    x, y = dls.one_batch()
    assert x.shape == (4, 3, 128, 128) and x.dtype == torch.float32
    assert set(torch.unique(y).tolist()) <= {0, 1}
    assert dls.fastseg_cache == "ram"


def test_segcrop_crops_during_fit_and_passes_whole_images_for_the_export(tiny_data):
    """Random/centre 32 px crops while training; whole (64 px, already a multiple of 32) images only
    inside ``whole_image_inference`` (what export_learner pickles), and back to crops after it."""
    from types import SimpleNamespace

    from fastseg.train.transforms import SegCrop, whole_image_inference

    dls = make_dataloaders(discover(tiny_data), size=32, bs=2)
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


def test_aug_levels_and_the_auto_rule():
    from fastseg.train.augment import AUG_FULL_STEPS, resolve_aug, seg_batch_tfms
    from fastseg.errors import ConfigError

    assert resolve_aug("auto", AUG_FULL_STEPS) == "full" and resolve_aug("auto", AUG_FULL_STEPS - 1) == "none"
    assert resolve_aug("flips", 1) == "flips" and resolve_aug(True, 1) == "full" and resolve_aug(False, 10**6) == "none"
    names = {level: [type(t).__name__ for t in seg_batch_tfms(level)] for level in ("full", "flips", "none")}
    assert names["none"] == ["Normalize"]
    assert names["flips"] == ["Dihedral", "Normalize"]
    assert len(names["full"]) > 2 and names["full"][-1] == "Normalize"
    assert FitConfig(aug=True).aug == "full" and FitConfig(aug=False).aug == "none"  # old config.json files
    with pytest.raises(ConfigError, match="aug must be one of auto, full, flips, none, got 'heavy'"):
        FitConfig(aug="heavy")


def test_dataloaders_for_reports_the_auto_aug_choice(tiny_data):
    spec = discover(tiny_data)
    said = []
    dls = dataloaders_for(FitConfig(data=str(tiny_data), bs=4, epochs=3), spec, 64, notify=said.append)
    assert dls.fastseg_aug == "none"
    assert any(m.startswith("augmentation: none (auto: 6 optimiser steps < 1000") for m in said)
    said.clear()
    dls = dataloaders_for(FitConfig(data=str(tiny_data), bs=4, epochs=500), spec, 64, notify=said.append)
    assert dls.fastseg_aug == "full" and any("1000 optimiser steps >= 1000" in m for m in said)
    said.clear()  # progressive resizing: 6 epochs of 4 x 8 crops of 32 px (8 batches), 4 of 2 batches
    dls = dataloaders_for(FitConfig(data=str(tiny_data), bs=4, epochs=10, progressive="on"), spec, 64,
                          notify=said.append)
    assert any(m.startswith("augmentation: none (auto: 56 optimiser steps < 1000") for m in said)
    said.clear()
    dls = dataloaders_for(FitConfig(data=str(tiny_data), bs=4, aug="flips"), spec, 64, notify=said.append)
    assert dls.fastseg_aug == "flips" and not any(m.startswith("augmentation") for m in said)


def test_train_crops_like_keeps_validation_and_repeats_images(tiny_data, monkeypatch):
    """Progressive resizing's first part: smaller training crops, k per image per epoch, same validation."""
    import fastseg.train.loaders as loaders_mod
    from fastseg.train.loaders import make_dataloaders, train_crops_like

    spec = discover(tiny_data)
    dls = make_dataloaders(spec, size=64, bs=4, cache=True, aug="flips")
    decoded = []
    real = loaders_mod._open_image
    monkeypatch.setattr(loaders_mod, "_open_image", lambda p: decoded.append(p) or real(p))
    small = train_crops_like(dls, spec, 32, repeats=4)
    assert decoded == []  # the RAM cache of ``dls`` is shared, not decoded again
    assert small.valid is dls.valid and small.fastseg_aug == "flips" and small.fastseg_cache == "ram"
    assert len(small.train.dataset) == 4 * len(spec.train) and small.train.bs == 4
    xb, yb = small.train.one_batch()
    assert xb.shape[-2:] == (32, 32) and yb.shape[-2:] == (32, 32)
    assert small.valid.one_batch()[0].shape[-2:] == (64, 64)


@pytest.mark.parametrize("side, split_idx, whole", [(40, 0, False), (40, 1, False), (20, 1, False), (20, 0, False),
                                                    (40, 1, True), (20, 1, True)])
def test_channel_crop_cuts_tensors_as_segcrop_cuts_pil_images(side, split_idx, whole):
    """Random/centre crops, zero padding of small images and the export's whole-image padding (reflection,
    border for tiny images) land on the same pixels for C x H x W tensors as for PIL images."""
    import random

    from fastai.vision.core import PILImage, TensorImage

    from fastseg.train.channels import ChannelCrop
    from fastseg.train.transforms import SegCrop

    arr = np.random.default_rng(side).integers(0, 255, (3, side, side + 6), dtype=np.uint8)
    pil_crop, tensor_crop = SegCrop(32, whole=whole), ChannelCrop(32, whole=whole)
    random.seed(0)
    want = np.asarray(pil_crop(PILImage.create(np.moveaxis(arr, 0, -1)), split_idx=split_idx))
    random.seed(0)
    got = tensor_crop(TensorImage(torch.from_numpy(arr)), split_idx=split_idx)
    assert isinstance(got, TensorImage) and np.array_equal(np.moveaxis(got.numpy(), 0, -1), want)


def test_channel_sets_give_float_batches_normalised_by_their_own_statistics(tmp_path):
    pytest.importorskip("tifffile")
    from channel_sets import make_stack_set
    from fastai.data.transforms import Normalize

    spec = discover(make_stack_set(tmp_path / "d", channels=4, n=6, side=32))
    assert cache_bytes(spec) == (4 * 2 + 1) * 6 * 32 * 32  # 16-bit channels as stored, plus the mask byte
    dls = make_dataloaders(spec, size=32, bs=2, cache=True, aug="none")
    norm = next(t for t in dls.after_batch.fs if isinstance(t, Normalize))
    assert np.allclose(norm.mean.flatten().cpu(), spec.stats[0]) and np.allclose(norm.std.flatten().cpu(), spec.stats[1])
    x, y = dls.valid.one_batch()  # validation crops of 32 px are the whole images
    raw = np.stack([np.moveaxis(np.asarray(dls.fastseg_getters[0].cache[str(s.image)]), -1, 0) for s in spec.valid])
    want = (raw / 65535 - np.array(spec.stats[0])[:, None, None]) / np.array(spec.stats[1])[:, None, None]
    assert x.shape == (2, 4, 32, 32) and x.dtype == torch.float32 and np.allclose(x.numpy(), want, atol=1e-4)


def test_channel_images_smaller_than_the_size_are_resized_whole(tmp_path):
    pytest.importorskip("tifffile")
    from channel_sets import make_stack_set

    spec = discover(make_stack_set(tmp_path / "d", channels=3, n=4, side=32))
    x, y = make_dataloaders(spec, size=64, bs=2, aug="none").valid.one_batch()
    assert x.shape == (2, 3, 64, 64) and y.shape == (2, 64, 64)
    assert set(torch.unique(y).tolist()) == {0, 1}  # masks resized by nearest neighbour: still class indices
