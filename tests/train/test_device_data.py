"""The device data path: batches cut by one gather must mean what fastai's per-item path means."""

from collections import Counter

import numpy as np
import pytest
import torch

from fastseg.data.dataset import IGNORE_INDEX, discover
from fastseg.errors import ConfigError, DataError
from fastseg.train.device_data import (DEVICE_CACHE_SHARE, IMAGENET_STATS, CropStore, DeviceDL, choose_data_path,
                                       device_dataloaders)

MEAN, STD = (torch.tensor(s).view(1, 3, 1, 1) for s in IMAGENET_STATS)
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]  # a lent GPU runs the CUDA cases too


def coded_set(n=5, n_train=3):
    """Images whose pixels say where they come from (channel 0: row, 1: column, 2: image number x 10) and
    masks that are a function of that place, void (255) included; sizes differ from image to image."""
    images, masks = [], []
    for k in range(n):
        h, w = 40 + 3 * k, 48 - 2 * k
        r, c = np.mgrid[:h, :w]
        images.append(np.stack([r, c, np.full_like(r, 10 * k)], 2).astype(np.uint8))
        masks.append(label_of(r, c).astype(np.uint8))
    return images, masks, n_train


def label_of(r, c):
    return np.where((r + c) % 11 == 0, IGNORE_INDEX, (7 * r + 3 * c) % 5)


def decoded(x):
    """Normalised batch -> the uint8 pixels it was made of."""
    return ((x.cpu() * STD + MEAN) * 255).round().to(torch.long)


def orientation(px):
    """How a crop's (row, column) codes change along its rows and columns: one of the 8 dihedral moves."""
    r, c = px[0], px[1]
    return (int(r[1, 0] - r[0, 0]), int(r[0, 1] - r[0, 0]), int(c[1, 0] - c[0, 0]), int(c[0, 1] - c[0, 0]))


def check_crop(px, y, images, size):
    """``px`` (C x S x S codes) is a window of one image in a dihedral orientation, ``y`` its labels."""
    r, c, k = px[0], px[1], int(px[2, 0, 0]) // 10
    dr_i, dr_j, dc_i, dc_j = orientation(px)
    assert sorted([abs(dr_i) + abs(dc_i), abs(dr_j) + abs(dc_j)]) == [1, 1] and abs(dr_i) + abs(dr_j) == 1
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    assert torch.equal(r, r[0, 0] + dr_i * i + dr_j * j) and torch.equal(c, c[0, 0] + dc_i * i + dc_j * j)
    h, w = images[k].shape[:2]
    assert 0 <= r.min() and r.max() < h and 0 <= c.min() and c.max() < w
    assert torch.equal(y, torch.from_numpy(label_of(r.numpy(), c.numpy())))  # each label stayed with its pixel


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aug", ["none", "flips"])
def test_crops_and_flips_keep_each_label_with_its_pixel(aug, device):
    images, masks, n_train = coded_set()
    store = CropStore.from_arrays(images, masks, n_train, device)
    dls = device_dataloaders(store, 32, 8, aug=aug, repeats=40, seed=1)
    turns, void = Counter(), 0
    for x, y in dls.train:
        assert type(x).__name__ == "TensorImage" and type(y).__name__ == "TensorMask" and y.dtype == torch.long
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert x.device.type == y.device.type == device
        for px, yy in zip(decoded(x), y.cpu()):
            check_crop(px, yy, images, 32)
            turns[orientation(px)] += 1
            void += int((yy == IGNORE_INDEX).sum())
    assert void > 0  # void survives crops and flips as 255
    if aug == "none":
        assert set(turns) == {(1, 0, 0, 1)}
    else:  # all 8 orientations; identity with p 0.5 + 0.5 / 8, as fastai's Dihedral(p=0.5)
        assert len(turns) == 8 and turns[(1, 0, 0, 1)] > max(v for k, v in turns.items() if k != (1, 0, 0, 1))


def test_an_epoch_serves_every_training_image_repeats_times_in_a_seeded_order():
    images, masks, n_train = coded_set()
    store = CropStore.from_arrays(images, masks, n_train)
    dls = device_dataloaders(store, 32, 3, aug="flips", repeats=4, seed=7)
    assert (dls.train.n, len(dls.train), dls.valid.n, dls.bs) == (12, 4, 2, 3)
    first = [(x.clone(), y.clone()) for x, y in dls.train]
    seen = Counter(int(k) // 10 for x, _ in first for k in decoded(x)[:, 2, 0, 0])
    assert seen == {0: 4, 1: 4, 2: 4}
    again = device_dataloaders(store, 32, 3, aug="flips", repeats=4, seed=7)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again.train))
    other = device_dataloaders(store, 32, 3, aug="flips", repeats=4, seed=8)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other.train))
    second = [x for x, _ in dls.train]  # the next epoch: new windows, new order
    assert not all(torch.equal(a[0], b) for a, b in zip(first, second))


@pytest.mark.parametrize("device", DEVICES)
def test_host_store_gives_the_same_batches_as_device_store(device):
    """On CUDA the host store is pinned and its batches are copied without blocking."""
    images, masks, n_train = coded_set()
    on = device_dataloaders(CropStore.from_arrays(images, masks, n_train, device, "device"), 32, 4, "flips", seed=2)
    host = CropStore.from_arrays(images, masks, n_train, device, "host")
    off = device_dataloaders(host, 32, 4, "flips", seed=2)
    assert host.where == "host" and on.train.dataset.store.where == "device"
    assert host.pixels.device.type == "cpu" and host.pixels.is_pinned() == (device == "cuda")
    for a, b in zip([*on.train, *on.valid], [*off.train, *off.valid]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("aug", ["none", "flips"])
def test_validation_batches_equal_fastai_centre_crops(tiny_data, aug, device):
    """Same pixels, labels and normalisation as fastai's path (SegCrop, IntToFloatTensor, Normalize). Its flips
    level passes validation images through an identity affine resample too: ~1e-6 off."""
    from fastseg.train.loaders import Getters, make_dataloaders

    spec = discover(tiny_data)
    getters = Getters.for_spec(spec, cache=True)
    fast = make_dataloaders(spec, size=32, bs=2, getters=getters, aug=aug, device=device)
    mine = device_dataloaders(CropStore.from_spec(spec, device, getters=(getters.x, getters.y)), 32, 2, aug=aug)
    fresh = device_dataloaders(CropStore.from_spec(spec, device), 32, 2, aug=aug)  # decoded here, not fastai's cache
    assert len(mine.valid) == len(fast.valid) > 0
    for (x, y), (fx, fy), (dx, dy) in zip(mine.valid, fast.valid, fresh.valid):
        assert (x - fx).abs().max() <= (0 if aug == "none" else 1e-5) and torch.equal(y, fy) and y.dtype == fy.dtype
        assert torch.equal(x, dx) and torch.equal(y, dy)
    x, _ = mine.train.one_batch()
    fx, _ = fast.train.one_batch()
    assert x.shape == fx.shape and x.dtype == fx.dtype


def test_smaller_crops_share_the_store_and_can_keep_a_validation_loader():
    images, masks, n_train = coded_set()
    dls = device_dataloaders(CropStore.from_arrays(images, masks, n_train), 32, 2, aug="flips")
    small = device_dataloaders(dls.train.dataset.store, 16, 2, "flips", repeats=4, seed=16, valid=dls.valid)
    assert small.valid is dls.valid and small.train.dataset.store is dls.train.dataset.store
    assert small.train.n == 12 and small.train.one_batch()[0].shape == (2, 3, 16, 16)


def test_device_data_path_in_a_run_trains_both_progressive_parts_and_validates_on_the_runs_loader(tiny_data, tmp_path):
    """What a CUDA plan chooses, run on the CPU: the phases train on device batches (full size and the
    progressive part), validate on the run's own loader, and the learner keeps fastai's DataLoaders."""
    import dataclasses

    from fastseg.config import FitConfig
    from fastseg.train.loop import phase_loaders, prepare

    session = prepare(FitConfig(data=str(tiny_data), epochs=4, bs=2, lr=1e-3, weights="none", progressive="on",
                                precision="fp32"), workdir=tmp_path)
    session.plan = dataclasses.replace(session.plan, data_path="host")
    loaders = phase_loaders(session)
    assert set(loaders) == {None, 32}
    assert all(isinstance(dls.train, DeviceDL) and dls.valid is session.learn.dls.valid for dls in loaders.values())
    assert loaders[None].one_batch()[0].shape == (2, 3, 64, 64) and loaders[32].one_batch()[0].shape == (2, 3, 32, 32)
    assert loaders[32].train.n == 4 * len(session.spec.train)  # crops_per_image half-size crops per image
    assert not isinstance(session.learn.dls.train, DeviceDL)  # export and predict need fastai's item pipeline


def test_distributed_shards_cover_the_epoch_once():
    """fastai's DistributedDL hands each rank its shard of the item indices; create_batches takes them."""
    from fastai.distributed import DistributedDL

    class LocalDL(DistributedDL):
        def _broadcast(self, t, rank):  # one process plays both ranks: every rank sees rank 0's order
            return t

    images, masks, n_train = coded_set()
    seen = Counter()
    for rank in (0, 1):
        dls = device_dataloaders(CropStore.from_arrays(images, masks, n_train), 32, 2, repeats=4, seed=3)
        shard = LocalDL(dls.train, rank=rank, world_size=2)
        batches = list(shard)
        assert len(batches) == len(shard) == 3
        seen.update(int(k) // 10 for x, _ in batches for k in decoded(x)[:, 2, 0, 0])
    assert seen == {0: 4, 1: 4, 2: 4}


def test_refusals_say_what_to_do():
    images, masks, n_train = coded_set()
    store = CropStore.from_arrays(images, masks, n_train)
    with pytest.raises(ConfigError, match="augmentation none or flips, got 'full'"):
        device_dataloaders(store, 32, 2, aug="full")
    with pytest.raises(ConfigError, match="crop 48 is larger than the smallest image side 40"):
        device_dataloaders(store, 48, 2)
    with pytest.raises(DataError, match="pair 1: image .* differ in size"):
        CropStore.from_arrays(images[:2], [masks[0], masks[0]], 1)
    with pytest.raises(ConfigError, match="stats have 3 values but the images have 1 channels"):
        CropStore.from_arrays([i[..., 0] for i in images], masks, n_train)
    grey = CropStore.from_arrays([i[..., 0] for i in images], masks, n_train, stats=((0.5,), (0.25,)))
    assert device_dataloaders(grey, 32, 2).one_batch()[0].shape == (2, 1, 32, 32)


GIB = 2**30


@pytest.mark.parametrize("device, aug, fits, needed, cache, free, where, why", [
    ("cpu", "none", True, 1, "auto", (GIB, GIB), None, "on a CPU"),
    ("cuda", "full", True, 1, "auto", (GIB, GIB), None, "augmentation full resamples"),
    ("cuda", "flips", False, 1, "auto", (GIB, GIB), None, "smaller than the crop"),
    ("cuda", "none", True, 1, "none", (GIB, GIB), None, "--cache none"),
    ("cuda", "flips", True, int(DEVICE_CACHE_SHARE * GIB), "auto", (GIB, 0), "device", "cached on the GPU"),
    ("cuda", "none", True, GIB, "auto", (GIB, 8 * GIB), "host", "pinned RAM"),
    ("cuda", "none", True, GIB, "auto", (GIB, 2 * GIB), None, "fits neither"),
])
def test_choose_data_path(device, aug, fits, needed, cache, free, where, why):
    got, reason = choose_data_path(device, aug, fits, needed, cache, free)
    assert got == where and why in reason


def test_choose_data_path_refuses_forced_ram_that_cannot_fit():
    with pytest.raises(ConfigError, match="--cache ram"):
        choose_data_path("cuda", "none", True, 4 * GIB, "ram", (GIB, GIB))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_learner_fits_an_epoch_on_device_batches(tiny_data, device):
    from fastai.learner import Learner

    from fastseg.device import tune_learner
    from fastseg.metrics import MeanDice, MeanIoU
    from fastseg.model import build_model
    from fastseg.train.losses import make_loss

    spec = discover(tiny_data)
    dls = device_dataloaders(CropStore.from_spec(spec, device), 32, 4, aug="flips", seed=0)
    assert isinstance(dls.train, DeviceDL)
    model, _ = build_model("timm-efficientnet-b0", spec.n_classes, "none")
    learn = Learner(dls, model.to(device), loss_func=make_loss("ce+dice", spec.n_classes),
                    metrics=[MeanIoU(spec.n_classes), MeanDice(spec.n_classes)])
    tune_learner(learn)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
    loss, iou, dice = learn.recorder.values[-1][1:]
    assert np.isfinite([loss, iou, dice]).all() and 0 <= iou <= 1
    assert len(learn.recorder.losses) == len(dls.train) == 2  # 8 training images, bs 4
