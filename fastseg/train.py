"""Learner assembly, the LR finder, and training with fit_one_cycle.

``fit(cfg)`` is the whole job behind ``fastseg fit``: discover the data, build DataLoaders and the
SMP Unet, pick a learning rate (LR finder or given), train with the one-cycle policy, export.
Progress is shown by fastai's own callbacks; notices go through the ``notify`` callable.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import minimum, slide, steep, valley
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import params, set_seed

from .config import FitConfig, Notify, silent
from .data import IGNORE_INDEX, DataSpec, discover
from .device import tune_learner
from .loaders import auto_size, dataloaders_for
from .metrics import MeanDice, MeanIoU
from .model import WeightsInfo, build_model

__all__ = ["FastsegInfo", "LRFindResult", "FitResult", "seg_splitter", "build_learner", "run_lr_find", "lr_find", "fit"]

SUGGESTIONS = {"valley": valley, "slide": slide, "minimum": minimum, "steep": steep}


class FastsegInfo(Callback):
    """Inert callback that carries fastseg's facts about the model (codes, encoder, weights...)
    into the exported learner: ``load_learner(...).fastseg_info.meta``."""

    order = 0

    def __init__(self, meta: dict):
        self.meta = meta


def seg_splitter(model: torch.nn.Module) -> list:
    """Two parameter groups, encoder then decoder + head, for freezing and discriminative LRs."""
    return [params(model.encoder), params(model.decoder) + params(model.segmentation_head)]


@dataclass
class LRFindResult:
    suggestions: dict[str, float]  # valley, slide, minimum, steep
    lrs: list[float]
    losses: list[float]

    @property
    def lr(self) -> float:
        return self.suggestions["valley"]


@dataclass
class FitResult:
    export: Path
    lr: float
    lr_source: str  # "lr finder (valley)" or "given"
    weights: WeightsInfo
    metrics: dict  # final validation metrics, as from fastseg.metrics.Scores.as_dict
    history: list[dict] = field(default_factory=list)  # one row per epoch
    lr_find: LRFindResult | None = None


def build_learner(cfg: FitConfig, notify: Notify = silent, spec: DataSpec | None = None,
                  workdir: Path | None = None) -> tuple[Learner, DataSpec, WeightsInfo]:
    """DataLoaders + SMP Unet + loss + mIoU/Dice metrics in a fastai ``Learner``."""
    set_seed(cfg.seed, reproducible=True)
    spec = spec or discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed, notify=notify)
    size = auto_size(spec, cfg.size)
    dls = dataloaders_for(cfg, spec, size, notify)
    model, winfo = build_model(cfg.encoder, spec.n_classes, cfg.weights)
    if cfg.weights == "imagenet" and not winfo.loaded:
        notify(f"Warning: {winfo.source}")
    meta = {
        "arch": "Unet", "encoder": cfg.encoder, "codes": list(spec.codes), "void_code": spec.void_code,
        "ignore_index": IGNORE_INDEX, "size": size, "weights": {"requested": winfo.requested, "loaded": winfo.loaded,
                                                                "source": winfo.source},
        "input": "crop" if spec.min_side >= size else "resize",
    }
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fastseg-"))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(axis=1, ignore_index=IGNORE_INDEX),
                    metrics=[MeanIoU(spec.n_classes), MeanDice(spec.n_classes)], splitter=seg_splitter,
                    path=workdir, model_dir=".", cbs=[FastsegInfo(meta)])
    tune_learner(learn, compile=cfg.compile)  # fast optimiser; cudnn autotune, channels_last on CUDA
    if torch.cuda.is_available():
        learn.to_fp16()  # mixed precision: ~2x throughput on tensor cores, same accuracy
    return learn, spec, winfo


def run_lr_find(learn: Learner, num_it: int) -> LRFindResult:
    """fastai's LR finder (weights restored afterwards), with all four suggestions."""
    res = learn.lr_find(start_lr=1e-6, end_lr=1.0, num_it=num_it, show_plot=False,
                        suggest_funcs=tuple(SUGGESTIONS.values()))
    rec = learn.recorder
    return LRFindResult(suggestions={k: float(v) for k, v in zip(SUGGESTIONS, res)},
                        lrs=[float(x) for x in rec.lrs], losses=[float(x) for x in rec.losses])


def lr_find(cfg: FitConfig, notify: Notify = silent, plot: str | Path | None = None) -> LRFindResult:
    """Run only the LR finder on ``cfg``'s data and model; optionally save the loss-vs-LR plot."""
    learn, _, _ = build_learner(cfg, notify)
    try:
        result = run_lr_find(learn, cfg.lr_find_iters)
    finally:
        shutil.rmtree(learn.path, ignore_errors=True)
    if plot is not None:
        from .plots import plot_lr_find

        plot_lr_find(result, plot)
    return result


def _history(learn: Learner) -> list[dict]:
    names = [n for n in learn.recorder.metric_names[1:-1]]  # drop "epoch" and "time"
    return [dict(zip(["epoch", *names], [i, *map(float, vals)])) for i, vals in enumerate(learn.recorder.values)]


def fit(cfg: FitConfig, notify: Notify = silent) -> FitResult:
    """Train a Unet on ``cfg.data`` with fit_one_cycle and export the learner to ``cfg.export``."""
    from .export import export_learner

    learn, spec, winfo = build_learner(cfg, notify)
    try:
        found = None
        if cfg.lr == "auto":
            found = run_lr_find(learn, cfg.lr_find_iters)
            lr, how = found.lr, "lr finder (valley)"
        else:
            lr, how = float(cfg.lr), "given"
        notify(f"learning rate {lr:.2e} ({how})")
        learn.fit_one_cycle(cfg.epochs, lr_max=lr)
        metrics_cb = learn.metrics[0]
        final = metrics_cb.scores.as_dict(spec.codes)
        learn.fastseg_info.meta.update(lr=lr, epochs=cfg.epochs, final=final)
        path = export_learner(learn, cfg.export)
        return FitResult(export=path, lr=lr, lr_source=how, weights=winfo, metrics=final,
                         history=_history(learn), lr_find=found)
    finally:
        shutil.rmtree(learn.path, ignore_errors=True)
