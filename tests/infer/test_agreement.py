"""How closely the reduced-precision backends reproduce fp32 masks (fastseg.infer.agreement)."""

import numpy as np
import pytest
import torch

from fastseg.infer.agreement import mask_agreement, measure_agreement


def test_fit_records_the_fast_backends_agreement_and_the_data_folder(trained, tiny_data):
    from fastseg.export.bundle import bundle_path_for, read_info

    info = read_info(bundle_path_for(trained.export))
    found = info["agreement"]
    assert found["images"] == 2 and found["pixels"] == 2 * 64 * 64  # the tiny set's two validation images
    assert 0.5 < found["backends"]["torch-bf16"] <= 1.0
    assert info["data"] == str(tiny_data)  # where `fastseg export --int8` finds calibration images


def test_mask_agreement_counts_pixels_over_all_pairs():
    ref = [np.zeros((2, 3), np.uint8), np.ones((4, 4), np.uint8)]
    other = [np.zeros((2, 3), np.uint8), np.ones((4, 4), np.uint8)]
    other[1][0] = 2  # 4 of the 22 pixels differ
    assert mask_agreement(ref, other) == (18 / 22, 22)
    assert mask_agreement([], []) == (1.0, 0)
    with pytest.raises(ValueError):
        mask_agreement(ref, other[:1])  # a missing mask is an error, not a smaller sample


class Swapped:
    """A backend computing the reference's logits with classes 0 and 1 swapped."""

    name, key = "swapped", "swapped-key"

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        with torch.inference_mode():
            return self.net(x)[:, [1, 0, 2]]


def test_measure_agreement_compares_each_backend_with_the_fp32_masks():
    from fastseg.infer.predictor import Predictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1)).eval()
    pred = Predictor(net, ["a", "b", "c"], [0.5] * 3, [0.25] * 3, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)]
    ref = pred.predict(images)
    found = measure_agreement(pred, images, {"swapped": Swapped(net)}, bs=1)
    unchanged = sum(int((m == 2).sum()) for m in ref) / (40 * 50 + 32 * 32)  # only class 2 survives the swap
    assert 0 < unchanged < 1
    assert found == {"backends": {"swapped-key": unchanged}, "images": 2, "pixels": 40 * 50 + 32 * 32}
