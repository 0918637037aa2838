"""The run folder ``runs/<name>/``: creating it, its JSON files, and the resumable checkpoints.

Layout: config.json (the resolved FitConfig, absolute paths), history.csv, metrics.json, the plots,
model.pkl + model/ (the run's own exported model), finished.json (written last: the run is complete),
best.pth (the best epoch by valid mIoU, with its epoch) and last.pth (a ``RunState`` after every
completed epoch). Checkpoints hold tensors and plain types only and load with ``weights_only=True``.
Every file is written atomically, and the two checkpoints in an order that any kill leaves consistent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import FitConfig, Notify, silent
from ..device import plain_model
from ..errors import ConfigError, TrainingError
from ..io import atomic_path, atomic_write_bytes

__all__ = ["CHECKPOINT_VERSION", "RunState", "new_run_dir", "write_json", "read_run_config", "save_epoch",
           "load_run_state", "settle_best", "load_best", "data_fingerprint", "check_same_data", "resume_command",
           "is_finished", "absolute_paths", "model_state", "LAST", "BEST", "BEST_NEXT", "FINISHED"]

CHECKPOINT_VERSION = 2  # 1: the untyped dict of earlier fastseg versions (numpy confusion matrices, no version)
LAST, BEST, BEST_NEXT, FINISHED = "last.pth", "best.pth", "best-next.pth", "finished.json"


@dataclass
class RunState:
    """What last.pth holds after each completed epoch: enough to continue the run exactly."""

    epoch: int  # epochs completed
    total_epochs: int
    lr: float
    lr_source: str
    best: float | None = None  # best valid mIoU so far
    best_epoch: int | None = None  # the epoch best.pth holds
    wait: int = 0  # epochs without improvement (--patience)
    stopped: bool = False  # --patience ended the training: nothing is left to train
    cms: list = field(default_factory=list)  # per-epoch validation confusion matrix (int64 tensor, or None)
    data: dict | None = None  # data_fingerprint() of the data the run trains on
    model: dict | None = None
    opt: dict | None = None
    version: int = CHECKPOINT_VERSION

    def to_payload(self) -> dict:
        """Tensors and plain types only, so ``torch.load(weights_only=True)`` reads it."""
        payload = dataclasses.asdict(dataclasses.replace(self, model=None, opt=None, cms=[]))
        payload.update(version=CHECKPOINT_VERSION, model=self.model, opt=self.opt,
                       cms=[None if cm is None else torch.as_tensor(cm, dtype=torch.int64) for cm in self.cms])
        return _plain(payload)

    @classmethod
    def from_payload(cls, payload: dict, source: str | Path = "last.pth") -> "RunState":
        version = payload.get("version", 1) if isinstance(payload, dict) else None
        if not isinstance(version, int) or not {"epoch", "total_epochs", "model"} <= set(payload):
            raise TrainingError(f"{source}: not a fastseg checkpoint (start the run again)")
        if version > CHECKPOINT_VERSION:
            raise TrainingError(f"{source}: written by a newer fastseg (checkpoint version {version}; this one "
                                f"reads up to {CHECKPOINT_VERSION}); upgrade fastseg to resume it")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in payload.items() if k in names}
        values["cms"] = [None if cm is None else torch.as_tensor(np.asarray(cm), dtype=torch.int64)
                         for cm in payload.get("cms", [])]
        values["opt"] = _plain(payload.get("opt"))
        values["version"] = version
        return cls(**values)


def _plain(x: Any) -> Any:
    """numpy scalars/arrays (fastai's schedules put them in optimiser hyper-parameters) as plain types/tensors."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, np.generic):
        return x.item()
    return x


def new_run_dir(runs_dir: str | Path, name: str | None) -> Path:
    """Create ``runs_dir/name`` (a timestamp when ``name`` is None); never reuse an existing folder."""
    runs_dir = Path(runs_dir)
    if name is not None:
        run = runs_dir / name
        if run.exists():
            raise ConfigError(f"{run}: run folder already exists (choose another --name, or --resume {run})")
        run.mkdir(parents=True)
        return run
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i in range(1, 1000):
        run = runs_dir / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            run.mkdir(parents=True)
            return run
        except FileExistsError:
            continue
    raise ConfigError(f"{runs_dir}: cannot find a free run folder name for {stamp} (pass --name)")


def write_json(dest: str | Path, values: Any) -> Path:
    return atomic_write_bytes(dest, (json.dumps(values, indent=2, allow_nan=False, default=_jsonable) + "\n").encode())


def _jsonable(x):
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_run_config(run: str | Path, notify: Notify = silent) -> FitConfig:
    """The FitConfig a run folder was started with (its config.json), with absolute paths.

    config.json of earlier versions may hold relative paths: they are taken from the folder the run was
    started in (the run folder less --runs-dir and its name), so a resume from elsewhere finds the same data.
    """
    path = Path(run) / "config.json"
    if not path.is_file():
        raise TrainingError(f"{run}: not a run folder (no config.json; pass a folder under runs/)")
    cfg = FitConfig.from_file(path)
    parent, runs_dir = Path(run).absolute().parent, Path(cfg.runs_dir)
    start = Path.cwd()
    if not runs_dir.is_absolute() and ".." not in runs_dir.parts and parent.parts[-len(runs_dir.parts):] == runs_dir.parts:
        start = Path(*parent.parts[:len(parent.parts) - len(runs_dir.parts)])
    fixed = absolute_paths(cfg, start)
    if fixed != cfg and start != Path.cwd():
        notify(f"{path}: relative paths taken from {start}, where the run was started")
    return fixed


def absolute_paths(cfg: FitConfig, base: str | Path) -> FitConfig:
    """``cfg`` with its paths (data, export, runs_dir, colors, a weights file) made absolute from ``base``."""
    def fix(p):
        return None if p is None else os.path.abspath(os.path.join(base, p))

    return cfg.replace(data=fix(cfg.data), export=fix(cfg.export), runs_dir=fix(cfg.runs_dir), colors=fix(cfg.colors),
                       weights=fix(cfg.weights) if cfg.weights_is_file else cfg.weights)


def _legacy_globals() -> list:
    """What checkpoints of earlier fastseg versions need beyond tensors: numpy arrays, scalars, dtypes."""
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("int64", "int32", "float64", "float32", "bool")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def _load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; numpy arrays of earlier versions allowed in a scoped allow-list."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_legacy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)


def _save(dest: Path, payload: dict) -> None:
    with atomic_path(dest) as tmp:
        torch.save(payload, tmp)


def save_epoch(folder: str | Path, state: RunState, best_model: dict | None = None) -> None:
    """One completed epoch: best-next.pth (a new best), then last.pth (naming best_epoch), then best-next ->
    best.pth. Killed anywhere, last.pth says which best is right, and ``settle_best`` makes best.pth agree."""
    folder = Path(folder)
    if best_model is not None:
        _save(folder / BEST_NEXT, {"version": CHECKPOINT_VERSION, "epoch": state.best_epoch, "model": best_model})
    _save(folder / LAST, state.to_payload())
    if best_model is not None:
        os.replace(folder / BEST_NEXT, folder / BEST)


def load_run_state(run: str | Path) -> RunState:
    path = Path(run) / LAST
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint to resume from (the run stopped before its first epoch "
                            "ended; start it again)")
    try:
        payload = _load(path)
    except Exception as e:
        raise TrainingError(f"{path}: cannot read checkpoint ({e.__class__.__name__}); start the run again") from None
    return RunState.from_payload(payload, path)


def _best_epoch_in(path: Path) -> int | None:
    payload = _load(path)
    return payload.get("epoch") if isinstance(payload, dict) and "model" in payload else None


def settle_best(run: str | Path, state: RunState) -> None:
    """Roll a kill's best-next.pth forward (last.pth names its epoch) or drop it; check best.pth's epoch."""
    run = Path(run)
    for tmp in run.glob(".*.tmp"):  # temporary files of writes a kill interrupted
        tmp.unlink(missing_ok=True)
    nxt = run / BEST_NEXT
    if nxt.is_file():
        if _best_epoch_in(nxt) == state.best_epoch:
            os.replace(nxt, run / BEST)
        else:
            nxt.unlink()
    held = _best_epoch_in(run / BEST) if (run / BEST).is_file() else None
    if held is not None and held != state.best_epoch:
        raise TrainingError(f"{run / BEST}: holds epoch {held}, but {LAST} says the best is epoch {state.best_epoch}; "
                            "the checkpoints do not belong together (start the run again)")


def load_best(folder: str | Path) -> tuple[int | None, dict] | None:
    """best.pth's (epoch, model state); epoch None for earlier versions' plain state dicts; None: no file."""
    path = Path(folder) / BEST
    if not path.is_file():
        return None
    payload = _load(path)
    if isinstance(payload, dict) and "model" in payload and "version" in payload:
        return payload.get("epoch"), payload["model"]
    return None, payload


def model_state(learn) -> dict:
    """The plain module's state dict (no ``module.`` or ``_orig_mod.`` prefix from DDP or ``torch.compile``)."""
    from fastai.torch_core import get_model

    model, inner = None, learn.model
    while inner is not model:
        model, inner = inner, plain_model(get_model(inner))
    return model.state_dict()


def is_finished(run: str | Path, state: RunState) -> bool:
    """finished.json is written last; earlier versions wrote metrics.json last."""
    run = Path(run)
    return (run / FINISHED).is_file() or (state.version < 2 and (run / "metrics.json").is_file())


def resume_command(run: str | Path) -> str:
    """``fastseg fit --resume RUN``, RUN relative to the working directory when it is inside it."""
    run = Path(run).absolute()
    try:
        shown = str(run.relative_to(Path.cwd()))
    except ValueError:
        shown = str(run)
    return f"fastseg fit --resume {shlex.quote(shown)}"


def data_fingerprint(spec) -> dict:
    """The data a run trains on, cheaply: its folder, class codes, and a hash of the split's file names and sizes."""
    root = Path(spec.root).resolve()
    lines = []
    for split, samples in (("train", spec.train), ("valid", spec.valid)):
        for s in samples:
            for f in (s.image, s.mask):
                f = Path(f).resolve()
                rel = f.relative_to(root) if f.is_relative_to(root) else f
                lines.append(f"{split}\t{rel}\t{f.stat().st_size if f.exists() else -1}")
    files = hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()
    return {"root": str(root), "codes": list(spec.codes), "files": files,
            "train": len(spec.train), "valid": len(spec.valid)}


def check_same_data(run: Path, saved: dict | None, now: dict, notify: Notify = silent) -> None:
    """Refuse to resume on other data than the run started with (checkpoints of earlier versions: no record)."""
    if saved is None:
        return
    if saved["codes"] != now["codes"]:
        raise TrainingError(f"{run}: the data's classes changed since the run started (then {', '.join(saved['codes'])}; "
                            f"now {', '.join(now['codes'])}); resume only on the run's own data, or start a new run")
    if saved["files"] != now["files"]:
        where = (f"the data is now {now['root']}, but the run trained on {saved['root']}" if saved["root"] != now["root"]
                 else f"the images or masks in {now['root']} changed")
        raise TrainingError(f"{run}: {where} (then {saved['train']} train / {saved['valid']} valid images, now "
                            f"{now['train']} / {now['valid']}, or other files); restore the run's data, or start a new run")
    if saved["root"] != now["root"]:
        notify(f"data found at {now['root']} (the run started with {saved['root']}): same files and classes")
