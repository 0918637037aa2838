"""The fastai ``Learner`` of a run: the plan's DataLoaders, the SMP model, loss, metrics, precision.

Everything fastai pickles into the exported learner from here (``FastsegInfo``, ``seg_splitter``) is
top-level; ``fastseg.train.FastsegInfo`` stays importable under that name for older exports.
"""

from __future__ import annotations

from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.learner import Learner
from fastai.torch_core import params

from ..config import FitConfig
from ..constants import IGNORE_INDEX
from ..data.dataset import DataSpec
from ..device import apply_precision, tune_learner
from ..metrics import MeanDice, MeanIoU
from ..model import WeightsInfo
from .loaders import Getters, plan_loaders
from .losses import make_loss

__all__ = ["FastsegInfo", "seg_splitter", "model_meta", "build_learner"]


class FastsegInfo(Callback):
    """Inert callback that carries fastseg's facts about the model (codes, encoder, weights...)
    into the exported learner: ``load_learner(...).fastseg_info.meta``."""

    order = 0

    def __init__(self, meta: dict):
        self.meta = meta


def seg_splitter(model: torch.nn.Module) -> list:
    """Two parameter groups, encoder then decoder + head, for freezing and discriminative LRs."""
    return [params(model.encoder), params(model.decoder) + params(model.segmentation_head)]


def model_meta(cfg: FitConfig, spec: DataSpec, plan, winfo: WeightsInfo) -> dict:
    """What the exported model says about itself (codes, input, how training read the data)."""
    return {
        "arch": cfg.arch, "encoder": cfg.encoder, "codes": list(spec.codes), "void_code": spec.void_code,
        "ignore_index": IGNORE_INDEX, "size": plan.size, "input": plan.input_mode,
        "weights": {"requested": winfo.requested, "loaded": winfo.loaded, "source": winfo.source},
        "split": {"valid_pct": cfg.valid_pct, "seed": cfg.seed},  # lets `fastseg evaluate` rebuild the same split
        # ... and read masks as training did (the colour table itself: its file may be gone by then)
        "data_options": {"layout": cfg.layout, "void": cfg.void, "ignore_index": cfg.ignore_index,
                         "colors": [[c, *rgb] for c, rgb in zip(spec.codes, spec.colors)] if spec.colors else None},
        "scaling": spec.scaling.as_dict(),  # prediction scales 16-bit/float images as training did
        "in_channels": spec.channels,  # 3: RGB; its mean/std have one value per channel
        "data": str(Path(cfg.data).absolute()),  # where `fastseg export --int8` finds calibration images
        "precision": {"train": plan.precision, "reason": plan.why.get("precision", "")},
        "images": {"train": len(spec.train), "valid": len(spec.valid)}, "config": cfg.to_dict(),  # for the README
    }


def build_learner(cfg: FitConfig, spec: DataSpec, plan, model: torch.nn.Module, winfo: WeightsInfo,
                  getters: Getters, workdir: Path) -> Learner:
    """DataLoaders + model + loss + mIoU/Dice metrics in a fastai ``Learner``, trained as ``plan`` says."""
    learn = Learner(plan_loaders(spec, plan, getters), model, loss_func=make_loss(cfg.loss, spec.n_classes,
                                                                                   cfg.class_weights),
                    metrics=[MeanIoU(spec.n_classes), MeanDice(spec.n_classes)], splitter=seg_splitter,
                    path=workdir, model_dir=".", cbs=[FastsegInfo(model_meta(cfg, spec, plan, winfo))])
    tune_learner(learn, compile=cfg.compile)  # fast optimiser; cudnn autotune and channels_last
    apply_precision(learn, plan.precision)
    return learn
