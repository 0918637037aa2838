"""Torch to ONNX in memory and ONNX Runtime sessions (fastseg.export.onnx), shared by the exports and the backends."""

import sys

import numpy as np
import pytest
import torch

from fastseg.errors import ModelError
from fastseg.export.onnx import onnx_session, torch_to_onnx_bytes


def _net(channels: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1))


def test_the_graph_takes_any_batch_and_size_and_matches_torch():
    net = _net(channels=4)  # the sample input follows the model's own first convolution
    session = onnx_session(torch_to_onnx_bytes(net, sample_side=32))
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["logits"]
    x = torch.randn(3, 4, 40, 72, generator=torch.Generator().manual_seed(1))
    (y,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert np.allclose(y, net(x).numpy(), atol=1e-5)


def test_adaptive_pooling_to_a_grid_is_refused_before_exporting():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(2))
    with pytest.raises(ModelError) as e:
        torch_to_onnx_bytes(net, source="m.pkl")
    assert str(e.value) == ("m.pkl: cannot be converted to ONNX with any image size (its AdaptiveAvgPool2d to 2 has no "
                            "ONNX form for variable sizes, as in PSPNet and UPerNet); use the bundle or --format torchscript")
    torch_to_onnx_bytes(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1)))  # global pooling converts


def test_a_file_that_is_not_onnx_is_one_line():
    with pytest.raises(ModelError, match=r"^m.onnx: not a readable ONNX model \(\w+: ") as e:
        onnx_session(b"not a graph", source="m.onnx")
    assert "\n" not in str(e.value)


def test_missing_onnxruntime_is_a_clear_error(tmp_path, monkeypatch):
    from fastseg.infer.predictor import load

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    with pytest.raises(ModelError) as e:
        load(f)
    assert str(e.value) == f"{f}: onnxruntime is not installed (pip install 'fastseg[onnx]')"
