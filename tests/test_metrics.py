import numpy as np
import pytest
import torch

from fastseg.metrics import class_argmax, confusion_matrix, scores_from_confusion


def test_confusion_matrix_counts_and_ignores_void():
    truth = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # the two void pixels count nowhere


def test_scores_from_one_matrix_not_batch_averages():
    cm = np.array([[8, 2], [1, 1]])
    s = scores_from_confusion(cm)
    assert s.iou.tolist() == pytest.approx([8 / 11, 1 / 4])
    assert s.dice.tolist() == pytest.approx([16 / 19, 2 / 5])
    assert s.miou == pytest.approx((8 / 11 + 1 / 4) / 2)
    assert s.pixel_accuracy == pytest.approx(9 / 12)
    # summing two halves' matrices gives the same scores as the whole, unlike averaging per-batch scores
    a, b = np.array([[8, 0], [0, 0]]), np.array([[0, 2], [1, 1]])
    assert scores_from_confusion(a + b).miou == pytest.approx(s.miou)
    assert (scores_from_confusion(a).miou + scores_from_confusion(b).miou) / 2 != pytest.approx(s.miou)


def test_class_absent_everywhere_is_none_not_zero():
    s = scores_from_confusion(np.array([[5, 0, 0], [0, 3, 0], [0, 0, 0]]))
    d = s.as_dict(["a", "b", "c"])
    assert d["per_class"]["c"] == {"iou": None, "dice": None, "support": 0}
    assert d["miou"] == pytest.approx(1.0)


@pytest.mark.parametrize("classes", [1, 2, 5, 21])
def test_class_argmax_matches_torch_argmax_including_ties(classes):
    g = torch.Generator().manual_seed(classes)
    scores = torch.randint(0, 3, (2, classes, 7, 9), generator=g).float()  # few values: many ties
    assert torch.equal(class_argmax(scores), scores.argmax(dim=1))
    noisy = torch.randn(2, classes, 7, 9, generator=g)
    assert torch.equal(class_argmax(noisy, torch.uint8), noisy.argmax(dim=1).to(torch.uint8))
