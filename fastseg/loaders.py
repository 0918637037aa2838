"""fastai DataLoaders for a ``DataSpec``: paired image/mask transforms, augmentation, batching.

Everything fastai pickles into the exported learner from here (``MaskForImage``) is top-level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .augment import seg_batch_tfms
from .data import DataSpec, read_image
from .images import MaskDecoder

__all__ = ["MaskForImage", "open_image", "auto_size", "make_dataloaders"]


def open_image(path: Path | str | np.ndarray | Image.Image):
    """fastai image type transform: any image file (16-bit, RGBA, palette, grey) -> RGB ``PILImage``.

    The annotation matters: fastai's ``predict``/``test_dl`` match inputs against it."""
    from fastai.vision.core import PILImage

    return PILImage.create(read_image(path)) if isinstance(path, (str, os.PathLike)) else PILImage.create(path)


class MaskForImage:
    """fastai ``get_y``: image path -> class-index ``PILMask`` (``decoder``: a ``MaskDecoder``, or a LUT).

    Top-level and holding plain data so fastai can pickle it into the exported learner.
    """

    def __init__(self, masks: dict[str, str], decoder: MaskDecoder | Sequence[int]):
        self.masks = masks
        self.decoder = decoder if isinstance(decoder, MaskDecoder) else MaskDecoder(decoder)

    def __call__(self, image_path):
        from fastai.vision.core import PILMask

        return PILMask.create(self.decoder(self.masks[str(image_path)]))


def auto_size(spec: DataSpec, size: int | None) -> int:
    """The training crop side: the requested one, else min(256, smallest side) rounded down to /32."""
    if size is not None:
        return size
    return max(32, min(256, spec.min_side) // 32 * 32)


def make_dataloaders(spec: DataSpec, size: int, bs: int, num_workers: int = 0, device=None, aug: bool = True):
    """fastai DataLoaders: random crops of ``size`` (train) / centre crops (valid), flips, light affine."""
    from fastai.data.block import DataBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import RandomCrop, Resize, aug_transforms
    from fastai.data.block import TransformBlock
    from fastai.data.transforms import IntToFloatTensor
    from fastai.vision.data import MaskBlock
    from fastai.data.transforms import Normalize
    from fastai.vision.core import imagenet_stats

    samples = list(spec.train) + list(spec.valid)
    items = [s.image for s in samples]
    masks = {str(s.image): str(s.mask) for s in samples}
    valid_idx = list(range(len(spec.train), len(samples)))
    # Crop rather than down-scale large images, so thin structures keep their width in pixels.
    item_tfms = [RandomCrop(size)] if spec.min_side >= size else [Resize(size)]
    batch_tfms = seg_batch_tfms(aug)  # fastseg.augment: the recipe, or only normalisation when aug is False
    image_block = TransformBlock(type_tfms=open_image, batch_tfms=IntToFloatTensor)  # 16-bit/RGBA-safe
    block = DataBlock(blocks=(image_block, MaskBlock(list(spec.codes))),
                      get_y=MaskForImage(masks, spec.decoder),
                      splitter=IndexSplitter(valid_idx),
                      item_tfms=item_tfms, batch_tfms=batch_tfms)
    return block.dataloaders(items, bs=bs, num_workers=num_workers, device=device,
                             val_bs=bs, drop_last=len(spec.train) > bs)
