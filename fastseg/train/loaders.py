"""fastai DataLoaders for a ``DataSpec``: paired image/mask transforms, augmentation, batching.

Everything fastai pickles into the exported learner from here (``ImageForPath``, ``MaskForImage``)
is top-level, and their in-RAM caches are left out of the pickle (an export holds no training data).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..config import FitConfig, Notify, silent
from .augment import AUG_FULL_STEPS, resolve_aug, seg_batch_tfms
from ..data.dataset import DataSpec, read_image
from ..data.images import MaskDecoder, Scaling
from .progressive import optimiser_steps

__all__ = ["ImageForPath", "MaskForImage", "auto_size", "make_dataloaders", "cache_bytes", "dataloaders_for",
           "train_crops_like"]


def _open_image(path, scaling: Scaling | None = None) -> np.ndarray:
    """An image file as HxWx3 uint8 (grey, RGBA and 16-bit converted): the one place images are decoded."""
    return read_image(path, scaling)


class _Cached:
    """A path -> decoded array cache that is never pickled (exports must not carry the data set)."""

    cache: dict

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "cache"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.cache = {}

    def preload(self, paths) -> int:
        """Decode every path once into the cache; returns the bytes held."""
        for p in paths:
            self.cache[str(p)] = self.decode(p)
        return sum(a.nbytes for a in self.cache.values())

    def __call__(self, path):
        arr = self.cache.get(str(path))
        return self.wrap(self.decode(path) if arr is None else arr)


class ImageForPath(_Cached):
    """fastai ``get_x``: image path -> HxWx3 uint8 array (``PILImage.create`` makes it an image),
    from the RAM cache when preloaded, else decoded from disk (as at prediction time).

    ``scaling``: the data set's rule for wide (16-bit, float) values, pickled with the export;
    learners exported before it existed unpickle with ``None``, the old per-image rule."""

    def __init__(self, scaling: Scaling | None = None):
        self.cache = {}
        self.scaling = scaling

    def __setstate__(self, state):
        super().__setstate__({"scaling": None, **state})  # pickled before the rule existed: per image, as then

    def decode(self, path) -> np.ndarray:
        return _open_image(path, self.scaling)

    def wrap(self, arr: np.ndarray) -> np.ndarray:
        return arr


class MaskForImage(_Cached):
    """fastai ``get_y``: image path -> class-index ``PILMask`` (raw values mapped through the LUT).

    Top-level and holding plain data so fastai can pickle it into the exported learner.
    """

    def __init__(self, masks: dict[str, str], decoder: MaskDecoder | Sequence[int]):
        self.masks = masks
        self.decoder = decoder if isinstance(decoder, MaskDecoder) else MaskDecoder(decoder)
        self.cache = {}

    def decode(self, image_path) -> np.ndarray:
        return self.decoder(self.masks[str(image_path)])

    def wrap(self, arr: np.ndarray):
        from fastai.vision.core import PILMask

        return PILMask.create(arr)


def auto_size(spec: DataSpec, size: int | None) -> int:
    """The training crop side: the requested one, else min(256, smallest side) rounded down to /32."""
    if size is not None:
        return size
    return max(32, min(256, spec.min_side) // 32 * 32)


def cache_bytes(spec: DataSpec) -> int:
    """RAM the decoded set needs in the cache: 3 bytes per image pixel + 1 per mask pixel.

    ``discover`` already counted every mask pixel (``class_pixels``, void included), so no file is
    opened again; a hand-made spec without those counts falls back to reading image headers.
    """
    if {"train", "valid"} <= set(spec.class_pixels):
        return (spec.pixel_bytes + 1) * (sum(spec.class_pixels["train"]) + sum(spec.class_pixels["valid"]))
    from PIL import Image

    total = 0
    for s in (*spec.train, *spec.valid):
        with Image.open(s.image) as im:
            total += im.size[0] * im.size[1] * (spec.pixel_bytes + 1)
    return total


def make_dataloaders(spec: DataSpec, size: int, bs: int, num_workers: int = 0, device=None, cache: bool = False,
                     aug: str | bool = "full", repeats: int = 1, getters=None):
    """fastai DataLoaders: random crops of ``size`` (train) / centre crops (valid), flips, light affine.

    ``cache``: decode every image and mask once now and serve batches from RAM (``dls.fastseg_cache``
    says which). Batch transforms (augmentation, normalisation) run on ``device``; on CUDA the
    DataLoader pins its batches for asynchronous host-to-device copies. ``repeats``: each training
    image appears that many times per epoch (each time with its own random crop). ``getters``: the
    ``(get_x, get_y)`` of DataLoaders made earlier from the same ``spec``, to share their RAM cache
    instead of decoding the set again.
    """
    from fastai.data.block import DataBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock, MaskBlock

    from .transforms import SegCrop

    samples = list(spec.train) * repeats + list(spec.valid)
    items = [s.image for s in samples]
    masks = {str(s.image): str(s.mask) for s in samples}
    n_train = len(spec.train) * repeats
    valid_idx = list(range(n_train, len(samples)))
    # Crop rather than down-scale large images, so thin structures keep their width in pixels;
    # SegCrop = RandomCrop that the export switches to whole images (fastseg.train.transforms).
    item_tfms = [SegCrop(size)] if spec.min_side >= size else [Resize(size)]
    x_block, new_x = ImageBlock, ImageForPath
    if spec.scaling.channels is not None:  # not 8-bit RGB: C x H x W tensors of every channel (.channels)
        from .channels import ChannelBlock, ChannelCrop, ChannelResize, ChannelsForPath

        item_tfms = [ChannelCrop(size)] if spec.min_side >= size else [ChannelResize(size)]
        x_block, new_x = ChannelBlock(), ChannelsForPath
    # fastseg.train.augment: full / flips / none (normalisation only); the set's own statistics unless 8-bit RGB
    batch_tfms = seg_batch_tfms(aug, stats=spec.stats)
    get_x, get_y = getters or (new_x(spec.scaling), MaskForImage(masks, spec.decoder))
    if cache and getters is None:
        unique = list(dict.fromkeys(items))
        get_x.preload(unique)
        get_y.preload(unique)
    block = DataBlock(blocks=(x_block, MaskBlock(list(spec.codes))),
                      get_x=get_x, get_y=get_y,
                      splitter=IndexSplitter(valid_idx),
                      item_tfms=item_tfms, batch_tfms=batch_tfms)
    pin = device is not None and torch.device(device).type == "cuda"
    dls = block.dataloaders(items, bs=bs, num_workers=num_workers, device=device, pin_memory=pin,
                            val_bs=bs, drop_last=n_train > bs)
    dls.fastseg_cache = "ram" if cache else "none"
    dls.fastseg_aug = aug
    dls.fastseg_getters = (get_x, get_y)
    return dls


def dataloaders_for(cfg: FitConfig, spec: DataSpec, size: int, notify: Notify = silent):
    """``make_dataloaders`` with ``cfg``'s machine-dependent choices resolved and reported:
    ``--bs auto``, ``--num-workers auto``, ``--cache auto``."""
    from ..device import auto_batch_size, resolve_cache, resolve_num_workers, training_device
    from .distributed import local_world_size, run_on_main

    device = training_device()
    bs = cfg.bs
    if bs == "auto":
        from ..model import build_model

        probe, _ = build_model(cfg.encoder, spec.n_classes, "none", in_channels=spec.channels)
        bs, why = auto_batch_size(probe, size, device, n_train=len(spec.train))
        del probe
        notify(f"batch size {bs} (--bs auto: {why})")
    needed, copies = cache_bytes(spec), local_world_size()
    # DDP: rank 0 decides for every rank from one free-RAM reading, counting each local process's copy
    cache = run_on_main(resolve_cache, cfg.cache, needed, processes=copies)
    if cfg.cache == "auto" and not cache:
        notify(f"not caching images in RAM: the decoded set needs {needed / 2**20:.0f} MiB"
               f"{f' x {copies} processes' if copies > 1 else ''} (--cache ram to force, --cache none to silence)")
    workers = resolve_num_workers(cfg.num_workers, device, cached=cache, batches=max(1, len(spec.train) // bs))
    steps = optimiser_steps(cfg, spec, size, bs)  # with progressive resizing's extra half-size crops
    aug = resolve_aug(cfg.aug, steps)
    if cfg.aug == "auto":
        notify(f"augmentation: {aug} (auto: {steps} optimiser steps {'>=' if aug == 'full' else '<'} "
               f"{AUG_FULL_STEPS}; --aug full|flips|none to choose)")
    return make_dataloaders(spec, size=size, bs=bs, num_workers=workers, device=device, cache=cache, aug=aug)


def train_crops_like(dls, spec: DataSpec, size: int, repeats: int = 1, keep_valid: bool = True):
    """``dls`` with training crops of ``size`` (``repeats`` per image per epoch) and everything else
    as in ``dls`` (batch size, workers, device, cache, augmentation). ``keep_valid``: validate on
    ``dls``'s own validation loader, so metrics stay comparable with full-size epochs."""
    from fastai.data.core import DataLoaders

    small = make_dataloaders(spec, size=size, bs=dls.train.bs, num_workers=dls.train.fake_l.num_workers,
                             device=dls.device, cache=getattr(dls, "fastseg_cache", "none") == "ram",
                             aug=getattr(dls, "fastseg_aug", "full"), repeats=repeats,
                             getters=getattr(dls, "fastseg_getters", None))  # one RAM cache, not two
    if not keep_valid:
        return small
    mixed = DataLoaders(small.train, dls.valid, path=dls.path, device=dls.device)
    mixed.fastseg_cache, mixed.fastseg_aug = small.fastseg_cache, small.fastseg_aug
    return mixed
