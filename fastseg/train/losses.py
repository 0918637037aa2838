"""Segmentation losses by name: ce, dice, ce+dice, focal (SMP's where they fit), void pixels ignored.

``make_loss(name, n_classes, class_weights)`` returns a ``SegLoss``: an ``nn.Module`` fastai can use
as ``loss_func`` (it has ``activation`` and ``decodes`` for ``learn.predict``) and can pickle into
the exported learner (top-level, plain attributes).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LOSS_CHOICES as LOSSES
from ..constants import IGNORE_INDEX
from ..errors import ConfigError
from ..metrics import class_argmax

__all__ = ["LOSSES", "SegLoss", "make_loss"]


def _plain(t: torch.Tensor) -> torch.Tensor:
    """Drop fastai's tensor subclasses (TensorMask, TensorImage) so SMP's losses see plain tensors."""
    return t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t


class SegLoss(nn.Module):
    """A weighted sum of per-pixel losses over N x C x H x W logits and N x H x W class indices."""

    def __init__(self, name: str, n_classes: int, class_weights: Sequence[float] | None = None):
        super().__init__()
        if name not in LOSSES:
            raise ConfigError(f"unknown loss `{name}`; valid losses: {', '.join(LOSSES)}")
        if class_weights is not None and len(class_weights) != n_classes:
            raise ConfigError(f"class_weights has {len(class_weights)} values but the data has {n_classes} classes "
                              "(give one weight per class, in codes.txt order)")
        from segmentation_models_pytorch.losses import DiceLoss, FocalLoss

        self.name, self.n_classes = name, n_classes
        w = None if class_weights is None else [float(x) for x in class_weights]
        self.register_buffer("weight", None if w is None else torch.tensor(w, dtype=torch.float32))
        self.dice = DiceLoss("multiclass", ignore_index=IGNORE_INDEX, class_weights=w) if "dice" in name else None
        self.focal = FocalLoss("multiclass", ignore_index=IGNORE_INDEX) if name == "focal" else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits, target = _plain(logits).float(), _plain(target).long()
        loss = logits.new_zeros(())
        if self.name in ("ce", "ce+dice"):
            loss = loss + F.cross_entropy(logits, target, weight=self.weight, ignore_index=IGNORE_INDEX)
        if self.dice is not None:
            loss = loss + self.dice(logits, target)
        if self.focal is not None:
            loss = loss + self.focal(logits, target)
        return loss

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(x, dim=1)

    def decodes(self, x: torch.Tensor) -> torch.Tensor:
        return class_argmax(x)


def make_loss(name: str, n_classes: int, class_weights: Sequence[float] | None = None) -> SegLoss:
    return SegLoss(name, n_classes, class_weights)
