"""The DataLoaders pipeline: RAM cache (served from memory, never pickled), resolved options, batches."""

import pickle
import shutil

import numpy as np
import pytest
import torch

from fastseg.config import FitConfig
from fastseg.data import discover
from fastseg.device import resolve_num_workers
from fastseg.loaders import ImageForPath, MaskForImage, cache_bytes, dataloaders_for, make_dataloaders


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
    assert dls.train.fake_l.num_workers == resolve_num_workers("auto", torch.device(dls.device))
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
