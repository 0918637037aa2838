"""fastai DataLoaders for a ``DataSpec``: paired image/mask transforms, augmentation, batching.

Everything fastai pickles into the exported learner from here (``ImageForPath``, ``MaskForImage``)
is top-level, and their in-RAM caches are left out of the pickle (an export holds no training data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..data.dataset import DataSpec, read_image
from ..data.images import MaskDecoder, Scaling
from .augment import seg_batch_tfms

__all__ = ["ImageForPath", "MaskForImage", "Getters", "make_dataloaders", "plan_loaders", "crop_loaders"]


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


@dataclass
class Getters:
    """The run's fastai ``get_x``/``get_y``, shared by every DataLoaders it makes (one RAM cache, not one per
    crop size): the LR finder's, the half-size part's and the full-size ones all read through them."""

    x: ImageForPath  # or .channels.ChannelsForPath for sets that are not 8-bit RGB
    y: MaskForImage

    @classmethod
    def for_spec(cls, spec: DataSpec, cache: bool) -> "Getters":
        """Getters for every image of ``spec``'s train and valid splits; ``cache``: decode them all now."""
        from .channels import ChannelsForPath

        samples = [*spec.train, *spec.valid]
        x = ImageForPath if spec.scaling.channels is None else ChannelsForPath  # not 8-bit RGB: every channel
        getters = cls(x(spec.scaling), MaskForImage({str(s.image): str(s.mask) for s in samples},
                                                               spec.decoder))
        if cache:
            unique = list(dict.fromkeys(s.image for s in samples))
            getters.x.preload(unique)
            getters.y.preload(unique)
        return getters


def make_dataloaders(spec: DataSpec, size: int, bs: int, getters: Getters, num_workers: int = 0, device=None,
                     aug: str = "full", repeats: int = 1):
    """fastai DataLoaders: random crops of ``size`` (train) / centre crops (valid), augmentation ``aug``.

    Batch transforms (augmentation, normalisation) run on ``device``; on CUDA the DataLoader pins its
    batches for asynchronous host-to-device copies. ``repeats``: each training image appears that many
    times per epoch (each time with its own random crop).

    Many parameters: each is an independent DataLoader setting with its default, passed by name; tests
    set two or three, ``plan_loaders``/``crop_loaders`` take them from the ``RunPlan``.
    """
    from fastai.data.block import DataBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock, MaskBlock

    from .transforms import SegCrop

    samples = list(spec.train) * repeats + list(spec.valid)
    items = [s.image for s in samples]
    n_train = len(spec.train) * repeats
    valid_idx = list(range(n_train, len(samples)))
    # Crop rather than down-scale large images, so thin structures keep their width in pixels;
    # SegCrop = RandomCrop that the export switches to whole images (fastseg.train.transforms).
    item_tfms = [SegCrop(size)] if spec.min_side >= size else [Resize(size)]
    x_block = ImageBlock
    if spec.scaling.channels is not None:  # not 8-bit RGB: C x H x W tensors of every channel (.channels)
        from .channels import ChannelBlock, ChannelCrop, ChannelResize

        item_tfms = [ChannelCrop(size)] if spec.min_side >= size else [ChannelResize(size)]
        x_block = ChannelBlock()
    # fastseg.train.augment: full / flips / none, then the set's own statistics unless 8-bit RGB
    block = DataBlock(blocks=(x_block, MaskBlock(list(spec.codes))), get_x=getters.x, get_y=getters.y,
                      splitter=IndexSplitter(valid_idx), item_tfms=item_tfms,
                      batch_tfms=seg_batch_tfms(aug, stats=spec.stats))
    pin = device is not None and torch.device(device).type == "cuda"
    return block.dataloaders(items, bs=bs, num_workers=num_workers, device=device, pin_memory=pin,
                             val_bs=bs, drop_last=n_train > bs)


def plan_loaders(spec: DataSpec, plan, getters: Getters):
    """The run's full-size DataLoaders, everything as ``plan`` (a ``RunPlan``) says."""
    return make_dataloaders(spec, size=plan.size, bs=plan.bs, getters=getters, num_workers=plan.workers,
                            device=torch.device(plan.device), aug=plan.aug)


def crop_loaders(dls, spec: DataSpec, plan, getters: Getters, size: int, repeats: int = 1, keep_valid: bool = True):
    """DataLoaders like ``dls`` (the plan's batch size, workers, device, augmentation) but with training crops
    of ``size``, ``repeats`` per image per epoch. ``keep_valid``: validate on ``dls``'s own validation
    loader, so metrics stay comparable with full-size epochs (progressive resizing; the LR finder needs none)."""
    from fastai.data.core import DataLoaders

    small = make_dataloaders(spec, size=size, bs=plan.bs, getters=getters, num_workers=plan.workers,
                             device=torch.device(plan.device), aug=plan.aug, repeats=repeats)
    return DataLoaders(small.train, dls.valid, path=dls.path, device=dls.device) if keep_valid else small
