"""Learner assembly, the LR finder, and training with fit_one_cycle.

``fit(cfg)`` is the whole job behind ``fastseg fit``: discover the data, build DataLoaders and the
SMP Unet, pick a learning rate (LR finder or given), train with the one-cycle policy, export.
Progress is shown by fastai's own callbacks; notices go through the ``notify`` callable.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback
from fastai.callback.schedule import ParamScheduler, combined_cos, minimum, slide, steep, valley
from fastai.learner import Learner
from fastai.torch_core import params, set_seed

from .callbacks import BestCheckpoint, LastCheckpoint, Patience, ResumedSchedule, RunCSVLogger, StopOnNaN
from .config import FitConfig, Notify, silent
from .data import IGNORE_INDEX, DataSpec, discover
from .distributed import RankStats, barrier, broadcast_value, ddp, is_main_process, run_on_main
from .distributed import setup as distributed_setup
from .errors import TrainingError
from .io import atomic_write_bytes
from .device import apply_precision, resolve_precision, training_device, tune_learner
from .loaders import auto_size, dataloaders_for, train_crops_like
from .losses import make_loss
from .metrics import MeanDice, MeanIoU
from .model import WeightsInfo, build_model
from .progressive import PROGRESSIVE_LR_DIV, crops_per_image, progressive_size, small_epochs

__all__ = ["FastsegInfo", "LRFindResult", "FitResult", "seg_splitter", "build_learner", "run_lr_find", "find_lr",
           "lr_find", "fit", "resume"]

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
        """fastai's ``minimum`` suggestion (the LR of the loss minimum / 10). Measured on short runs from
        random init: valley (and the geometric mean of valley and minimum) trained too timidly (ISBI,
        4-minute budget: mIoU 0.678 at the geometric mean vs 0.712 at 5e-3; demo set: 0.965 at 2.5e-3,
        0.961 at 1e-2), while minimum landed at 4e-3 and 6.3e-3 there."""
        return float(self.suggestions["minimum"])


@dataclass
class FitResult:
    export: Path
    lr: float
    lr_source: str  # "lr finder: minimum / 10" or "given"
    weights: WeightsInfo
    metrics: dict  # final validation metrics, as from fastseg.metrics.Scores.as_dict
    history: list[dict] = field(default_factory=list)  # one row per epoch
    lr_find: LRFindResult | None = None
    ranks: RankStats | None = None  # samples per rank under torchrun/accelerate; None in one process
    run: Path | None = None  # the run folder (config.json, history.csv, plots, checkpoints)
    best_epoch: int | None = None  # the epoch whose weights were exported
    stopped_early: bool = False  # --patience ended the run before its last epoch
    bs: int | None = None  # the batch size trained with (after --bs auto), per process
    aug: str | None = None  # the augmentation level trained with (after --aug auto)
    progressive: dict | None = None  # {"size": crop side, "epochs": n} of the half-size part; None: one size


def build_learner(cfg: FitConfig, notify: Notify = silent, spec: DataSpec | None = None,
                  workdir: Path | None = None) -> tuple[Learner, DataSpec, WeightsInfo]:
    """DataLoaders + SMP Unet + loss + mIoU/Dice metrics in a fastai ``Learner``."""
    set_seed(cfg.seed, reproducible=True)
    spec = spec or discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed, notify=notify, layout=cfg.layout,
                            colors=cfg.colors, void=cfg.void, ignore_index=cfg.ignore_index)
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
        "split": {"valid_pct": cfg.valid_pct, "seed": cfg.seed},  # lets `fastseg evaluate` rebuild the same split
        "data": str(Path(cfg.data).absolute()),  # where `fastseg export --int8` finds calibration images
    }
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fastseg-"))
    learn = Learner(dls, model, loss_func=make_loss(cfg.loss, spec.n_classes, cfg.class_weights),
                    metrics=[MeanIoU(spec.n_classes), MeanDice(spec.n_classes)], splitter=seg_splitter,
                    path=workdir, model_dir=".", cbs=[FastsegInfo(meta)])
    tune_learner(learn, compile=cfg.compile)  # fast optimiser; cudnn autotune, channels_last on CUDA
    set_precision(learn, cfg, size, spec.n_classes, notify)
    return learn, spec, winfo


def set_precision(learn: Learner, cfg: FitConfig, size: int, n_classes: int, notify: Notify = silent) -> str:
    """Decide the training precision (``--precision``; auto times a CPU step, on rank 0 alone under DDP),
    add its callback, record it in the model's meta and say what ``auto`` chose."""
    device = learn.dls.device or training_device()
    precision, why, _ = run_on_main(resolve_precision, cfg.precision, learn.model, learn.dls.train.bs, size,
                                    n_classes, torch.device(device))
    apply_precision(learn, precision)
    learn.fastseg_info.meta["precision"] = {"train": precision, "reason": why}
    if cfg.precision == "auto":
        notify(f"precision {precision} ({why}; --precision fp32|bf16|fp16 to choose)")
    return precision


def run_lr_find(learn: Learner, num_it: int) -> LRFindResult:
    """fastai's LR finder (weights restored afterwards), with all four suggestions."""
    res = learn.lr_find(start_lr=1e-6, end_lr=1.0, num_it=num_it, show_plot=False,
                        suggest_funcs=tuple(SUGGESTIONS.values()))
    rec = learn.recorder
    return LRFindResult(suggestions={k: float(v) for k, v in zip(SUGGESTIONS, res)},
                        lrs=[float(x) for x in rec.lrs], losses=[float(x) for x in rec.losses])


def find_lr(learn: Learner, spec: DataSpec, cfg: FitConfig) -> LRFindResult:
    """The LR finder on ``cfg.lr_find_size`` crops (cheap; the rate carries over to the training size)."""
    size = min(cfg.lr_find_size, auto_size(spec, cfg.size))
    full = learn.dls
    learn.dls = train_crops_like(full, spec, size, keep_valid=False)
    try:
        return run_lr_find(learn, cfg.lr_find_iters)
    finally:
        learn.dls = full


def lr_find(cfg: FitConfig, notify: Notify = silent, plot: str | Path | None = None) -> LRFindResult:
    """Run only the LR finder on ``cfg``'s data and model; optionally save the loss-vs-LR plot."""
    learn, spec, _ = build_learner(cfg, notify)
    try:
        result = find_lr(learn, spec, cfg)
    finally:
        shutil.rmtree(learn.path, ignore_errors=True)
    if plot is not None:
        from .plots import plot_lr_find

        plot_lr_find(result, plot)
    return result


@dataclass(frozen=True)
class Phase:
    """One fit_one_cycle call of a run: its length, peak LR(s), schedule shape, frozen encoder or not,
    and its training crop side (``None``: the run's size)."""

    epochs: int
    lr: float | slice
    pct_start: float
    div: float
    frozen: bool
    size: int | None = None


def plan_phases(cfg: FitConfig, pretrained: bool, lr: float, small: int | None = None) -> list[Phase]:
    """fine_tune's recipe for a pretrained encoder (frozen warm-up, then discriminative LRs); one cycle otherwise.

    ``small``: progressive resizing, as in fastai's lessons: the first ``PROGRESSIVE_SHARE`` of the trained
    epochs (and a frozen warm-up) on crops of ``small``, then the rest at full size with the peak LR(s)
    divided by ``PROGRESSIVE_LR_DIV``, each part a one-cycle of its own. ISBI, 4 minutes, 14 epochs half
    at each size, seeds 42 / 1: 0.755 / 0.739 with the divided LR, 0.760 / 0.710 at the same LR (its
    full-size part first fell from 0.756 to 0.664); one cycle continued across the switch: 0.719 (seed 42)."""
    if pretrained and cfg.freeze_epochs > 0:
        phases = [Phase(cfg.freeze_epochs, lr, pct_start=0.99, div=25.0, frozen=True),
                  Phase(cfg.epochs, slice(lr / 200, lr / 2), pct_start=0.3, div=5.0, frozen=False)]
    else:
        phases = [Phase(cfg.epochs, lr, pct_start=0.25, div=25.0, frozen=False)]
    if small is None:
        return phases
    *first, last = phases
    n_small = small_epochs(last.epochs)
    if not n_small:
        return phases
    lr_full = slice(last.lr.start / PROGRESSIVE_LR_DIV, last.lr.stop / PROGRESSIVE_LR_DIV) \
        if isinstance(last.lr, slice) else last.lr / PROGRESSIVE_LR_DIV
    return [dataclasses.replace(p, size=small) for p in first] + [
        dataclasses.replace(last, epochs=n_small, size=small),
        dataclasses.replace(last, epochs=last.epochs - n_small, lr=lr_full)]


def one_cycle_scheds(learn: Learner, phase: Phase, done: int) -> dict:
    """fit_one_cycle's LR and momentum schedules, continued after ``done`` of ``phase.epochs`` epochs."""
    learn.opt.set_hyper("lr", phase.lr)
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    scheds = {"lr": combined_cos(phase.pct_start, lr_max / phase.div, lr_max, lr_max / 1e5),
              "mom": combined_cos(phase.pct_start, *learn.moms)}
    if done:
        scheds = {k: ResumedSchedule(f, done / phase.epochs) for k, f in scheds.items()}
    return scheds


def _run_phases(learn: Learner, phases: list[Phase], done: int, cbs: list, state: dict | None,
                loaders: dict | None = None) -> None:
    """Train every phase from global epoch ``done``; restore the optimiser from ``state`` first.

    ``loaders``: DataLoaders by training crop side, for phases with a ``size`` of their own; the run's
    own DataLoaders are back in ``learn.dls`` when this returns."""
    full = learn.dls
    offset = 0
    try:
        for phase in phases:
            if done >= offset + phase.epochs:
                offset += phase.epochs
                continue
            skip = max(0, done - offset)
            learn.dls = full if phase.size is None else loaders[phase.size]
            if learn.opt is None:
                learn.create_opt()
            learn.freeze() if phase.frozen else learn.unfreeze()  # also clears the optimiser state
            if state is not None and state.get("opt") is not None:
                learn.opt.load_state_dict(state["opt"])
                state = None
            for cb in cbs:
                cb.offset = offset + skip
            learn.fit(phase.epochs - skip, cbs=[ParamScheduler(one_cycle_scheds(learn, phase, skip)), *cbs])
            if any(getattr(cb, "stopped", False) or getattr(cb, "where", None) for cb in cbs):
                return
            offset += phase.epochs
    finally:
        learn.dls = full


def training_cbs(cfg: FitConfig) -> list:
    """The recipe's per-step callbacks: gradient-norm clipping (fastai's ``GradientClip``, which runs
    after mixed precision has unscaled the gradients) unless ``cfg.grad_clip`` is 0."""
    from fastai.callback.training import GradientClip

    return [GradientClip(cfg.grad_clip)] if cfg.grad_clip > 0 else []


def _trim_history(path: Path, done: int) -> None:
    """Drop history rows of epochs not in the checkpoint (killed after logging, before saving)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    keep = lines[:1] + [ln for ln in lines[1:] if ln.split(",")[0].isdigit() and int(ln.split(",")[0]) < done]
    atomic_write_bytes(path, ("\n".join(keep) + "\n").encode())


def read_history(path: Path) -> list[dict]:
    """history.csv rows as dicts (epoch as int, numbers as floats)."""
    import csv

    if not path.is_file():
        return []
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k == "epoch" else v if k == "time" else float(v)) for k, v in row.items()})
    return rows


def run_training(cfg: FitConfig, notify: Notify = silent, resume_dir: Path | None = None) -> FitResult:
    """The whole job behind ``fastseg fit`` (and ``--resume``): run folder, LR, phases, export, report."""
    from .runs import load_checkpoint, new_run_dir, write_json

    notify = distributed_setup(notify)  # DDP launcher: join the group, pin the GPU; notices from rank 0 only
    main = is_main_process()
    state = None
    if resume_dir is not None:
        run = resume_dir
        state = load_checkpoint(run / "last.pth")
        if state["epoch"] >= state["total_epochs"] or (run / "metrics.json").is_file():
            raise TrainingError(f"{run}: this run already finished (start a new one, or evaluate {cfg.export})")
    # Data and model errors (bad encoder, unreadable weights) come before the run folder is made.
    learn, spec, winfo = build_learner(cfg, notify, workdir=resume_dir or Path(cfg.runs_dir))
    if resume_dir is None:  # DDP: rank 0 makes the folder, every rank uses it
        run = Path(broadcast_value(str(new_run_dir(cfg.runs_dir, cfg.name)) if main else None))
        cfg = cfg.replace(size=auto_size(spec, cfg.size))
        if main:
            write_json(run / "config.json", {**cfg.to_dict(), "name": None})  # name None: feeding it back makes a new run
    # Only rank 0 writes into the run folder; other ranks keep their (identical) checkpoints in a scratch folder.
    learn.path = run if main else Path(tempfile.mkdtemp(prefix="fastseg-rank-"))
    notify(f"run folder {run}")
    found = None
    if state is not None:
        lr, how = state["lr"], state["lr_source"]
        learn.model.load_state_dict(state["model"])
        set_seed(cfg.seed + state["epoch"], reproducible=True)
        notify(f"resuming {run} after epoch {state['epoch']} of {state['total_epochs']}")
    elif cfg.lr == "auto":
        t0 = time.perf_counter()
        found = run_on_main(find_lr, learn, spec, cfg)  # DDP: rank 0 alone, the others take its result
        lr, how = found.lr, "lr finder: minimum / 10"
        from .plots import plot_lr_find

        if main:
            plot_lr_find(found, run / "lr_find.png")
        notify(f"LR finder: {time.perf_counter() - t0:.0f} s")
    else:
        lr, how = float(cfg.lr), "given"
    notify(f"learning rate {lr:.2e} ({how})")
    full = auto_size(spec, cfg.size)
    small, why = progressive_size(cfg, spec, full)
    phases = plan_phases(cfg, winfo.loaded, lr, small)
    loaders, progressive = {}, None
    if any(p.size for p in phases):
        repeats = crops_per_image(full, small)
        loaders[small] = train_crops_like(learn.dls, spec, small, repeats=repeats)
        progressive = {"size": small, "epochs": sum(p.epochs for p in phases if p.size)}
        n_small, n_all = progressive["epochs"], sum(p.epochs for p in phases)
        notify(f"progressive resizing: epochs 1-{n_small} on {small} px crops ({repeats} per image), "
               f"{n_small + 1}-{n_all} on {full} px at LR/{PROGRESSIVE_LR_DIV}; validation at {full} "
               f"({why}; --progressive off to train at one size)")
    elif cfg.progressive == "on":
        notify(f"progressive resizing off: {why}")
    total = sum(p.epochs for p in phases)
    done = state["epoch"] if state else 0
    best = BestCheckpoint(best=state and state["best"], best_epoch=state and state["best_epoch"])
    patience = Patience(cfg.patience, best=state and state["best"], wait=state["wait"] if state else 0) \
        if cfg.patience else None
    nan = StopOnNaN()
    last = LastCheckpoint(learn.path / "last.pth", {"lr": lr, "lr_source": how, "total_epochs": total}, best, patience,
                          cms=state["cms"] if state else None)
    if state is not None and main:
        _trim_history(run / "history.csv", done)
    cbs = [nan, RunCSVLogger(), best, last, *([patience] if patience else []), *training_cbs(cfg)]
    with ddp(learn, sync_bn=cfg.sync_bn, notify=notify) as sync:  # no-op in one process
        _run_phases(learn, phases, done, cbs, state, loaders)
    if nan.where is not None:
        epoch, batch, value = nan.where
        kept = f"last good checkpoint {run / 'last.pth'} (epoch {epoch})" if (run / "last.pth").is_file() \
            else "no epoch had finished, so there is no checkpoint"
        raise TrainingError(f"{run}: training loss became {value} at epoch {epoch}, batch {batch}; stopped "
                            f"({kept}; lower --lr, try --grad-clip 1, or check the data)")
    result = _finish(learn, spec, cfg, run, lr, how, winfo, found, last, best, patience, main, progressive)
    result.ranks = sync and sync.stats
    if not main:
        shutil.rmtree(learn.path, ignore_errors=True)
    return result


def _finish(learn, spec, cfg, run, lr, how, winfo, found, last, best, patience, main, progressive=None) -> FitResult:
    """Load the best epoch's weights, export them (+ safe bundle), write metrics.json and the plots (rank 0)."""
    from fastai.learner import load_model

    from .agreement import record_agreement
    from .export import export_bundle_beside, export_learner

    from .metrics import scores_from_confusion
    from .plots import write_run_plots
    from .runs import write_json

    barrier()  # DDP: fastai saves only on rank 0, so every rank loads rank 0's best.pth once it is written
    if (run / "best.pth").is_file():
        load_model(run / "best.pth", learn.model, None, with_opt=False, device=learn.dls.device)
    cms = last.cms
    best_epoch = best.best_epoch if best.best_epoch is not None else len(cms) - 1
    final = scores_from_confusion(cms[-1]).as_dict(spec.codes)
    best_scores = scores_from_confusion(cms[best_epoch]).as_dict(spec.codes)
    learn.fastseg_info.meta.update(lr=lr, epochs=cfg.epochs, final=best_scores, best_epoch=best_epoch, run=str(run))
    history = read_history(learn.path / "history.csv")
    stopped = bool(patience and patience.stopped)
    if not main:
        barrier()  # DDP: wait for rank 0's export, so no rank returns before the files are complete
        return FitResult(export=Path(cfg.export).absolute(), lr=lr, lr_source=how, weights=winfo, metrics=best_scores,
                         history=history, lr_find=found, run=run, best_epoch=best_epoch, stopped_early=stopped,
                         bs=learn.dls.train.bs, aug=getattr(learn.dls, "fastseg_aug", None), progressive=progressive)
    record_agreement(learn, [s.image for s in spec.valid])  # for predict's auto backend (fastseg.agreement)
    path = export_learner(learn, cfg.export)
    export_bundle_beside(learn, path)  # the safe, pickle-free twin: exports/model.pkl -> exports/model/
    write_json(run / "metrics.json", {
        "final": {"epoch": len(cms) - 1, **final}, "best": {"epoch": best_epoch, **best_scores},
        "lr": lr, "lr_source": how, "epochs_run": len(cms), "stopped_early": stopped, "export": str(path),
        "bs": learn.dls.train.bs, "aug": getattr(learn.dls, "fastseg_aug", None), "progressive": progressive,
        "weights": {"requested": winfo.requested, "loaded": winfo.loaded, "source": winfo.source},
        "lr_find": None if found is None else found.suggestions,
    })
    write_run_plots(run, learn, spec, history, cms[best_epoch])
    barrier()
    return FitResult(export=path, lr=lr, lr_source=how, weights=winfo, metrics=best_scores, history=history,
                     lr_find=found, run=run, best_epoch=best_epoch, stopped_early=stopped,
                     bs=learn.dls.train.bs, aug=getattr(learn.dls, "fastseg_aug", None), progressive=progressive)


def fit(cfg: FitConfig, notify: Notify = silent) -> FitResult:
    """Train a Unet on ``cfg.data`` in a new run folder, export the best model to ``cfg.export``."""
    return run_training(cfg, notify=notify)


def resume(run: str | Path, notify: Notify = silent) -> FitResult:
    """Continue the run in folder ``run`` from its last completed epoch (model, optimiser, schedule)."""
    from .runs import read_run_config

    return run_training(read_run_config(run), notify=notify, resume_dir=Path(run))
