"""int8 ONNX export (fastseg.export.quantize): calibration sources, the file beside its model, tied to its weights."""

import numpy as np
import pytest
import torch

from fastseg.errors import ConfigError, ModelError
from fastseg.export.quantize import calibration_images, int8_beside, int8_path_for, weights_fingerprint
from fastseg.model import build_model


@pytest.mark.slow
def test_int8_export_runs_agrees_and_is_found_beside_its_model(trained, tmp_path):
    import shutil

    from fastseg import export_model
    from fastseg.infer.predictor import load

    pkl = tmp_path / "model.pkl"
    shutil.copy(trained.export, pkl)
    res = export_model(pkl, "onnx", int8=True)
    assert res.path == tmp_path / "model.int8.onnx" and res.path.is_file()
    q = res.quantization
    assert q["agreement_images"] == 2 and "training images from" in q["calibration"]
    # the 1-epoch model's class probabilities are nearly uniform (see test_predict), so argmax flips on
    # tiny changes; int8 still gives the fp32 class on the great majority of pixels
    assert q["agreement"] > 0.8
    int8 = load(res.path)
    assert int8.backend.name == "onnx-int8" and int8.backend_note.startswith("onnx-int8 (onnxruntime, int8 model; ")
    fp32 = load(pkl, backend="torch")
    img = [np.asarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3)), dtype=np.uint8)]
    assert (int8.predict(img)[0] == fp32.predict(img)[0]).mean() > 0.8
    beside = load(pkl, backend="onnx-int8")  # the sidecar of these very weights
    assert beside.backend.name == "onnx-int8"
    other = tmp_path / "other.pkl"  # same file name pattern, other weights: never used
    shutil.copy(pkl, other)
    shutil.copy(res.path, tmp_path / "other.int8.onnx")
    model, _ = build_model("timm-efficientnet-b0", len(fp32.codes), "none")
    assert int8_beside(other, model) == (None, None)


def test_int8_needs_onnx_and_a_calibration_source(trained, tmp_path):
    from fastseg.export.formats import export_model

    with pytest.raises(ConfigError, match="--int8 and --calib apply to --format onnx only"):
        export_model(trained.export, "torchscript", int8=True)
    with pytest.raises(ModelError, match=r"data folder /nowhere is not here; give --calib DIR"):
        calibration_images({"data": "/nowhere"}, None)
    with pytest.raises(ModelError, match="no images to calibrate on"):
        calibration_images({}, tmp_path)


def test_int8_path_sits_beside_the_model_or_its_bundle(tmp_path):
    assert int8_path_for(tmp_path / "exports" / "model.pkl") == tmp_path / "exports" / "model.int8.onnx"
    assert int8_path_for(tmp_path / "m.onnx") == tmp_path / "m.int8.onnx"
    bundle = tmp_path / "exports" / "cells"
    bundle.mkdir(parents=True)
    (bundle / "fastseg.json").write_text("{}")
    assert int8_path_for(bundle) == int8_path_for(bundle / "fastseg.json") == tmp_path / "exports" / "cells.int8.onnx"


def test_weights_fingerprint_follows_the_weights_not_the_object():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    b = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b[0].bias[0] += 1e-6
    assert weights_fingerprint(a) != weights_fingerprint(b)
    b.load_state_dict(a.state_dict())
    b[1].num_batches_tracked += 1  # integer buffers count too
    assert weights_fingerprint(a) != weights_fingerprint(b)


def test_calib_folder_gives_its_images_for_both_roles(tmp_path):
    from fastseg.export.quantize import CALIB_IMAGES

    (tmp_path / "sub").mkdir()
    names = [f"sub/{i:02d}.png" for i in range(CALIB_IMAGES + 2)] + [".hidden.png", "notes.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    calib, agree, where = calibration_images({"data": "/ignored"}, tmp_path)
    assert calib == agree == [tmp_path / n for n in names[:CALIB_IMAGES]]
    assert where == f"{CALIB_IMAGES} images from {tmp_path}"
