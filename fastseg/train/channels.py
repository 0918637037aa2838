"""fastai pieces for data sets read channel by channel (``fastseg.data.channels``): any channel count,
16-bit and float values. fastai's ImageBlock and crops work on PIL images, which hold at most four
8-bit channels; here images are C x H x W float32 ``TensorImage``s from the first step, cropped and
resized as tensors, while masks stay ``PILMask``es as in the RGB path. Everything here is top-level so
fastai can pickle it into the exported learner.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from fastai.data.transforms import DisplayedTransform
from fastai.vision.augment import PadMode
from fastai.vision.core import PILMask, TensorImage
from PIL import Image

from ..data.channels import read_channels
from .loaders import ImageForPath
from .transforms import SegCrop

__all__ = ["ChannelsForPath", "ChannelCrop", "ChannelResize", "ChannelBlock", "crop_pad_tensor"]

_TORCH_PAD = {PadMode.Zeros: "constant", PadMode.Reflection: "reflect", PadMode.Border: "replicate"}


class ChannelsForPath(ImageForPath):
    """fastai ``get_x``: image path -> C x H x W float32 ``TensorImage`` in 0-255 (``IntToFloatTensor`` makes
    it 0-1) by the set's ``scaling``; the RAM cache holds the values as stored (16-bit: half of float32)."""

    def decode(self, path) -> np.ndarray:
        return read_channels(path)

    def wrap(self, arr: np.ndarray) -> TensorImage:
        return TensorImage(torch.from_numpy(self.scaling.to_float(arr)).permute(2, 0, 1).contiguous())


def crop_pad_tensor(x: torch.Tensor, size: tuple[int, int], tl: tuple[int, int], pad_mode=PadMode.Zeros) -> TensorImage:
    """The (w, h) ``size`` window of a C x H x W tensor whose top-left is ``tl`` (x, y; may lie outside the
    image), the outside filled by ``pad_mode``: what fastai's ``crop_pad`` does to PIL images."""
    (w, h), (left, top), (width, height) = size, tl, (x.shape[-1], x.shape[-2])
    out = x[..., max(top, 0):min(top + h, height), max(left, 0):min(left + w, width)]
    pads = (max(-left, 0), max(left + w - width, 0), max(-top, 0), max(top + h - height, 0))
    if any(pads):
        out = F.pad(out[None], pads, mode=_TORCH_PAD[pad_mode])[0]
    return TensorImage(out)


class ChannelCrop(SegCrop):
    """``SegCrop`` (random crop in training, centre crop in validation, whole images in the export) for
    C x H x W tensors; masks are cropped by ``SegCrop`` itself at the same place."""

    def encodes(self, x: TensorImage):
        return crop_pad_tensor(x, tuple(int(v) for v in self.out_size), tuple(int(v) for v in self.tl), self.pad_mode)


class ChannelResize(DisplayedTransform):
    """Images smaller than the training size: the whole image resized to ``size`` x ``size`` (bilinear;
    masks nearest), as ``fastseg predict`` resizes such a model's inputs."""

    order = 1

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def encodes(self, x: TensorImage):
        return TensorImage(F.interpolate(x[None].float(), size=(self.size, self.size), mode="bilinear",
                                         align_corners=False)[0])

    def encodes(self, x: PILMask):  # noqa: F811  (fastai dispatches on the annotation)
        return x.resize((self.size, self.size), Image.NEAREST)


def ChannelBlock():
    """fastai's ImageBlock for tensors: ``get_x`` already gives a ``TensorImage``; batches become 0-1 floats."""
    from fastai.data.block import TransformBlock
    from fastai.data.transforms import IntToFloatTensor

    return TransformBlock(batch_tfms=IntToFloatTensor)
