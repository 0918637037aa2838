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
from ..config import FitConfig, Notify, silent
from ..data.dataset import IGNORE_INDEX, DataSpec, discover
from .distributed import RankStats, barrier, broadcast_value, ddp, is_main_process, run_on_main
from .distributed import setup as distributed_setup
from ..errors import Interrupted, TrainingError
from ..io import atomic_write_bytes
from ..device import apply_precision, resolve_precision, training_device, tune_learner
from .loaders import auto_size, dataloaders_for, train_crops_like
from .losses import make_loss
from ..metrics import MeanDice, MeanIoU
from ..model import WeightsInfo, build_model
from .progressive import PROGRESSIVE_LR_DIV, crops_per_image, progressive_size, small_epochs
from .runs import RunState

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
    model: Path | None = None  # the run folder's own export (model.pkl; its bundle model/); ``export`` is a copy
    outputs: object = None  # fastseg.report.html.RunOutputs: full-resolution valid scores, per-image files, report.html


def build_learner(cfg: FitConfig, notify: Notify = silent, spec: DataSpec | None = None,
                  workdir: Path | None = None) -> tuple[Learner, DataSpec, WeightsInfo]:
    """DataLoaders + SMP Unet + loss + mIoU/Dice metrics in a fastai ``Learner``."""
    set_seed(cfg.seed, reproducible=True)
    spec = spec or discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed, notify=notify, layout=cfg.layout,
                            colors=cfg.colors, void=cfg.void, ignore_index=cfg.ignore_index)
    size = auto_size(spec, cfg.size)
    dls = dataloaders_for(cfg, spec, size, notify)
    model, winfo = build_model(cfg.encoder, spec.n_classes, cfg.weights, in_channels=spec.channels)
    if cfg.weights == "imagenet" and not winfo.loaded:
        notify(f"Warning: {winfo.source}")
    meta = {
        "arch": "Unet", "encoder": cfg.encoder, "codes": list(spec.codes), "void_code": spec.void_code,
        "ignore_index": IGNORE_INDEX, "size": size, "weights": {"requested": winfo.requested, "loaded": winfo.loaded,
                                                                "source": winfo.source},
        "input": "crop" if spec.min_side >= size else "resize",
        "split": {"valid_pct": cfg.valid_pct, "seed": cfg.seed},  # lets `fastseg evaluate` rebuild the same split
        # ... and read masks as training did (the colour table itself: its file may be gone by then)
        "data_options": {"layout": cfg.layout, "void": cfg.void, "ignore_index": cfg.ignore_index,
                         "colors": [[c, *rgb] for c, rgb in zip(spec.codes, spec.colors)] if spec.colors else None},
        "scaling": spec.scaling.as_dict(),  # prediction scales 16-bit/float images as training did
        "channels": spec.channels,  # the model's input channels (3: RGB); its mean/std have one value each
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
        from ..report.plots import plot_lr_find

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
    import csv

    if not path.is_file():
        return []
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.append({k: (int(v) if k == "epoch" else v if k == "time" else float(v)) for k, v in row.items()})
    return rows


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


@dataclass
class _Where:
    """How far a run got, for the message when Ctrl-C stops it."""

    run: Path | None = None
    last: LastCheckpoint | None = None
    resumed: int = 0  # epochs saved when the run was resumed
    total: int | None = None
    finishing: bool = False

    def interrupted(self) -> Interrupted:
        from .runs import resume_command

        saved = self.last.saved if self.last is not None else self.resumed
        if self.run is None:
            return Interrupted("interrupted before the run folder was made; nothing was saved")
        if self.finishing:
            return Interrupted(f"interrupted while finishing {self.run} (its training is saved: {_epochs(saved)}); "
                               f"finish it with: {resume_command(self.run)}", self.run, saved)
        if not saved:
            return Interrupted(f"interrupted: {self.run} has no epoch saved yet; nothing to resume, start the run "
                               "again", self.run, 0)
        return Interrupted(f"interrupted after epoch {saved} of {self.total} was saved in {self.run}; continue with: "
                           f"{resume_command(self.run)}", self.run, saved)


def run_training(cfg: FitConfig, notify: Notify = silent, resume_dir: Path | None = None,
                 progress: bool = True) -> FitResult:
    """The whole job behind ``fastseg fit`` (and ``--resume``): run folder, LR, phases, export, report.

    Ctrl-C becomes ``Interrupted``, which says which epoch is saved and how to continue. ``progress``:
    fastai's progress bars; False (log files, CI): one line per epoch through ``notify``."""
    from .tracking import require

    require(cfg.log)  # a missing tracker package stops the run before any work
    notify = distributed_setup(notify)  # DDP launcher: join the group, pin the GPU; notices from rank 0 only
    where = _Where()
    try:
        return _run(cfg, notify, resume_dir, where, progress)
    except KeyboardInterrupt:
        raise where.interrupted() from None


def _open_run(cfg: FitConfig, resume_dir: Path | None, main: bool) -> tuple[FitConfig, RunState | None]:
    """The resumed run's state (best.pth settled with last.pth), or the new run's config with absolute paths;
    the export destination checked either way, before anything is trained."""
    from ..export.publish import RUN_MODEL, check_destination
    from .runs import absolute_paths, is_finished, load_run_state, settle_best

    state, own = None, None
    if resume_dir is not None:
        state = load_run_state(resume_dir)
        if is_finished(resume_dir, state):
            raise TrainingError(f"{resume_dir}: this run already finished (its model: {resume_dir / RUN_MODEL}); "
                                "start a new run to train again")
        if main:
            settle_best(resume_dir, state)
        barrier()
        own = resume_dir / RUN_MODEL
    else:
        cfg = absolute_paths(cfg, Path.cwd())  # config.json then works from any working directory
    check_destination(cfg.export, own=own)
    return cfg, state


def _run(cfg: FitConfig, notify: Notify, resume_dir: Path | None, where: _Where, progress: bool = True) -> FitResult:
    from .console import EpochLines, hide_bars
    from .runs import check_same_data, data_fingerprint, new_run_dir, write_json
    from .tracking import Trackers, open_trackers, summary_for_trackers

    main = is_main_process()
    resume_dir = resume_dir and Path(resume_dir).absolute()
    where.run = resume_dir
    cfg, state = _open_run(cfg, resume_dir, main)
    if state is not None:
        where.resumed, where.total = state.epoch, state.total_epochs
    # Data and model errors (bad encoder, unreadable weights) come before the run folder is made.
    learn, spec, winfo = build_learner(cfg, notify, workdir=resume_dir or Path(cfg.runs_dir))
    if not progress:
        hide_bars(learn)  # no redrawn bars in log files; EpochLines reports each epoch instead
    fingerprint = data_fingerprint(spec)
    if state is not None:
        run = resume_dir
        check_same_data(run, state.data, fingerprint, notify)
    else:  # DDP: rank 0 makes the folder, every rank uses it
        run = where.run = Path(broadcast_value(str(new_run_dir(cfg.runs_dir, cfg.name)) if main else None))
        cfg = cfg.replace(size=auto_size(spec, cfg.size))
        if main:
            write_json(run / "config.json", {**cfg.to_dict(), "name": None})  # name None: feeding it back makes a new run
    # Only rank 0 writes into the run folder; other ranks keep their (identical) checkpoints in a scratch folder.
    learn.path = run if main else Path(tempfile.mkdtemp(prefix="fastseg-rank-"))
    notify(f"run folder {run}")
    trackers = open_trackers(cfg.log, run, cfg.to_dict(), state is not None, notify) if main else Trackers()
    lr, how, found = _learning_rate(cfg, learn, spec, run, state, notify)
    full = auto_size(spec, cfg.size)
    small, why = progressive_size(cfg, spec, full)
    phases = plan_phases(cfg, winfo.loaded, lr, small)
    loaders, progressive = _phase_loaders(cfg, learn, spec, phases, full, small, why, notify)
    where.total = total = sum(p.epochs for p in phases)
    base = state or RunState(epoch=0, total_epochs=total, lr=lr, lr_source=how)
    base = dataclasses.replace(base, data=fingerprint, model=None, opt=None)
    best = BestCheckpoint(best=base.best, best_epoch=base.best_epoch)
    patience = Patience(cfg.patience, best=base.best, wait=base.wait, stopped=base.stopped) if cfg.patience else None
    where.last = last = LastCheckpoint(learn.path, base, best, patience)
    ranks = None
    if state is not None and (state.epoch >= total or state.stopped):
        notify(f"{run}: every epoch is trained; finishing the run (export, metrics.json, plots)")
    else:
        extra = [*trackers.cbs, *([] if progress else [EpochLines(notify, total)])]
        with trackers:
            ranks = _train_phases(cfg, learn, phases, state, loaders, best, last, patience, run, notify, extra)
    where.finishing = True
    with trackers:
        result = _finish(learn, spec, cfg, run, lr, how, winfo, found, last, best, patience, main, progressive, notify)
        trackers.finish(summary_for_trackers(result, result.outputs))
    result.ranks = ranks
    if not main:
        shutil.rmtree(learn.path, ignore_errors=True)
    return result


def _learning_rate(cfg, learn, spec, run, state, notify) -> tuple[float, str, LRFindResult | None]:
    """The resumed run's LR, the given one, or the LR finder's (its plot saved in the run folder)."""
    found = None
    if state is not None:
        lr, how = state.lr, state.lr_source
        learn.model.load_state_dict(state.model)
        set_seed(cfg.seed + state.epoch, reproducible=True)
        notify(f"resuming {run} after epoch {state.epoch} of {state.total_epochs}")
    elif cfg.lr == "auto":
        t0 = time.perf_counter()
        found = run_on_main(find_lr, learn, spec, cfg)  # DDP: rank 0 alone, the others take its result
        lr, how = found.lr, "lr finder: minimum / 10"
        from ..report.plots import plot_lr_find

        if is_main_process():
            plot_lr_find(found, run / "lr_find.png")
        notify(f"LR finder: {time.perf_counter() - t0:.0f} s")
    else:
        lr, how = float(cfg.lr), "given"
    notify(f"learning rate {lr:.2e} ({how})")
    return lr, how, found


def _phase_loaders(cfg, learn, spec, phases, full, small, why, notify) -> tuple[dict, dict | None]:
    """DataLoaders of the progressive-resizing phase (by crop side), and what it is, said once."""
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
    return loaders, progressive


def _train_phases(cfg, learn, phases, state, loaders, best, last, patience, run, notify,
                  extra: list = ()) -> RankStats | None:
    """Train what is left of the run; a NaN loss or a failed checkpoint write stops it with one line.
    ``extra``: more callbacks (trackers, per-epoch log lines)."""
    from .runs import resume_command

    nan = StopOnNaN()
    if state is not None and is_main_process():
        _trim_history(run / "history.csv", state.epoch)
    cbs = [nan, RunCSVLogger(), best, last, *([patience] if patience else []), *training_cbs(cfg), *extra]
    with ddp(learn, sync_bn=cfg.sync_bn, notify=notify) as sync:  # no-op in one process
        _run_phases(learn, phases, state.epoch if state else 0, cbs, state and {"opt": state.opt}, loaders)
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


def _finish(learn, spec, cfg, run, lr, how, winfo, found, last, best, patience, main, progressive=None,
            notify: Notify = silent) -> FitResult:
    """Load the best epoch's weights; rank 0 exports them into the run folder, writes metrics.json and the
    plots, copies the model to ``cfg.export``, and marks the run finished (finished.json, written last)."""
    from fastai.torch_core import get_model

    from ..device import plain_model
    from ..metrics import scores_from_confusion
    from .runs import load_best

    barrier()  # DDP: only rank 0 writes best.pth, so every rank loads rank 0's best.pth once it is written
    loaded = load_best(run)
    if loaded is not None:
        plain_model(get_model(learn.model)).load_state_dict(loaded[1])
    cms = last.cms
    best_epoch = best.best_epoch if best.best_epoch is not None else len(cms) - 1
    final = scores_from_confusion(cms[-1]).as_dict(spec.codes)
    best_scores = scores_from_confusion(cms[best_epoch]).as_dict(spec.codes)
    learn.fastseg_info.meta.update(lr=lr, epochs=cfg.epochs, final=best_scores, best_epoch=best_epoch, run=str(run))
    result = FitResult(export=Path(cfg.export), lr=lr, lr_source=how, weights=winfo, metrics=best_scores,
                       history=read_history(learn.path / "history.csv"), lr_find=found, run=run, best_epoch=best_epoch,
                       stopped_early=bool(patience and patience.stopped), bs=learn.dls.train.bs,
                       aug=getattr(learn.dls, "fastseg_aug", None), progressive=progressive)
    if not main:
        barrier()  # DDP: wait for rank 0's export, so no rank returns before the files are complete
        return result
    try:
        _write_outputs(learn, spec, cfg, result, {"epoch": len(cms) - 1, **final}, cms[best_epoch], notify)
    except OSError as e:
        from .runs import resume_command

        raise TrainingError(f"{run}: cannot finish the run ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); "
                            f"its training is saved ({_epochs(len(cms))}), so once that is fixed: {resume_command(run)}") from None
    barrier()
    return result


def _write_outputs(learn, spec, cfg, result: FitResult, final: dict, best_cm, notify: Notify) -> None:
    """The run folder's model.pkl + model/, metrics.json, plots; the --export copy; finished.json last."""
    from ..export.formats import export_bundle_beside, export_learner
    from ..report.plots import write_run_plots
    from ..export.publish import RUN_MODEL, publish
    from .runs import FINISHED, write_json

    from ..infer.agreement import record_agreement
    from .console import show_bars
    from ..report.html import finish_run

    run, winfo = result.run, result.weights
    show_bars(learn)  # the export is the same whether this run showed progress bars or not
    record_agreement(learn, [s.image for s in spec.valid])  # for predict's auto backend (fastseg.infer.agreement)
    result.model = export_learner(learn, run / RUN_MODEL)
    export_bundle_beside(learn, result.model)  # the safe, pickle-free twin: model.pkl -> model/
    write_json(run / "metrics.json", {
        "final": final, "best": {"epoch": result.best_epoch, **result.metrics},
        "lr": result.lr, "lr_source": result.lr_source, "epochs_run": final["epoch"] + 1,
        "stopped_early": result.stopped_early, "model": str(result.model), "export": str(result.export),
        "bs": result.bs, "aug": result.aug, "progressive": result.progressive,
        "weights": {"requested": winfo.requested, "loaded": winfo.loaded, "source": winfo.source},
        "lr_find": None if result.lr_find is None else result.lr_find.suggestions,
    })
    write_run_plots(run, learn, spec, result.history, best_cm)
    result.outputs = finish_run(learn, spec, run, result.best_epoch, result.metrics, result.model)  # per-image, report
    result.export = publish(result.model, cfg.export, notify)
    write_json(run / FINISHED, {"model": str(result.model), "export": str(result.export)})


def fit(cfg: FitConfig, notify: Notify = silent, progress: bool = True) -> FitResult:
    """Train a Unet on ``cfg.data`` in a new run folder, export the best model to ``cfg.export``."""
    return run_training(cfg, notify=notify, progress=progress)


def resume(run: str | Path, notify: Notify = silent, export: str | Path | None = None,
           progress: bool = True) -> FitResult:
    """Continue the run in folder ``run`` from its last completed epoch (model, optimiser, schedule), or
    finish it (export, metrics, plots) when every epoch is trained; ``export``: another --export than its own."""
    from .runs import read_run_config

    cfg = read_run_config(run, notify)
    if export is not None:
        cfg = cfg.replace(export=str(Path(export).absolute()))
    return run_training(cfg, notify=notify, resume_dir=Path(run), progress=progress)
