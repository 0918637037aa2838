"""Item transforms that fastai pickles into the exported learner (top-level, importable: never lambdas).

``SegCrop`` is fastai's ``RandomCrop`` with one more mode. During ``fit`` it is exactly RandomCrop:
a random crop of the training size for training batches and a centre crop for validation batches
(cheap, fixed-size validation). In the exported learner it is switched to *whole-image* mode, so
``load_learner(...).predict(img)`` segments the whole image (padded at the right and bottom to a
multiple of 32, which the Unet's five down-samplings need) instead of only its centre crop.
"""

from __future__ import annotations

from contextlib import contextmanager

from fastai.vision.augment import PadMode, RandomCrop
from fastcore.basics import fastuple
from PIL import Image

from ..constants import STRIDE

__all__ = ["SegCrop", "whole_image_inference", "STRIDE"]



class SegCrop(RandomCrop):
    """RandomCrop (train) / centre crop (valid); with ``whole=True``, non-training items pass whole,
    padded to a multiple of ``STRIDE`` at the right and bottom (reflection, as ``fastseg predict``)."""

    def __init__(self, size: int | tuple, whole: bool = False, **kwargs):
        super().__init__(size, **kwargs)
        self.whole = whole

    def before_call(self, b, split_idx: int):
        super().before_call(b, split_idx)
        self.out_size, self.pad_mode = self.size, PadMode.Zeros
        if self.whole and split_idx:  # inference through the export: keep everything, pad to /32
            w, h = self.orig_sz
            self.tl = fastuple(0, 0)
            self.out_size = fastuple(-(-w // STRIDE) * STRIDE, -(-h // STRIDE) * STRIDE)
            # reflection needs pads smaller than the side (< 32); tiny images repeat their border
            self.pad_mode = PadMode.Reflection if min(w, h) >= STRIDE else PadMode.Border

    def encodes(self, x: Image.Image):
        return x.crop_pad(self.out_size, self.tl, orig_sz=self.orig_sz, pad_mode=self.pad_mode)


@contextmanager
def whole_image_inference(learn):
    """Switch the learner's ``SegCrop`` transforms to whole-image mode for the block (``export``)."""
    crops = [t for dl in learn.dls.loaders for t in dl.after_item.fs if isinstance(t, SegCrop)]
    for t in crops:
        t.whole = True
    try:
        yield crops
    finally:
        for t in crops:
            t.whole = False
