"""Overlays (fastseg.infer.overlay): class colours tinted over the image, class 0 untinted, a legend below."""

import io

import numpy as np
from PIL import Image

from fastseg.infer.overlay import ALPHA, overlay_image, overlay_jpeg, save_overlay
from fastseg.io import palette_for


def test_overlay_tints_classes_and_leaves_background_untouched():
    image = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[:, 15:] = 2
    out = np.asarray(overlay_image(image, mask, ["bg", "a", "b"]))
    assert out.shape[1] >= 30 and out.shape[0] > 20  # the legend strip below
    assert (out[:20, :15] == 100).all()  # class 0: the image as it is
    colour = np.asarray(palette_for(3), dtype=np.float32).reshape(256, 3)[2]
    assert np.array_equal(out[0, 20], np.round((1 - ALPHA) * 100 + ALPHA * colour).astype(np.uint8))


def test_a_narrow_image_gets_a_legend_wide_enough_to_read():
    codes = ["background", "a class with a long name", "another long class name"]
    out = overlay_image(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), codes)
    assert out.width > 100  # widened to the longest entry rather than cut at 8 px
    assert (np.asarray(out)[8:] == 255).any()  # the legend's white strip
    wide = overlay_image(np.zeros((8, 800, 3), np.uint8), np.zeros((8, 800), np.uint8), codes)
    assert wide.width == 800 and wide.height < out.height  # entries wrap only when the width needs it


def test_overlay_jpeg_and_save_write_the_same_image(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    mask = (image[..., 0] > 128).astype(np.uint8)
    data = overlay_jpeg(image, mask, ["bg", "fg"])
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    dest = save_overlay(image, mask, ["bg", "fg"], tmp_path / "a_overlay.jpg")
    assert dest.read_bytes() == data
