"""The training loop: a run's session (data, model, plan, learner), the LR finder, and the one-cycle phases.

``prepare`` turns a config into a ``Session``: the data (``discover``), the model and its weights, the
``RunPlan`` (fastseg.train.plan) and a fastai ``Learner`` built from it. ``find_lr`` runs fastai's LR
finder on small crops; ``train`` runs the plan's phases with checkpoints after every epoch (resuming
where ``last.pth`` left off); ``best_scores`` loads the best epoch's weights back. Exporting, plots and
the report come after training, in ``fastseg.pipeline``.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastai.callback.schedule import ParamScheduler, combined_cos, minimum, slide, steep, valley
from fastai.learner import Learner
from fastai.torch_core import set_seed

from ..config import FitConfig, Notify, silent
from ..data.dataset import DataSpec, discover
from ..errors import TrainingError
from ..io import atomic_write_bytes
from ..model import WeightsInfo, build_model
from .callbacks import BestCheckpoint, LastCheckpoint, Patience, ResumedSchedule, RunCSVLogger, StopOnNaN
from .distributed import RankStats, ddp, is_main_process, run_on_main
from .learner import FastsegInfo, build_learner, seg_splitter
from .loaders import Getters, crop_loaders
from .plan import Machine, Phase, RunPlan, lr_find_size, plan_run
from .runs import RunState, resume_command

__all__ = ["LRFindResult", "Session", "Trained", "prepare", "plan_for", "find_lr", "run_lr_find", "train",
           "best_scores", "read_history", "FastsegInfo", "seg_splitter", "SUGGESTIONS"]

SUGGESTIONS = {"valley": valley, "slide": slide, "minimum": minimum, "steep": steep}


@dataclass
class LRFindResult:
    suggestions: dict[str, float]  # valley, slide, minimum, steep
    lrs: list[float]
    losses: list[float]

    @property
    def lr(self) -> float:
        """fastai's ``minimum`` suggestion (the LR of the loss minimum / 10): on short runs from random
        initialisation ``valley`` trained too timidly (docs/decisions.md, learning rate)."""
        return float(self.suggestions["minimum"])


@dataclass
class Session:
    """Everything one run trains with: config, data, plan, model and its weights, learner, run folder."""

    cfg: FitConfig
    spec: DataSpec
    plan: RunPlan
    winfo: WeightsInfo
    learn: Learner
    getters: Getters
    run: Path | None = None
    state: RunState | None = None  # the resumed run's last.pth
    seconds: dict = field(default_factory=dict)  # wall time by part of the run (what --time plans), in this process


@dataclass
class Trained:
    """What ``train`` leaves for the finish: the checkpoint callbacks and what each rank did."""

    last: LastCheckpoint
    best: BestCheckpoint
    patience: Patience | None
    ranks: RankStats | None = None
    trained_epochs: list[int] = field(default_factory=list)


def plan_for(cfg: FitConfig, spec: DataSpec, winfo: WeightsInfo, started: float | None = None) -> RunPlan:
    """The run's plan: rank 0 alone measures and decides under DDP, and every rank gets the same plan.
    ``started``: ``time.perf_counter()`` when the run began (``--time`` counts everything since)."""
    from .distributed import local_world_size, world_size

    sizes = world_size(), local_world_size()  # read here: inside run_on_main rank 0 sees itself alone
    started = time.perf_counter() if started is None else started
    return run_on_main(_plan_here, cfg, spec, winfo.loaded, sizes, started)


def _plan_here(cfg: FitConfig, spec: DataSpec, pretrained: bool, sizes: tuple[int, int], started: float) -> RunPlan:
    from ..device import StepProbe

    machine = dataclasses.replace(Machine.detect(cfg.device), world_size=sizes[0], local_processes=sizes[1])
    probe = StepProbe(lambda: build_model(cfg.encoder, spec.n_classes, "none", arch=cfg.arch,
                                          in_channels=spec.channels)[0], spec.n_classes, machine.device)
    return plan_run(cfg, spec, machine, pretrained, probe, clock=lambda: time.perf_counter() - started)


def prepare(cfg: FitConfig, notify: Notify = silent, plan: RunPlan | None = None, workdir: Path | None = None,
            started: float | None = None) -> Session:
    """Data, model, plan (``plan``: a resumed run's saved one) and learner; nothing is written yet.

    ``started``: ``time.perf_counter()`` when the run began, so ``--time`` counts what came before."""
    started = time.perf_counter() if started is None else started
    set_seed(cfg.seed, reproducible=True)
    spec = discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed, notify=notify, layout=cfg.layout,
                    colors=cfg.colors, void=cfg.void, ignore_index=cfg.ignore_index)
    model, winfo = build_model(cfg.encoder, spec.n_classes, cfg.weights, arch=cfg.arch, in_channels=spec.channels)
    if cfg.weights == "imagenet" and not winfo.loaded:
        notify(f"Warning: {winfo.source}")
    plan = plan or plan_for(cfg, spec, winfo, started)
    set_seed(cfg.seed, reproducible=True)  # the probes drew random numbers; training starts from the seed
    getters = Getters.for_spec(spec, plan.cache)
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="fastseg-"))
    learn = build_learner(cfg, spec, plan, model, winfo, getters, workdir)
    return Session(cfg=cfg, spec=spec, plan=plan, winfo=winfo, learn=learn, getters=getters)


def run_lr_find(learn: Learner, num_it: int) -> LRFindResult:
    """fastai's LR finder (weights restored afterwards), with all four suggestions."""
    res = learn.lr_find(start_lr=1e-6, end_lr=1.0, num_it=num_it, show_plot=False,
                        suggest_funcs=tuple(SUGGESTIONS.values()))
    rec = learn.recorder
    return LRFindResult(suggestions={k: float(v) for k, v in zip(SUGGESTIONS, res)},
                        lrs=[float(x) for x in rec.lrs], losses=[float(x) for x in rec.losses])


def _find_lr(session: Session) -> LRFindResult:
    cfg, learn = session.cfg, session.learn
    size = lr_find_size(session.cfg, session.plan.size)
    full = learn.dls
    learn.dls = crop_loaders(full, session.spec, session.plan, session.getters, size, keep_valid=False)
    try:
        return run_lr_find(learn, cfg.lr_find_iters)
    finally:
        learn.dls = full


def find_lr(session: Session) -> LRFindResult:
    """The LR finder on ``lr_find_size`` crops (cheap; the rate carries over to the training size); under
    DDP rank 0 runs it alone and every rank takes its result."""
    return run_on_main(_find_lr, session)


def one_cycle_scheds(learn: Learner, phase: Phase, lr: float, done: int) -> dict:
    """fit_one_cycle's LR and momentum schedules for ``phase`` at base ``lr``, continued after ``done`` epochs."""
    learn.opt.set_hyper("lr", phase.lr(lr))
    lr_max = np.array([h["lr"] for h in learn.opt.hypers])
    scheds = {"lr": combined_cos(phase.pct_start, lr_max / phase.div, lr_max, lr_max / 1e5),
              "mom": combined_cos(phase.pct_start, *learn.moms)}
    if done:
        scheds = {k: ResumedSchedule(f, done / phase.epochs) for k, f in scheds.items()}
    return scheds


def run_phases(learn: Learner, phases, lr: float, done: int, cbs: list, opt_state: dict | None,
               loaders: dict | None = None) -> None:
    """Train every phase from global epoch ``done``, restoring the optimiser from ``opt_state`` first.

    ``loaders``: training DataLoaders by crop side (None: the full size) that replace the learner's own in
    the phases of that size (progressive resizing, the device data path); the run's own DataLoaders are
    back in ``learn.dls`` when this returns."""
    full = learn.dls
    offset = 0
    try:
        for phase in phases:
            if done >= offset + phase.epochs:
                offset += phase.epochs
                continue
            skip = max(0, done - offset)
            learn.dls = (loaders or {}).get(phase.size, full)
            if learn.opt is None:
                learn.create_opt()
            learn.freeze() if phase.frozen else learn.unfreeze()  # also clears the optimiser state
            if opt_state is not None:
                learn.opt.load_state_dict(opt_state)
                opt_state = None
            for cb in cbs:
                cb.offset = offset + skip
            learn.fit(phase.epochs - skip, cbs=[ParamScheduler(one_cycle_scheds(learn, phase, lr, skip)), *cbs])
            if any(getattr(cb, "stopped", False) or getattr(cb, "where", None) or getattr(cb, "failed", None)
                   for cb in cbs):
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
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: (int(v) if k == "epoch" else v if k == "time" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def phase_loaders(session: Session) -> dict:
    """Training DataLoaders by crop side (None: the full size) where they are not the learner's own: the
    progressive part's, and both on the device data path. Validation stays the run's own loader."""
    plan, learn = session.plan, session.learn
    if plan.data_path != "fastai":
        return _device_loaders(session)
    if plan.progressive is None:
        return {}
    return {plan.progressive: crop_loaders(learn.dls, session.spec, plan, session.getters, plan.progressive,
                                           repeats=plan.crops_per_image)}


def _device_loaders(session: Session) -> dict:
    """The plan's training crops cut on the GPU from the decoded set (``fastseg.train.device_data``)."""
    from fastai.vision.core import imagenet_stats

    from .device_data import CropStore, device_dataloaders

    plan, spec, getters, seed = session.plan, session.spec, session.getters, session.cfg.seed
    store = CropStore.from_spec(spec, plan.device, plan.data_path, getters=(getters.x, getters.y),
                                stats=spec.stats or imagenet_stats)
    valid = session.learn.dls.valid
    loaders = {None: device_dataloaders(store, plan.size, plan.bs, plan.aug, seed=seed, valid=valid)}
    if plan.progressive is not None:  # windows of their own: another seed
        loaders[plan.progressive] = device_dataloaders(store, plan.progressive, plan.bs, plan.aug,
                                                       plan.crops_per_image, seed + plan.progressive, valid=valid)
    return loaders


def checkpoints(session: Session, fingerprint: dict) -> Trained:
    """The checkpoint and early-stopping callbacks, carrying on from the resumed state if any."""
    plan, state = session.plan, session.state
    base = state or RunState(epoch=0, total_epochs=plan.total_epochs, lr=plan.lr, lr_source=plan.why.get("lr", ""))
    base = dataclasses.replace(base, data=fingerprint, model=None, opt=None)
    best = BestCheckpoint(best=base.best, best_epoch=base.best_epoch)
    cfg = session.cfg
    patience = Patience(cfg.patience, best=base.best, wait=base.wait, stopped=base.stopped) if cfg.patience else None
    return Trained(last=LastCheckpoint(session.learn.path, base, best, patience), best=best, patience=patience)


def train(session: Session, trained: Trained, extra: list = (), notify: Notify = silent) -> RankStats | None:
    """Train what is left of the plan's phases; a NaN loss or a failed checkpoint write stops it with one
    line. ``extra``: more callbacks (trackers, per-epoch log lines)."""
    cfg, learn, run, state = session.cfg, session.learn, session.run, session.state
    nan = StopOnNaN()
    if state is not None and is_main_process():
        _trim_history(run / "history.csv", state.epoch)
    cbs = [nan, RunCSVLogger(), trained.best, trained.last, *([trained.patience] if trained.patience else []),
           *training_cbs(cfg), *extra]
    with ddp(learn, sync_bn=cfg.sync_bn, notify=notify) as sync:  # no-op in one process
        run_phases(learn, session.plan.phases, session.plan.lr, state.epoch if state else 0, cbs,
                   state.opt if state else None, phase_loaders(session))
    last = trained.last
    if last.failed is not None:
        epoch, err = last.failed
        kept = (f"the run can be resumed after epoch {last.saved}, its last good checkpoint: {resume_command(run)}"
                if last.saved else "no epoch was saved, so start the run again")
        raise TrainingError(f"{run}: cannot write the checkpoint of epoch {epoch} ({err.strerror or err}); {kept} "
                            "once there is room")
    if nan.where is not None:
        epoch, batch, value = nan.where
        kept = f"last good checkpoint {run / 'last.pth'} (epoch {epoch})" if (run / "last.pth").is_file() \
            else "no epoch had finished, so there is no checkpoint"
        raise TrainingError(f"{run}: training loss became {value} at epoch {epoch}, batch {batch}; stopped "
                            f"({kept}; lower --lr, try --grad-clip 1, or check the data)")
    return sync and sync.stats


def best_scores(session: Session, trained: Trained) -> tuple[int, dict, dict]:
    """(best epoch, its scores, the last epoch's scores), with the best epoch's weights loaded back."""
    from fastai.torch_core import get_model

    from ..device import plain_model
    from ..metrics import scores_from_confusion
    from .distributed import barrier
    from .runs import load_best

    barrier()  # DDP: only rank 0 writes best.pth, so every rank loads it once it is written
    loaded = load_best(session.run)
    if loaded is not None:
        plain_model(get_model(session.learn.model)).load_state_dict(loaded[1])
    cms = trained.last.cms
    best_epoch = trained.best.best_epoch if trained.best.best_epoch is not None else len(cms) - 1
    codes = session.spec.codes
    return best_epoch, scores_from_confusion(cms[best_epoch]).as_dict(codes), scores_from_confusion(cms[-1]).as_dict(codes)
