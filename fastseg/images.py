"""Reading images and masks from disk as numpy arrays, and decoding masks into class indices.

``read_image`` normalises every image kind fastseg accepts (RGB, grey, RGBA, 16-bit, palette;
PNG/JPEG/TIFF/BMP) to HxWx3 uint8. ``read_mask`` gives raw mask values, ``read_color_mask`` the
RGB colours of a colour-coded mask. ``MaskDecoder`` turns a mask file into class indices (void =
``IGNORE_INDEX``); it is top-level and holds plain data so fastai can pickle it into an export.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

__all__ = ["IGNORE_INDEX", "IMAGE_EXTS", "read_image", "read_mask", "read_color_mask", "image_size",
           "MaskDecoder", "pack_rgb", "no_pixel_limit", "too_large_reason"]

IGNORE_INDEX = 255  # void pixels: excluded from the loss and every metric
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


# PIL refuses images over twice Image.MAX_IMAGE_PIXELS (a decompression-bomb guard) with an error that is not an OSError
_OPEN_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


def too_large_reason(e: Image.DecompressionBombError) -> str:
    """PIL's decompression-bomb refusal in words: the image's and the limit's pixel counts."""
    counts = [int(n) for n in re.findall(r"(\d+) pixels", str(e))]
    if len(counts) < 2:
        return f"too large: {e}"
    size, limit = (f"{n / 1e6:.0f} megapixels" if n >= 1e6 else f"{n} pixels" for n in counts[:2])
    return f"too large: {size}, over the limit of {limit} that guards against decompression bombs"


def _open_error(path, what: str, e: Exception) -> DataError:
    if isinstance(e, Image.DecompressionBombError):
        return DataError(f"{path}: cannot read {what} ({too_large_reason(e)}); split it into smaller images "
                         "or downscale it")
    why = "not an image file" if isinstance(e, UnidentifiedImageError) else f"{e.__class__.__name__}: {e}"
    return DataError(f"{path}: cannot read {what} ({why}) (remove or replace the file)")


class _PixelLimit:
    """PIL's pixel limit is process-wide: lifts nest and overlap across threads, and the last one out restores it."""

    lock = threading.Lock()
    lifts = 0
    saved: int | None = None


@contextmanager
def no_pixel_limit(enabled: bool = True) -> Iterator[None]:
    """Open images of any size inside the block (tiled prediction of slides); PIL's limit is restored after."""
    if not enabled:
        yield
        return
    with _PixelLimit.lock:
        if _PixelLimit.lifts == 0:
            _PixelLimit.saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _PixelLimit.lifts += 1
    try:
        yield
    finally:
        with _PixelLimit.lock:
            _PixelLimit.lifts -= 1
            if _PixelLimit.lifts == 0:
                Image.MAX_IMAGE_PIXELS = _PixelLimit.saved


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit / int / float greys scaled to 0-255 by the type's range (values above 255 seen)."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        hi = 1.0 if float(np.nanmax(arr)) <= 1.0 else float(np.nanmax(arr))
        return np.clip(np.nan_to_num(arr) / hi * 255.0, 0, 255).astype(np.uint8)
    hi = int(arr.max()) if arr.size else 0
    if hi <= 255:
        return arr.astype(np.uint8)
    top = 4095 if hi <= 4095 else 65535  # 12-bit sensors are common in microscopy
    return (arr.astype(np.float32) * (255.0 / top) + 0.5).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as HxWx3 uint8: grey is repeated, alpha dropped, 16-bit scaled, palettes expanded."""
    try:
        with Image.open(path) as im:
            if im.mode in _WIDE_MODES:
                grey = _to_uint8(np.asarray(im))
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
            if im.mode in ("RGB", "L"):
                arr = np.asarray(im.convert("RGB"))
            elif im.mode in ("RGBA", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX"):
                arr = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA", "P") else "RGB"))[..., :3]
            else:  # e.g. 16-bit RGB TIFFs that PIL exposes in other modes
                arr = np.asarray(im)
                arr = _to_uint8(arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2))[..., :3]
    except _OPEN_ERRORS as e:
        raise _open_error(path, "image", e) from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the header, after a cheap integrity check (PNG CRCs, JPEG end marker)."""
    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            if fmt == "PNG":
                im.verify()  # walks the chunks and their CRCs without decoding pixels
    except (*_OPEN_ERRORS, SyntaxError) as e:
        raise _open_error(path, "image", e) from None
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 2))
            if f.read(2) != b"\xff\xd9":
                raise DataError(f"{path}: truncated JPEG (no end-of-image marker) (remove or replace the file)")
    return size


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Raw mask values as an HxW uint8 array (palette PNGs give their indices)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("P", "L"):
                arr = np.asarray(im)
            elif im.mode in _WIDE_MODES:
                arr = np.asarray(im)
                if arr.max() > 255:
                    raise DataError(f"{path}: mask values go up to {int(arr.max())} (class indices must be 0-255; "
                                    "save masks as 8-bit class indices)")
                arr = arr.astype(np.uint8)
            elif im.mode in ("RGB", "RGBA", "LA", "PA"):
                arr = np.asarray(im.convert("RGB"))
                if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                    raise DataError(f"{path}: colour (RGB) mask but no colour table (add codes.csv with lines "
                                    "name,r,g,b to the data folder, or pass --colors FILE)")
                arr = arr[..., 0]
            elif im.mode == "1":
                arr = np.asarray(im, dtype=np.uint8) * 255
            else:
                raise DataError(f"{path}: unsupported mask mode {im.mode} (save masks as 8-bit grey or palette PNGs)")
    except _OPEN_ERRORS as e:
        raise _open_error(path, "mask", e) from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def read_color_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask's colours as HxWx3 uint8 (palette, grey and RGBA masks converted to RGB)."""
    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")), dtype=np.uint8)
    except _OPEN_ERRORS as e:
        raise _open_error(path, "mask", e) from None


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int32 keys r<<16 | g<<8 | b."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


class MaskDecoder:
    """Mask file -> HxW uint8 class indices (void pixels = ``IGNORE_INDEX``).

    Index masks: raw values go through ``lut`` (256 entries). Colour masks (``colors`` given, one
    RGB triple per code, in code order): each colour becomes its code's index, then goes through
    ``lut``; a colour not in the table is a ``DataError`` naming the file.
    """

    def __init__(self, lut: Sequence[int], colors: Sequence[Sequence[int]] | None = None):
        self.lut = np.asarray(lut, dtype=np.uint8)
        self.colors = None if colors is None else [tuple(int(v) for v in c) for c in colors]

    def raw(self, path: str | os.PathLike) -> np.ndarray:
        """The mask's raw values: its index values, or for colour masks each colour's code index."""
        if self.colors is None:
            return read_mask(path)
        keys = pack_rgb(np.asarray(self.colors, dtype=np.uint8))
        order = np.argsort(keys)
        skeys = keys[order]
        px = pack_rgb(read_color_mask(path))
        pos = np.clip(np.searchsorted(skeys, px), 0, len(skeys) - 1)
        known = skeys[pos] == px
        if not known.all():
            bad = np.unique(px[~known])[:4]
            shown = ", ".join(f"({k >> 16},{(k >> 8) & 255},{k & 255})" for k in bad.tolist())
            raise DataError(f"{path}: colour(s) {shown} not in the colour table "
                            "(add them to codes.csv / the --colors file, or fix the mask)")
        return order[pos].astype(np.uint8)

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        return self.lut[self.raw(path)]
