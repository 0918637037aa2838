"""The whole ``fastseg fit`` job: plan, train, finish; and its siblings ``resume``, ``lr_find``, ``plan_fit``,
``export_model``.

``fit(cfg)`` prepares the run (fastseg.train.loop: data, model, ``RunPlan``, learner) and shows the plan,
makes the run folder (config.json, plan.json), finds the learning rate, trains the plan's phases with a
checkpoint after every epoch, then finishes: the run's own model (model.pkl + the safe bundle model/),
metrics.json, plots, per-image scores and report.html, the ``--export`` copy, and finished.json last.
Any of that can stop (Ctrl-C, a kill, a full disk); ``resume(run)`` continues or finishes the run.
This module sits above the stages (train -> export -> infer -> report), so none of them imports another
later one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import FitConfig, Notify, silent
from .errors import Interrupted, TrainingError
from .model import WeightsInfo
from .train.distributed import RankStats, barrier, broadcast_value, is_main_process
from .train.distributed import setup as distributed_setup
from .train.loop import LRFindResult, Session, Trained, best_scores, checkpoints, find_lr, prepare, read_history, train
from .train.plan import RunPlan, read_plan
from .train.runs import RunState

__all__ = ["FitResult", "fit", "resume", "lr_find", "plan_fit", "export_model", "PLAN_FILE"]

PLAN_FILE = "plan.json"


@dataclass
class FitResult:
    export: Path
    lr: float
    lr_source: str  # where the LR came from: the LR finder or --lr
    weights: WeightsInfo
    metrics: dict  # the best epoch's validation metrics, as from fastseg.metrics.Scores.as_dict
    history: list[dict] = field(default_factory=list)  # one row per epoch
    lr_find: LRFindResult | None = None
    ranks: RankStats | None = None  # samples per rank under torchrun/accelerate; None in one process
    run: Path | None = None  # the run folder (config.json, plan.json, history.csv, plots, checkpoints)
    best_epoch: int | None = None  # the epoch whose weights were exported
    stopped_early: bool = False  # --patience ended the run before its last epoch
    plan: RunPlan | None = None  # every automatic choice of the run (plan.json)
    model: Path | None = None  # the run folder's own export (model.pkl; its bundle model/); ``export`` is a copy
    outputs: object = None  # fastseg.report.html.RunOutputs: full-resolution valid scores, per-image files, report.html

    @property
    def bs(self) -> int | None:
        return self.plan.bs if self.plan else None

    @property
    def aug(self) -> str | None:
        return self.plan.aug if self.plan else None

    @property
    def progressive(self) -> dict | None:
        """{"size": crop side, "epochs": n} of the half-size part; None: one size."""
        p = self.plan
        return None if p is None or p.progressive is None else {"size": p.progressive,
                                                                "epochs": p.epochs_at(p.progressive)}


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


@dataclass
class _Where:
    """How far a run got, for the message when Ctrl-C stops it."""

    run: Path | None = None
    trained: Trained | None = None
    resumed: int = 0  # epochs saved when the run was resumed
    total: int | None = None
    finishing: bool = False

    def interrupted(self) -> Interrupted:
        from .train.runs import resume_command

        saved = self.trained.last.saved if self.trained is not None else self.resumed
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


def plan_fit(cfg: FitConfig, notify: Notify = silent) -> RunPlan:
    """The plan ``fit(cfg)`` would follow (``fastseg fit --dry-run``): data, model and measurements only,
    nothing trained or written."""
    from .data.dataset import discover
    from .model import build_model
    from .train.loop import plan_for

    started = time.perf_counter()
    spec = discover(cfg.data, valid_pct=cfg.valid_pct, seed=cfg.seed, notify=notify, layout=cfg.layout,
                    colors=cfg.colors, void=cfg.void, ignore_index=cfg.ignore_index)
    _, winfo = build_model(cfg.encoder, spec.n_classes, cfg.weights, arch=cfg.arch, in_channels=spec.channels)
    if cfg.weights == "imagenet" and not winfo.loaded:
        notify(f"Warning: {winfo.source}")
    return plan_for(cfg, spec, winfo, started)


def lr_find(cfg: FitConfig, notify: Notify = silent, plot: str | Path | None = None) -> LRFindResult:
    """Run only the LR finder on ``cfg``'s data and model; optionally save the loss-vs-LR plot."""
    session = prepare(cfg, notify)
    try:
        result = find_lr(session)
    finally:
        shutil.rmtree(session.learn.path, ignore_errors=True)
    if plot is not None:
        from .figures import plot_lr_find

        plot_lr_find(result, plot)
    return result


def fit(cfg: FitConfig, notify: Notify = silent, progress: bool = True) -> FitResult:
    """Train on ``cfg.data`` in a new run folder; export the best model into it and copy it to ``cfg.export``.

    ``progress``: fastai's progress bars; False (log files, CI): one line per epoch through ``notify``.
    Ctrl-C becomes ``Interrupted``, which says which epoch is saved and how to continue."""
    return _guarded(cfg, notify, None, progress)


def resume(run: str | Path, notify: Notify = silent, export: str | Path | None = None,
           progress: bool = True) -> FitResult:
    """Continue the run in folder ``run`` from its last completed epoch (model, optimiser, schedule), or
    finish it (export, metrics, plots) when every epoch is trained; ``export``: another --export than its own."""
    from .train.runs import read_run_config

    cfg = read_run_config(run, notify)
    if export is not None:
        cfg = cfg.replace(export=str(Path(export).absolute()))
    return _guarded(cfg, notify, Path(run), progress)


def export_model(model: str | Path, fmt: str, out: str | Path | None = None, force: bool = False,
                 int8: bool = False, calib: str | Path | None = None, notify: Notify = silent,
                 classes: list[str] | None = None):
    """``fastseg export``: ``fastseg.export.formats.export_model``, an int8 model measured against fp32 by the
    inference stage (``fastseg.infer.agreement.int8_agreement``).

    Many parameters: the export command's options, passed through unchanged to the export stage."""
    from .export.formats import export_model as convert
    from .infer.agreement import int8_agreement

    return convert(model, fmt, out, force, int8, calib, notify, classes, int8_check=int8_agreement)


def _guarded(cfg: FitConfig, notify: Notify, resume_dir: Path | None, progress: bool) -> FitResult:
    from .train.tracking import require

    started = time.perf_counter()
    require(cfg.log)  # a missing tracker package stops the run before any work
    notify = distributed_setup(notify)  # DDP launcher: join the group, pin the GPU; notices from rank 0 only
    where = _Where()
    try:
        return _run(cfg, notify, resume_dir, where, progress, started)
    except KeyboardInterrupt:
        raise where.interrupted() from None


def _open_run(cfg: FitConfig, resume_dir: Path | None) -> tuple[FitConfig, RunState | None, RunPlan | None]:
    """The resumed run's state (best.pth settled with last.pth) and saved plan, or the new run's config with
    absolute paths; the export destination checked either way, before anything is trained."""
    from .export.publish import RUN_MODEL, check_destination
    from .train.runs import absolute_paths, is_finished, load_run_state, settle_best

    state, saved, own = None, None, None
    if resume_dir is not None:
        state = load_run_state(resume_dir)
        if is_finished(resume_dir, state):
            raise TrainingError(f"{resume_dir}: this run already finished (its model: {resume_dir / RUN_MODEL}); "
                                "start a new run to train again")
        if is_main_process():
            settle_best(resume_dir, state)
        barrier()
        own = resume_dir / RUN_MODEL
        if (resume_dir / PLAN_FILE).is_file():  # older runs have none: they are planned again from config.json
            saved = read_plan(resume_dir / PLAN_FILE)
    else:
        cfg = absolute_paths(cfg, Path.cwd())  # config.json then works from any working directory
    check_destination(cfg.export, own=own)
    return cfg, state, saved


def _new_run(session: Session, notify: Notify) -> Path:
    """The run folder with config.json and plan.json (rank 0 makes it, every rank uses it)."""
    from .train.runs import new_run_dir, write_json

    cfg = session.cfg
    run = Path(broadcast_value(str(new_run_dir(cfg.runs_dir, cfg.name)) if is_main_process() else None))
    if is_main_process():
        cfg = cfg.replace(size=session.plan.size)
        write_json(run / "config.json", {**cfg.to_dict(), "name": None})  # name None: feeding it back makes a new run
    return run


def _run(cfg: FitConfig, notify: Notify, resume_dir: Path | None, where: _Where, progress: bool,
         started: float) -> FitResult:
    from .train.console import hide_bars
    from .train.runs import check_same_data, data_fingerprint

    main = is_main_process()
    resume_dir = resume_dir and Path(resume_dir).absolute()
    where.run = resume_dir
    cfg, state, saved = _open_run(cfg, resume_dir)
    if state is not None:
        where.resumed, where.total = state.epoch, state.total_epochs
    # Data and model errors (bad encoder, unreadable weights) come before the run folder is made.
    session = prepare(cfg, notify, plan=saved, workdir=resume_dir or Path(cfg.runs_dir), started=started)
    session.seconds["prepare"] = time.perf_counter() - started  # data, model, plan (with its probes)
    if not progress:
        hide_bars(session.learn)  # no redrawn bars in log files; EpochLines reports each epoch instead
    fingerprint = data_fingerprint(session.spec)
    session.state = state
    if state is not None:
        session.run = resume_dir
        check_same_data(resume_dir, state.data, fingerprint, notify)
        if saved is None:  # planned again: keep the run's own epoch count and LR
            session.plan = session.plan.with_lr(state.lr, state.lr_source)
    else:
        session.run = where.run = _new_run(session, notify)
    notify("plan:\n" + session.plan.table())
    # Only rank 0 writes into the run folder; other ranks keep their (identical) checkpoints in a scratch folder.
    session.learn.path = session.run if main else Path(tempfile.mkdtemp(prefix="fastseg-rank-"))
    notify(f"run folder {session.run}")
    found = _learning_rate(session, notify)
    return _train_and_finish(session, found, fingerprint, where, progress, notify)


def _learning_rate(session: Session, notify: Notify) -> LRFindResult | None:
    """The resumed run's LR, the given one, or the LR finder's; the plan (with it) saved as plan.json."""
    from fastai.torch_core import set_seed

    from .train.runs import write_json

    plan, state, run, found = session.plan, session.state, session.run, None
    if state is not None:
        session.learn.model.load_state_dict(state.model)
        set_seed(session.cfg.seed + state.epoch, reproducible=True)
        notify(f"resuming {run} after epoch {state.epoch} of {state.total_epochs}")
    elif plan.lr is None:
        t0 = time.perf_counter()
        found = find_lr(session)
        session.plan = plan.with_lr(found.lr, "LR finder: minimum / 10")
        if is_main_process():
            from .figures import plot_lr_find

            plot_lr_find(found, run / "lr_find.png")
        session.seconds["lr_find"] = time.perf_counter() - t0
        notify(f"LR finder: {session.seconds['lr_find']:.0f} s")
    if is_main_process():
        write_json(run / PLAN_FILE, json.loads(session.plan.to_json()))
    notify(f"learning rate {session.plan.lr:.2e} ({session.plan.why.get('lr', '')})")
    return found


def _train_and_finish(session: Session, found, fingerprint: dict, where: _Where, progress: bool,
                      notify: Notify) -> FitResult:
    from .train.console import EpochLines
    from .train.tracking import Trackers, open_trackers, summary_for_trackers

    plan, state, run = session.plan, session.state, session.run
    trackers = open_trackers(session.cfg.log, run, session.cfg.to_dict(), state is not None, notify) \
        if is_main_process() else Trackers()
    where.total = plan.total_epochs
    where.trained = trained = checkpoints(session, fingerprint)
    if state is not None and (state.epoch >= plan.total_epochs or state.stopped):
        notify(f"{run}: every epoch is trained; finishing the run (export, metrics.json, plots)")
    else:
        extra = [*trackers.cbs, *([] if progress else [EpochLines(notify, plan.total_epochs)])]
        t0 = time.perf_counter()
        with trackers:
            trained.ranks = train(session, trained, extra, notify)
        session.seconds["train"] = time.perf_counter() - t0
    where.finishing = True
    t0 = time.perf_counter()
    with trackers:
        result = _finish(session, trained, found, notify, t0)
        trackers.finish(summary_for_trackers(result, result.outputs))
    if not is_main_process():
        shutil.rmtree(session.learn.path, ignore_errors=True)
    return result


def _finish(session: Session, trained: Trained, found: LRFindResult | None, notify: Notify,
            started: float) -> FitResult:
    """Load the best epoch's weights; rank 0 exports them into the run folder, writes metrics.json, the plots
    and the report, copies the model to ``--export``, and marks the run finished (finished.json, last)."""
    from .train.runs import resume_command

    best_epoch, best, final = best_scores(session, trained)
    plan, learn, run = session.plan, session.learn, session.run
    learn.fastseg_info.meta.update(lr=plan.lr, epochs=plan.epochs, final=best, best_epoch=best_epoch, run=str(run))
    result = FitResult(export=Path(session.cfg.export), lr=plan.lr, lr_source=plan.why.get("lr", ""),
                       weights=session.winfo, metrics=best, history=read_history(learn.path / "history.csv"),
                       lr_find=found, ranks=trained.ranks, run=run, best_epoch=best_epoch,
                       stopped_early=bool(trained.patience and trained.patience.stopped), plan=plan)
    if not is_main_process():
        barrier()  # DDP: wait for rank 0's export, so no rank returns before the files are complete
        return result
    epochs = len(trained.last.cms)
    try:
        _write_outputs(session, result, {"epoch": epochs - 1, **final}, trained.last.cms[best_epoch], notify, started)
    except OSError as e:
        raise TrainingError(f"{run}: cannot finish the run ({e.strerror or e}{f': {e.filename}' if e.filename else ''}); "
                            f"its training is saved ({_epochs(epochs)}), so once that is fixed: {resume_command(run)}") from None
    barrier()
    return result


def _write_outputs(session: Session, result: FitResult, final: dict, best_cm, notify: Notify,
                   started: float) -> None:
    """The run folder's model.pkl + model/, metrics.json, plots, per-image scores and report.html; the
    --export copy; finished.json last, with the seconds each part of the run took (``started``: the finish's
    start)."""
    from .export.formats import export_bundle_beside, export_learner
    from .export.publish import RUN_MODEL, publish
    from .infer.agreement import record_agreement
    from .report.html import finish_run
    from .report.plots import write_run_plots
    from .train.console import show_bars
    from .train.runs import FINISHED, write_json

    learn, spec, run, winfo = session.learn, session.spec, result.run, result.weights
    show_bars(learn)  # the export is the same whether this run showed progress bars or not
    record_agreement(learn, [s.image for s in spec.valid])  # for predict's auto backend
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
    result.export = publish(result.model, session.cfg.export, notify)
    session.seconds["finish"] = time.perf_counter() - started
    write_json(run / FINISHED, {"model": str(result.model), "export": str(result.export),
                                "seconds": {k: round(v, 2) for k, v in session.seconds.items()}})
