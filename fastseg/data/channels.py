"""Images beyond 8-bit RGB: 1 to ``MAX_CHANNELS`` channels of 8/16/32-bit integers or floats.

A data set whose images are all 8-bit (grey, RGB, RGBA, palette) is read as RGB by
``fastseg.data.images.read_image``, as before. Any other set (16-bit or float images, stacks of
channels) is read channel by channel: every image as stored, its values scaled by the set's
``Scaling`` into float32 0-255 (no rounding to 8 bits), normalised by per-channel statistics of the
training images. Every image of such a set must have the same number of channels.

TIFFs that PIL cannot read faithfully (several pages, more than 8 bits per sample in a multi-sample
image, 2 or 5+ samples) are read with tifffile (the ``fastseg[tiff]`` extra). Its arrays are laid out
by ``to_hwc``: H x W is one channel; of a 3-D array's first and last axes, the one with at most
``MAX_CHANNELS`` entries holds the channels, the smaller one if both do (a tie: the last, as PIL and
imageio write them). TIFF orientation tags are not applied to tifffile's arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import _OPEN_ERRORS, EIGHT_BIT_MODES, Scaling, _open_error, image_size, read_image, scaled_uint8, upright

__all__ = ["MAX_CHANNELS", "TIFF_EXTS", "STD_FLOOR", "ImageFacts", "tiff_reason", "tiff_size", "to_hwc",
           "read_channels", "image_facts", "channel_stats", "model_input", "load_image", "display_rgb"]

MAX_CHANNELS = 16  # an axis this short holds channels, not pixels (multiplex microscopy, multispectral bands)
TIFF_EXTS = (".tif", ".tiff")
STD_FLOOR = 1 / 255  # a constant channel: one 8-bit step, so it normalises to 0 instead of dividing by 0
_AS_RGB = ("P", "PA", "CMYK", "YCbCr", "RGBX")  # modes whose channels are read as their RGB colours
_ALPHA = ((1,), (2,))  # TIFF ExtraSamples: associated / unassociated alpha (an RGBA image, not a 4th band)


def _tifffile(path, why: str):
    try:
        import tifffile
    except ImportError:
        raise DataError(f"{path}: a TIFF with {why}: reading it needs tifffile (pip install 'fastseg[tiff]')") from None
    return tifffile


def tiff_reason(path: str | os.PathLike) -> str | None:
    """Why PIL would not give this TIFF's pixels faithfully, so tifffile reads it; None: PIL reads it (or not a TIFF)."""
    if Path(path).suffix.lower() not in TIFF_EXTS:
        return None
    try:
        with Image.open(path) as im:
            frames, tags = getattr(im, "n_frames", 1), im.tag_v2
            spp, bits, extra = tags.get(277, 1), tags.get(258, (8,)), tags.get(338, ())
    except (*_OPEN_ERRORS, SyntaxError, AttributeError) as e:
        return f"a layout PIL cannot read ({e.__class__.__name__})"
    bits = max(bits) if isinstance(bits, tuple) else bits
    extra = extra if isinstance(extra, tuple) else (extra,)
    if frames > 1:
        return f"{frames} pages"
    if spp > 1 and bits > 8:  # PIL keeps only the top 8 bits of multi-sample images
        return f"{spp} samples of {bits} bits"
    if spp not in (1, 3) and not (spp == 4 and extra in _ALPHA):
        return f"{spp} samples per pixel"
    return None


def _tiff_array(path, why: str, decode: bool = True):
    """tifffile's first series: its pixels, or with ``decode=False`` a zero-strided array of its shape."""
    tifffile = _tifffile(path, why)
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            if decode:
                return series.asarray()
            return np.lib.stride_tricks.as_strided(np.zeros(1, series.dtype), series.shape, (0,) * len(series.shape))
    except Exception as e:  # tifffile raises its own error types, ValueError, KeyError, ... for broken files
        raise DataError(f"{path}: cannot read image ({e.__class__.__name__}: {e}) (remove or replace the file)") from None


def tiff_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of a TIFF that tifffile reads (header only); None when PIL reads the file."""
    why = tiff_reason(path)
    if why is None:
        return None
    h, w = to_hwc(_tiff_array(path, why, decode=False), path).shape[:2]
    return w, h


def to_hwc(arr: np.ndarray, source) -> np.ndarray:
    """An array as H x W x C by the layout rule in the module docstring; ``DataError`` naming ``source`` if none fits."""
    arr = np.asarray(arr)
    shape = arr.shape
    while arr.ndim > 3 and arr.shape[0] == 1:  # a single time point or plane of a larger stack
        arr = arr[0]
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{source}: a {len(shape)}-D image {shape}; fastseg reads 2-D images with channels "
                        "(H x W, H x W x C or C x H x W; save one plane or time point per file)")
    first, last = shape[-3], shape[-1]
    if last <= MAX_CHANNELS and last <= first:
        return arr
    if first <= MAX_CHANNELS:
        return np.moveaxis(arr, 0, -1)
    raise DataError(f"{source}: image of shape {shape} has no first or last axis of at most {MAX_CHANNELS} "
                    "entries to hold the channels (save it as H x W x C or C x H x W)")


def read_channels(path: str | os.PathLike) -> np.ndarray:
    """An image file's values as stored, H x W x C (upright by EXIF for PIL-read files; palettes as RGB)."""
    why = tiff_reason(path)
    if why is not None:
        return to_hwc(_tiff_array(path, why), path)
    try:
        with Image.open(path) as im:
            im = upright(im)
            if im.mode in _AS_RGB:
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            arr = np.asarray(im)
    except _OPEN_ERRORS as e:
        raise _open_error(path, "image", e) from None
    return np.ascontiguousarray(arr if arr.ndim == 3 else arr[..., None])


@dataclass(frozen=True)
class ImageFacts:
    """One image as ``inspect_data`` needs it: size, channels and type; its peak and sums once decoded."""

    size: tuple[int, int]  # (width, height) as viewers show it
    channels: int  # as stored: grey 1, RGB 3, RGBA 4, a stack C
    dtype: str  # numpy's name for the stored values
    rgb: bool  # 8-bit, read as RGB when the whole set is (grey repeated, alpha dropped)
    peak: tuple[float, bool] | None = None  # (largest value, is float) of images wider than 8 bits
    sums: tuple | None = field(default=None, compare=False)  # (pixels, per-channel sum, sum of squares), >= 0


def _sums(arr: np.ndarray) -> tuple:
    """Pixel count, per-channel sum and sum of squares, negatives and NaN as 0 (as ``Scaling`` clips them)."""
    x = np.clip(np.nan_to_num(arr.reshape(-1, arr.shape[-1]).astype(np.float64)), 0, None)
    return x.shape[0], x.sum(0), np.square(x).sum(0)


def _decoded(arr: np.ndarray, size: tuple[int, int], rgb: bool) -> ImageFacts:
    wide = arr.dtype != np.uint8
    peak = ((float(np.nanmax(arr)) if arr.size else 0.0), arr.dtype.kind == "f") if wide else None
    return ImageFacts(size, arr.shape[-1], arr.dtype.name, rgb, peak, _sums(arr))


def image_facts(path: str | os.PathLike, decode: bool = False) -> ImageFacts:
    """Facts from the header for 8-bit images PIL reads (``decode``: with their sums); other images are
    decoded, since their peak decides the set's scaling."""
    why = tiff_reason(path)
    if why is not None:
        arr = to_hwc(_tiff_array(path, why), path)
        return _decoded(arr, (arr.shape[1], arr.shape[0]), rgb=False)
    size = image_size(path)
    try:
        with Image.open(path) as im:
            mode, bands = im.mode, len(im.getbands())
    except _OPEN_ERRORS as e:
        raise _open_error(path, "image", e) from None
    if mode in EIGHT_BIT_MODES and not decode:  # channels as read_channels gives them
        return ImageFacts(size, 3 if mode in _AS_RGB else 1 if mode == "1" else bands, "uint8", True)
    return _decoded(read_channels(path), size, rgb=mode in EIGHT_BIT_MODES)


def channel_stats(facts: list[ImageFacts], scaling: Scaling) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of the images' values as the model sees them (``scaling``, then / 255),
    from their sums: wide images are divided by the set's top, 8-bit ones by 255, as ``Scaling.to_float``."""
    n, s1, s2 = 0, 0.0, 0.0
    for f in facts:
        count, total, squares = f.sums
        top = 255.0 if f.dtype == "uint8" else scaling.top or (1.0 if f.peak and f.peak[1] else 65535.0)
        n, s1, s2 = n + count, s1 + total / top, s2 + squares / top ** 2
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 0))
    return tuple(float(m) for m in mean), tuple(float(max(s, STD_FLOOR)) for s in std)


def model_input(src, scaling: Scaling) -> np.ndarray:
    """H x W x C float32 in 0-255 as a channel model takes it, from a path, PIL image or array (2-D, H x W x C
    or C x H x W); a ``DataError`` names the source when its channel count is not the model's."""
    if isinstance(src, Image.Image):
        arr, name = np.asarray(upright(src)), "image"
        arr = arr if arr.ndim == 3 else arr[..., None]
    elif isinstance(src, np.ndarray):
        arr, name = to_hwc(src, f"array of shape {src.shape}"), f"array of shape {src.shape}"
    else:
        arr, name = read_channels(src), src
    if arr.shape[-1] != scaling.channels:
        raise DataError(f"{name}: {arr.shape[-1]} channel(s), but the model takes {scaling.channels} "
                        "(give it images with the channels it was trained on)")
    return np.ascontiguousarray(scaling.to_float(arr))


def load_image(src, scaling: Scaling | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB, upright (EXIF), from a path, PIL image or array (grey, RGBA and palettes
    converted; 16-bit and float values by the model's ``scaling``, None: per image as old models did).
    A model that reads channel by channel (``scaling.channels``) gets H x W x C float32 in 0-255 instead."""
    if scaling is not None and scaling.channels is not None:
        return model_input(src, scaling)
    if isinstance(src, np.ndarray):
        arr = src
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        return np.ascontiguousarray(scaled_uint8(arr[..., :3], scaling), dtype=np.uint8)
    if not isinstance(src, Image.Image):
        return read_image(src, scaling)  # the same decoding as training (scaling, EXIF, alpha, palettes)
    if src.mode not in EIGHT_BIT_MODES:
        return load_image(np.asarray(upright(src)), scaling)  # 16-bit / float: scaled like files
    try:
        return np.asarray(upright(src).convert("RGB"))
    except (OSError, ValueError) as e:
        raise DataError(f"{src}: cannot convert image ({e.__class__.__name__}: {e})") from None


def display_rgb(arr: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 to look at: RGB as it is; else the first channel as grey, or the first three as RGB,
    each stretched from its lowest to its highest value (a dim 16-bit channel stays visible)."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
        return arr
    arr = arr if arr.ndim == 3 else arr[..., None]
    arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
    x = np.nan_to_num(arr.astype(np.float32))
    lo, hi = x.min(axis=(0, 1)), x.max(axis=(0, 1))
    x = (x - lo) * (255.0 / np.maximum(hi - lo, 1e-12))
    x = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(x, 3, axis=2) if x.shape[-1] == 1 else x)
