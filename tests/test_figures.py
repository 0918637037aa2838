"""Plots drawn from arrays and numbers (fastseg.figures): error maps, and each plot written as a readable image."""

from types import SimpleNamespace

import numpy as np
from PIL import Image

from fastseg.constants import IGNORE_INDEX
from fastseg.figures import error_map, plot_confusion, plot_gallery, plot_history, plot_lr_find, plot_samples

RED = (230, 20, 20)


def test_error_map_marks_wrong_pixels_red_but_not_void():
    image = np.full((2, 3, 3), 200, np.uint8)
    truth = np.array([[0, 1, IGNORE_INDEX], [1, 1, 0]], np.uint8)
    pred = np.array([[0, 0, 1], [1, 1, 1]], np.uint8)
    out = error_map(image, truth, pred)
    wrong = np.all(out == RED, axis=2)
    assert wrong.tolist() == [[False, True, False], [False, False, True]]  # void disagrees but does not count
    assert (out[0, 0] == int(0.35 * 200 + 80)).all()  # right pixels: the image dimmed to grey
    assert error_map(image[..., 0], truth, pred).shape == (2, 3, 3)  # a grey image gives an RGB map too


def _image(path):
    with Image.open(path) as im:
        return im.format, im.size


def test_each_plot_is_written_as_an_image(tmp_path):
    rows = [{"epoch": 0, "train_loss": 1.0, "valid_loss": 0.9}, {"epoch": 1, "train_loss": 0.7}]  # a missing value
    lr = SimpleNamespace(lrs=[1e-5, 1e-4, 1e-3, 1e-2], losses=[1.0, 0.8, 0.5, float("nan")],
                         suggestions={"valley": 5e-4, "steep": 1e-4})
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (16, 20, 3), dtype=np.uint8) for _ in range(2)]
    masks = [rng.integers(0, 3, (16, 20)).astype(np.uint8) for _ in range(2)]
    cm = np.array([[5, 1, 0], [2, 8, 0], [0, 0, 0]])  # a class never seen: its row stays zero, not NaN
    written = [plot_history(rows, ["train_loss", "valid_loss"], tmp_path / "losses.png", "loss", "loss"),
               plot_lr_find(lr, tmp_path / "lr.png"),
               plot_samples(images, masks, masks[::-1], 3, tmp_path / "samples.png"),
               plot_gallery(images, masks, masks[::-1], ["worst", "next"], 3, tmp_path / "gallery.png"),
               plot_confusion(cm, ["bg", "a", "b"], tmp_path / "confusion.jpg")]
    assert [p.name for p in written] == ["losses.png", "lr.png", "samples.png", "gallery.png", "confusion.jpg"]
    assert [_image(p)[0] for p in written] == ["PNG"] * 4 + ["JPEG"]  # the suffix picks the format
    assert _image(tmp_path / "gallery.png")[1][0] > _image(tmp_path / "samples.png")[1][0]  # one more column
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temporary files left
