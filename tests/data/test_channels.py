"""fastseg.data.channels: images beyond 8-bit RGB read channel by channel (tifffile for stacks)."""

import numpy as np
import pytest
from PIL import Image

from fastseg.errors import DataError

GREY = (np.arange(24 * 16).reshape(16, 24) % 256).astype(np.uint8)


@pytest.mark.parametrize("shape, expected", [
    ((5, 7), (5, 7, 1)), ((5, 7, 4), (5, 7, 4)), ((4, 5, 7), (5, 7, 4)), ((1, 5, 7), (5, 7, 1)),
    ((3, 9, 3), (3, 9, 3)),  # both ends could hold channels: a tie goes to the last axis, as PIL writes
    ((16, 40, 17), (40, 17, 16)), ((1, 1, 2, 9, 9), (9, 9, 2)),  # leading single planes dropped
])
def test_channel_layout_rule(shape, expected):
    from fastseg.data.channels import to_hwc

    arr = np.arange(np.prod(shape)).reshape(shape)
    out = to_hwc(arr, "x.tif")
    assert out.shape == expected
    if len(shape) == 3 and expected[-1] == shape[0] and shape[0] != shape[-1]:  # C x H x W: planes become channels
        assert (out[..., -1] == arr[-1]).all()


@pytest.mark.parametrize("shape, problem", [
    ((20, 30, 40), "x.tif: image of shape (20, 30, 40) has no first or last axis of at most 16 entries to hold the "
                   "channels (save it as H x W x C or C x H x W)"),
    ((2, 3, 9, 9), "x.tif: a 4-D image (2, 3, 9, 9); fastseg reads 2-D images with channels (H x W, H x W x C or "
                   "C x H x W; save one plane or time point per file)"),
])
def test_channel_layout_refuses_what_it_cannot_tell(shape, problem):
    from fastseg.data.channels import to_hwc

    with pytest.raises(DataError) as e:
        to_hwc(np.zeros(shape), "x.tif")
    assert str(e.value) == problem


def test_tiff_stacks_are_read_with_every_channel_and_value(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from fastseg.data.channels import image_facts, read_channels, tiff_reason, tiff_size

    rng = np.random.default_rng(0)
    hwc4 = rng.integers(0, 65535, (12, 20, 4)).astype(np.uint16)
    cases = {
        "rgba16.tif": (hwc4, {}, "4 samples of 16 bits"),  # PIL reads this as 8-bit RGBA: the top byte only
        "pages.tif": (np.moveaxis(hwc4, -1, 0), {"photometric": "minisblack"}, "4 pages"),
        "five.tif": (rng.random((12, 20, 5)).astype(np.float32), {"photometric": "minisblack", "planarconfig": "contig"},
                     "a layout PIL cannot read (UnidentifiedImageError)"),
    }
    for name, (arr, kw, why) in cases.items():
        tifffile.imwrite(tmp_path / name, arr, **kw)
        assert tiff_reason(tmp_path / name) == why
        got = read_channels(tmp_path / name)
        assert got.dtype == arr.dtype and got.shape[:2] == (12, 20) and tiff_size(tmp_path / name) == (20, 12)
        assert np.array_equal(got, arr if arr.shape[-1] == got.shape[-1] else np.moveaxis(arr, 0, -1))
        facts = image_facts(tmp_path / name)
        assert (facts.size, facts.channels, facts.dtype, facts.rgb) == ((20, 12), got.shape[-1], arr.dtype.name, False)
    for name, arr in {"grey16.tif": hwc4[..., 0], "rgb8.tif": GREY[..., None].repeat(3, 2)}.items():
        Image.fromarray(arr).save(tmp_path / name)  # what PIL reads faithfully stays with PIL
        assert tiff_reason(tmp_path / name) is None
    assert image_facts(tmp_path / "rgb8.tif").rgb and not image_facts(tmp_path / "grey16.tif").rgb


def test_a_stack_without_tifffile_is_one_line(tmp_path, monkeypatch):
    import sys

    tifffile = pytest.importorskip("tifffile")
    from fastseg.data.channels import read_channels

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
    monkeypatch.setitem(sys.modules, "tifffile", None)  # as if not installed
    with pytest.raises(DataError) as e:
        read_channels(tmp_path / "s.tif")
    assert str(e.value) == (f"{tmp_path / 's.tif'}: a TIFF with 3 pages: reading it needs tifffile "
                            "(pip install 'fastseg[tiff]')")
