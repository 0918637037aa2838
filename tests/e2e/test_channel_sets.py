"""Training and predicting on images beyond 8-bit RGB: 16-bit TIFFs of 4 channels and of 1 channel."""

import json

import numpy as np
import pytest
import torch

from channel_sets import make_stack_set

pytestmark = pytest.mark.slow
tifffile = pytest.importorskip("tifffile")


def _fit(root, out, epochs: int):
    from fastseg.config import FitConfig
    from fastseg.pipeline import fit

    cfg = FitConfig(data=str(root), epochs=epochs, lr=1e-2, bs=4, weights="none", export=str(out / "model.pkl"),
                    precision="fp32", runs_dir=str(out / "runs"), name="run", num_workers=0)
    return fit(cfg)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """10 images of 64 x 64 x 4 uint16 (8 train, 2 valid), a bright square in channel 1; trained 3 epochs."""
    tmp = tmp_path_factory.mktemp("four")
    root = make_stack_set(tmp / "data", channels=4)
    return root, _fit(root, tmp, epochs=3)


def _info(result) -> dict:
    from fastseg.export.bundle import INFO_FILE, bundle_path_for

    return json.loads((bundle_path_for(result.export) / INFO_FILE).read_text())


def test_a_4_channel_16bit_tiff_set_trains_and_predicts_in_every_format(four, tmp_path):
    from click.testing import CliRunner

    from fastseg.cli import main
    from fastseg.data.dataset import discover
    from fastseg.export.bundle import bundle_path_for
    from fastseg.export.formats import export_model
    from fastseg.infer.predictor import load

    root, result = four
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    spec, info = discover(root), _info(result)
    assert info["in_channels"] == 4 and info["scaling"] == {**spec.scaling.as_dict(), "channels": 4}
    assert np.allclose(info["mean"], spec.stats[0]) and np.allclose(info["std"], spec.stats[1])  # not ImageNet's
    images = [s.image for s in spec.valid]
    bundle = load(bundle_path_for(result.export), backend="torch")
    assert bundle.model.encoder.conv_stem.in_channels == 4
    masks = bundle.predict(images)
    assert [m.shape for m in masks] == [(64, 64)] * 2
    onnx, script = (export_model(result.export, fmt, tmp_path / name).path
                    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")))
    import onnx as onnx_lib

    dims = onnx_lib.load(str(onnx)).graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 4  # batch, 4 channels, height, width
    for other in (load(result.export, backend="torch"), load(script), load(onnx)):
        got = other.predict(images)
        assert np.mean([np.mean(a == b) for a, b in zip(got, masks)]) > 0.995
    res = CliRunner().invoke(main, ["predict", str(bundle_path_for(result.export)), str(root / "images"),
                                    "--out", str(tmp_path / "out"), "--overlay", "--backend", "torch"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 10 and len(list((tmp_path / "out").glob("*.jpg"))) == 10


def test_prediction_normalises_with_the_stored_statistics_not_per_image(four):
    from fastseg.data.channels import read_channels
    from fastseg.data.dataset import discover
    from fastseg.export.bundle import bundle_path_for
    from fastseg.infer.predictor import load
    from fastseg.train.loaders import Getters, make_dataloaders

    root, result = four
    info, predictor = _info(result), load(bundle_path_for(result.export), backend="torch")
    mean, std = (np.array(info[k], np.float32)[:, None, None] for k in ("mean", "std"))
    spec = discover(root)
    # training's validation batch (whole 64 px images) and prediction see the same numbers
    xb, _ = make_dataloaders(spec, size=64, bs=2, getters=Getters.for_spec(spec, cache=False),
                             aug="none").valid.one_batch()
    x = predictor._normalised(np.stack([predictor.read(s.image) for s in spec.valid]))
    assert torch.allclose(x, xb.cpu(), atol=1e-4)
    raw = read_channels(spec.valid[0].image)
    dim = raw // 4  # the same scene, a quarter as bright
    want = (np.moveaxis(raw, -1, 0) / 65535 - mean) / std
    assert np.allclose(x[0].numpy(), want, atol=1e-4)

    def per_image(a):  # what scaling each image by its own statistics would feed the model
        a = a.astype(np.float64)
        return (a - a.mean((0, 1))) / a.std((0, 1))

    assert np.allclose(per_image(raw), per_image(dim), atol=0.02)  # per image, the two would look alike ...
    x_dim = predictor._normalised(predictor.read(dim)[None])[0].numpy()
    assert np.allclose(x_dim, (np.moveaxis(dim, -1, 0) / 65535 - mean) / std, atol=1e-4)  # ... stored stats: they do not
    assert np.abs(x_dim - x[0].numpy()).mean() > 0.5
    (p_raw,), (p_dim,) = (predictor.predict([a], probs=True)[1] for a in (raw, dim))
    assert not np.allclose(p_raw, p_dim, atol=1e-3)


def test_a_1_channel_16bit_set_trains_and_predicts(tmp_path):
    from fastseg.data.channels import read_channels
    from fastseg.errors import DataError
    from fastseg.infer.predictor import load

    root = make_stack_set(tmp_path / "data", channels=1, n=6)
    result = _fit(root, tmp_path, epochs=1)
    info = _info(result)
    assert info["in_channels"] == 1 and len(info["mean"]) == len(info["std"]) == 1
    predictor = load(result.export, backend="torch")
    assert predictor.model.encoder.conv_stem.in_channels == 1
    path = root / "images" / "im5.tif"
    grey = read_channels(path)[..., 0]
    assert grey.dtype == np.uint16 and grey.ndim == 2
    by_path, by_array = predictor.predict([path, grey], probs=True)[1]
    assert np.array_equal(by_path, by_array)
    with pytest.raises(DataError) as e:
        predictor.predict([np.zeros((64, 64, 4), np.uint16)])
    assert str(e.value) == ("array of shape (64, 64, 4): 4 channel(s), but the model takes 1 (give it images with "
                            "the channels it was trained on)")


def test_8bit_rgb_models_keep_imagenet_statistics(trained):
    from fastai.vision.core import imagenet_stats

    info = _info(trained)
    assert info["in_channels"] == 3 and info["scaling"]["channels"] is None
    assert np.allclose(info["mean"], imagenet_stats[0]) and np.allclose(info["std"], imagenet_stats[1])
