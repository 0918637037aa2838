"""Item transforms pickled into the export (fastseg.train.transforms): SegCrop crops while training and
passes whole images, padded to a multiple of 32, in the exported learner."""

import numpy as np
import pytest
from fastai.vision.core import PILImage, PILMask

from fastseg.data.dataset import discover
from fastseg.train.loaders import Getters, make_dataloaders
from fastseg.train.transforms import SegCrop


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



@pytest.mark.parametrize("side, pad", [((100, 75), (128, 96)), ((20, 10), (32, 32))])
def test_whole_mode_pads_at_the_right_and_bottom_and_keeps_every_pixel(side, pad):
    w, h = side
    img = np.arange(w * h, dtype=np.uint8).reshape(h, w)
    crop = SegCrop(32, whole=True)
    out = np.asarray(crop(PILMask.create(img), split_idx=1))
    assert out.shape == pad[::-1] and np.array_equal(out[:h, :w], img)  # top-left stays put, nothing cut
    assert np.asarray(crop(PILImage.create(np.zeros((h, w, 3), np.uint8)), split_idx=0)).shape == (32, 32, 3)
