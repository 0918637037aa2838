"""The DataLoaders pipeline: RAM cache (served from memory, never pickled), resolved options, batches."""

import pickle
import shutil

import numpy as np
import pytest
import torch

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
    from fastseg.train.plan import cache_bytes

    assert cache_bytes(spec) == (4 * 2 + 1) * 6 * 32 * 32  # 16-bit channels as stored, plus the mask byte
    getters = Getters.for_spec(spec, cache=True)
    dls = make_dataloaders(spec, size=32, bs=2, getters=getters, aug="none")
    norm = next(t for t in dls.after_batch.fs if isinstance(t, Normalize))
    assert np.allclose(norm.mean.flatten().cpu(), spec.stats[0]) and np.allclose(norm.std.flatten().cpu(), spec.stats[1])
    x, y = dls.valid.one_batch()  # validation crops of 32 px are the whole images
    raw = np.stack([np.moveaxis(np.asarray(getters.x.cache[str(s.image)]), -1, 0) for s in spec.valid])
    want = (raw / 65535 - np.array(spec.stats[0])[:, None, None]) / np.array(spec.stats[1])[:, None, None]
    assert x.shape == (2, 4, 32, 32) and x.dtype == torch.float32 and np.allclose(x.numpy(), want, atol=1e-4)


def test_channel_images_smaller_than_the_size_are_resized_whole(tmp_path):
    pytest.importorskip("tifffile")
    from channel_sets import make_stack_set

    spec = discover(make_stack_set(tmp_path / "d", channels=3, n=4, side=32))
    x, y = make_dataloaders(spec, size=64, bs=2, getters=Getters.for_spec(spec, cache=False),
                            aug="none").valid.one_batch()
    assert x.shape == (2, 3, 64, 64) and y.shape == (2, 64, 64)
    assert set(torch.unique(y).tolist()) == {0, 1}  # masks resized by nearest neighbour: still class indices
