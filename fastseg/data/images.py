"""Reading images and masks from disk as numpy arrays, and decoding masks into class indices.

``read_image`` normalises every image kind fastseg accepts (RGB, grey, RGBA, 16-bit, palette;
PNG/JPEG/TIFF/BMP) to HxWx3 uint8 (sets that are not all 8-bit are read channel by channel instead:
``fastseg.data.channels``). ``read_mask`` gives raw mask values, ``read_color_mask`` the
RGB colours of a colour-coded mask. ``MaskDecoder`` turns a mask file into class indices (void =
``IGNORE_INDEX``); it is top-level and holds plain data so fastai can pickle it into an export.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..constants import IGNORE_INDEX, IMAGE_EXTS, MASK_EXTS
from ..errors import DataError

__all__ = ["IGNORE_INDEX", "IMAGE_EXTS", "MASK_EXTS", "read_image", "read_mask", "read_color_mask", "image_size",
           "MaskDecoder", "pack_rgb", "Scaling", "scaling_for", "image_peak", "exif_orientation", "upright",
           "scaled_uint8", "EIGHT_BIT_MODES", "no_pixel_limit", "too_large_reason"]

_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
EIGHT_BIT_MODES = ("RGB", "L", "RGBA", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX")
BIT_DEPTHS = (8, 10, 12, 14, 16)  # sensor depths: a set is scaled by the smallest range that holds its maximum

_ORIENTATION = 0x0112  # EXIF tag: how to turn the stored pixels to show the picture as viewers do
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}  # the table of PIL.ImageOps.exif_transpose


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8, 1 = as stored) from the header only (PNG: an eXIf chunk before the pixels).

    Read without decoding pixels, so ``image_size`` and the readers agree on every file."""
    try:
        if im.format == "PNG":  # PIL's PNG getexif() decodes the whole image to look past the pixels
            exif = Image.Exif()
            if im.info.get("exif"):
                exif.load(im.info["exif"])
        else:
            exif = im.getexif()
        value = exif.get(_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError, struct.error):
        return 1  # unreadable EXIF: viewers show the pixels as stored
    return value if value in _UPRIGHT else 1


def upright(im: Image.Image) -> Image.Image:
    """``im`` turned as its EXIF orientation says (phone photos are stored rotated), else ``im`` itself."""
    method = _UPRIGHT.get(exif_orientation(im))
    return im if method is None else im.transpose(method)


@dataclass(frozen=True)
class Scaling:
    """How a data set's pixel values become 0-255, decided once from its training images and stored
    with the model (JSON: ``as_dict``/``from_dict``; per-channel statistics can extend it as fields).

    8-bit images are used as they are; wider ones (16/32-bit integers, floats) are multiplied by
    255 / ``top`` and clipped to 0-255."""

    top: float | None = None  # the value that becomes 255; None: the type's full range (65535, floats 1.0)
    why: str = "8-bit images: used as they are"
    # None: 8-bit images read as RGB (grey repeated, alpha dropped); N: every channel as stored, N of them,
    # as float32 (fastseg.data.channels: stacks, 16-bit and float images)
    channels: int | None = None

    def _factor(self, arr: np.ndarray) -> float:
        top = self.top if self.top is not None else (1.0 if arr.dtype.kind == "f" else 65535.0)
        return 255.0 / top

    def to_uint8(self, arr: np.ndarray) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.dtype == np.uint8:
            return arr
        out = np.nan_to_num(arr.astype(np.float32)) * np.float32(self._factor(arr)) + np.float32(0.5)
        return np.clip(out, 0, 255).astype(np.uint8)

    def to_float(self, arr: np.ndarray) -> np.ndarray:
        """As ``to_uint8``, without rounding to 8 bits: float32 in 0-255 (a 16-bit image keeps its levels)."""
        arr = np.asarray(arr)
        if arr.dtype == np.uint8:
            return arr.astype(np.float32)
        out = np.nan_to_num(arr.astype(np.float32)) * np.float32(self._factor(arr))
        return np.clip(out, 0, 255, out=out)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Scaling | None":
        """``None`` (a model saved before scaling was stored) keeps the old per-image rule."""
        return None if not d else cls(**{k: d[k] for k in ("top", "why", "channels") if k in d})


def scaling_for(peaks: Sequence[tuple[float, bool]]) -> Scaling:
    """The data set's rule from its wide training images' (largest value, is float) pairs."""
    if not peaks:
        return Scaling()
    hi = max(p for p, _ in peaks)
    if all(is_float for _, is_float in peaks) and hi <= 1.0:
        return Scaling(1.0, f"{len(peaks)} float image(s) with values in 0-1: x255 for every image")
    bits = next((b for b in BIT_DEPTHS if hi <= 2 ** b - 1), None)
    top = float(2 ** bits - 1) if bits else hi
    depth = f"the {bits}-bit range" if bits else "the largest value"
    return Scaling(top, f"{len(peaks)} training image(s) wider than 8 bits, largest value {hi:g}: every image "
                        f"scaled by 255/{top:g} ({depth}), in training and prediction alike")


def image_peak(path: str | os.PathLike) -> tuple[float, bool] | None:
    """(largest value, is float) of an image wider than 8 bits; None for 8-bit images (header only)."""
    try:
        with Image.open(path) as im:
            if im.mode in EIGHT_BIT_MODES:
                return None
            arr = np.asarray(im)
    except _OPEN_ERRORS as e:
        raise _open_error(path, "image", e) from None
    return (float(np.nanmax(arr)) if arr.size else 0.0), arr.dtype.kind == "f"


def scaled_uint8(arr: np.ndarray, scaling: Scaling | None) -> np.ndarray:
    """``scaling``'s rule; None: the per-image rule of models saved before scaling was stored."""
    return _to_uint8(arr) if scaling is None else scaling.to_uint8(arr)


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


def read_image(path: str | os.PathLike, scaling: Scaling | None = None) -> np.ndarray:
    """An image file upright (EXIF) as HxWx3 uint8: grey is repeated, alpha dropped, wide values scaled
    by ``scaling`` (None: per image, as models saved before scaling was stored), palettes expanded."""
    try:
        with Image.open(path) as im:
            im = upright(im)
            if im.mode in _WIDE_MODES:
                grey = scaled_uint8(np.asarray(im), scaling)
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
            if im.mode in ("RGB", "L"):
                arr = np.asarray(im.convert("RGB"))
            elif im.mode in ("RGBA", "LA", "P", "PA", "1", "CMYK", "YCbCr", "RGBX"):
                arr = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA", "P") else "RGB"))[..., :3]
            else:  # e.g. 16-bit RGB TIFFs that PIL exposes in other modes
                arr = np.asarray(im)
                arr = scaled_uint8(arr if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2), scaling)[..., :3]
    except _OPEN_ERRORS as e:
        raise _open_error(path, "image", e) from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) as viewers show it (EXIF orientations 5-8 swap them), from the header, after a
    cheap integrity check (PNG CRCs, JPEG end marker)."""
    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            if exif_orientation(im) >= 5:  # turned by a quarter: width and height swap
                size = size[::-1]
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


def _gif_grey(im: Image.Image) -> Image.Image:
    """A GIF (always palette-coded) with a grey palette as its grey values: GIF encoders order palettes
    freely, so the grey levels, not the indices, are the labels (0/255 binaries stay 0/255)."""
    if im.format != "GIF" or im.mode != "P":
        return im
    used = np.unique(np.asarray(im))
    pal = np.asarray(im.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    if used.max(initial=0) >= len(pal) or not (pal[used] == pal[used][:, :1]).all():
        return im  # a colour palette: the indices are the labels, as in palette PNGs
    return im.convert("L")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Raw mask values, upright (EXIF), as an HxW uint8 array (palette PNGs and GIFs give their indices)."""
    try:
        with Image.open(path) as im:
            im = _gif_grey(upright(im))
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
    """A mask's colours, upright (EXIF), as HxWx3 uint8 (palette, grey and RGBA masks converted to RGB)."""
    try:
        with Image.open(path) as im:
            im = upright(im)
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
