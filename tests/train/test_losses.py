import pytest
import torch

from fastseg.config import FitConfig
from fastseg.errors import ConfigError
from fastseg.train.losses import LOSSES, make_loss


@pytest.mark.parametrize("name", LOSSES)
def test_loss_ignores_void_pixels(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :2] = 255  # void rows
    loss = make_loss(name, 3)
    a = loss(logits, target)
    changed = logits.detach().clone()
    changed[:, :, :2] = 100.0 * torch.randn(2, 3, 2, 8)  # whatever the model says on void pixels
    assert torch.isfinite(a) and a > 0
    assert loss(changed, target).item() == pytest.approx(a.item(), rel=1e-5)
    a.backward()
    assert logits.grad[:, :, :2].abs().max() == 0


def test_class_weights_change_ce_and_must_match_classes():
    logits, target = torch.randn(1, 2, 4, 4), torch.randint(0, 2, (1, 4, 4))
    assert make_loss("ce", 2, [1, 10])(logits, target) != make_loss("ce", 2)(logits, target)
    with pytest.raises(ConfigError, match="class_weights has 3 values but the data has 2 classes"):
        make_loss("ce", 2, [1, 2, 3])


def test_config_validates_loss_and_weights():
    with pytest.raises(ConfigError, match="unknown loss `bce`; valid losses: ce, dice, ce\\+dice, focal"):
        FitConfig(loss="bce")
    assert FitConfig(class_weights="1, 2.5").class_weights == (1.0, 2.5)
    with pytest.raises(ConfigError, match="class_weights must be positive numbers"):
        FitConfig(class_weights=[1, 0])


def test_loss_decodes_for_learn_predict():
    loss = make_loss("ce+dice", 3)
    x = torch.randn(1, 3, 4, 4)
    assert torch.equal(loss.decodes(x), x.argmax(1))
    assert torch.allclose(loss.activation(x).sum(1), torch.ones(1, 4, 4))


def test_class_weights_with_focal_loss_are_refused_not_ignored():
    from fastseg.config import FitConfig

    with pytest.raises(ConfigError, match="class_weights apply to the ce, dice and ce\\+dice losses; focal takes none"):
        FitConfig(loss="focal", class_weights="1,5")
    assert FitConfig(loss="ce", class_weights="1,5").class_weights == (1.0, 5.0)
