import numpy as np
import pytest
from PIL import Image

from fastseg.errors import DataError
from fastseg.data.images import IGNORE_INDEX, MaskDecoder, image_size, read_image, read_mask

GREY = (np.arange(24 * 16).reshape(16, 24) % 256).astype(np.uint8)


@pytest.mark.parametrize("kind, ext", [
    ("RGB", ".png"), ("RGB", ".bmp"), ("RGB", ".tif"), ("L", ".png"), ("L", ".jpg"), ("RGBA", ".png"),
    ("P", ".png"), ("I;16", ".png"), ("I;16", ".tif"),
])
def test_read_image_gives_hxwx3_uint8(tmp_path, kind, ext):
    path = tmp_path / f"x{ext}"
    if kind == "I;16":
        Image.fromarray(GREY.astype(np.uint16) * 257).save(path)  # full 16-bit range
    elif kind == "RGBA":
        Image.fromarray(np.dstack([GREY, GREY, GREY, np.zeros_like(GREY)])).save(path)  # alpha 0 must not blank it
    elif kind == "P":
        Image.fromarray(GREY).convert("P").save(path)
    elif kind == "RGB":
        Image.fromarray(np.dstack([GREY] * 3)).save(path)
    else:
        Image.fromarray(GREY).save(path, quality=100) if ext == ".jpg" else Image.fromarray(GREY).save(path)
    arr = read_image(path)
    assert arr.shape == (16, 24, 3) and arr.dtype == np.uint8
    tol = 3 if ext == ".jpg" else (1 if kind == "I;16" else 0)
    assert np.abs(arr[..., 1].astype(int) - GREY.astype(int)).max() <= tol
    assert image_size(path) == (24, 16)


def test_12bit_image_is_scaled_to_full_range(tmp_path):
    Image.fromarray(np.array([[0, 4095]], np.uint16)).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png")[0, :, 0].tolist() == [0, 255]


def test_truncated_files_are_caught_by_the_header_check(tmp_path):
    Image.fromarray(np.dstack([GREY] * 3)).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([GREY] * 3)).save(tmp_path / "a.jpg")
    for name in ("a.png", "a.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) - 20])
        with pytest.raises(DataError, match=f"{name}: .*(remove or replace the file)"):
            image_size(tmp_path / name)


def test_read_mask_refuses_colour_and_wide_values(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.raises(DataError, match="colour \\(RGB\\) mask but no colour table"):
        read_mask(tmp_path / "c.png")
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "w.png")
    with pytest.raises(DataError, match="mask values go up to 1000"):
        read_mask(tmp_path / "w.png")


def test_mask_decoder_colour_table_and_lut(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)
    rgb[1, 2] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    lut = list(range(256))
    lut[2] = IGNORE_INDEX
    dec = MaskDecoder(lut, colors=[(0, 0, 0), (255, 0, 0), (0, 0, 255)])
    assert dec.raw(tmp_path / "m.png").tolist() == [[0, 1, 0], [0, 0, 2]]
    assert dec(tmp_path / "m.png").tolist() == [[0, 1, 0], [0, 0, IGNORE_INDEX]]


# Images beyond 8-bit RGB (fastseg.data.channels)


def test_check_reports_channels_dtype_and_training_statistics(tmp_path, tiny_data):
    pytest.importorskip("tifffile")
    from click.testing import CliRunner

    from channel_sets import make_stack_set
    from fastseg.cli import main
    from fastseg.data.channels import read_channels
    from fastseg.data.check import check

    root = make_stack_set(tmp_path / "d", channels=4, n=6, side=32)
    rep = check(root)
    assert rep.ok and (rep.channels, rep.dtype) == (4, "uint16")
    train = np.stack([read_channels(root / "images" / f"im{i}.tif") for i in range(4)]).astype(np.float64) / 65535
    assert np.allclose(rep.stats["mean"], train.mean(axis=(0, 1, 2)), rtol=1e-6)
    assert np.allclose(rep.stats["std"], train.std(axis=(0, 1, 2)), rtol=1e-6)
    out = CliRunner().invoke(main, ["check", str(root)]).output.splitlines()
    mean, std = (" ".join(f"{v:.3g}" for v in rep.stats[k]) for k in ("mean", "std"))
    assert f"channels  4, uint16 (every channel as stored; training-set mean {mean}, std {std})" in out
    rgb = check(tiny_data)  # 8-bit RGB: as before, ImageNet statistics
    assert (rgb.channels, rgb.dtype, rgb.stats) == (3, "uint8", None)
    assert ("channels  3, uint8 (8-bit images read as RGB; ImageNet mean/std)"
            in CliRunner().invoke(main, ["check", str(tiny_data)]).output.splitlines())


def test_images_of_one_set_must_agree_on_their_channels(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from channel_sets import make_stack_set
    from fastseg.data.check import check

    root = make_stack_set(tmp_path / "d", channels=4, n=6, side=32)
    odd = root / "images" / "im5.tif"
    tifffile.imwrite(odd, np.zeros((32, 32, 3), np.uint16), photometric="rgb")
    rep = check(root)
    assert not rep.ok and rep.problems == (f"{odd}: 3 channel(s), but the training images have 4 (every image of a "
                                           "data set needs the same channels: convert or remove it)",)


def test_8bit_sets_keep_the_rgb_reading(tiny_data):
    from fastseg.data.dataset import discover

    spec = discover(tiny_data)
    assert (spec.scaling.channels, spec.channels, spec.stats, spec.pixel_bytes) == (None, 3, None, 3)
