"""Publishing a run's model to ``--export``: a checked copy of the run folder's model.pkl + model/ bundle.

The run folder keeps its own model; ``--export`` (exports/model.pkl and its bundle exports/model/) is a
copy, replaced as a pair under a lock, each file renamed into place whole. What is there already is
replaced only when fastseg can account for it without unpickling anything: the bundle beside it records
its .pkl's sha256 and run, and the lock file journals an update in progress (a kill between the two
renames leaves a .pkl the journal names). A model whose only copy is at the destination is moved into its
run folder first, or the export is refused.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from .bundle import INFO_FILE, bundle_path_for
from ..config import Notify, silent
from ..errors import ConfigError
from ..io import atomic_dir, atomic_path, sha256_file

__all__ = ["Occupant", "check_destination", "publish", "RUN_MODEL"]

RUN_MODEL = "model.pkl"  # the run folder's own export; its bundle is model/
_AGAIN = "move it away or choose another --export"


@dataclass(frozen=True)
class Occupant:
    """The fastseg model already at a destination: its run (when known), and whether that run keeps a copy."""

    run: Path | None
    kept: bool
    interrupted: bool = False  # the .pkl of an export a kill stopped before its bundle was copied

    def describe(self) -> str:
        who = f"run {self.run}" if self.run else "an earlier fastseg export"
        return f"{who}; the last export there was interrupted" if self.interrupted else who


def _lock_file(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


def _bundle_info(bundle: Path) -> dict | None:
    try:
        info = json.loads((bundle / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "codes" in info else None


def _journal(dest: Path) -> dict:
    try:
        entry = json.loads(_lock_file(dest).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return entry if isinstance(entry, dict) else {}


def _writable_folder(dest: Path) -> None:
    folder = dest.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, not a folder, so --export {dest} cannot be written; choose another --export")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{folder}: cannot write there ({e.strerror}); choose another --export") from None


def _kept(run: Path | None, sha: str) -> bool:
    """The run folder holds the same model.pkl."""
    own = run / RUN_MODEL if run else None
    return bool(own and own.is_file() and sha256_file(own) == sha)


def check_destination(dest: str | Path, own: str | Path | None = None) -> Occupant | None:
    """Raise ``ConfigError`` (one line) when ``dest`` cannot take an export; else what it would replace.

    ``own``: this run's model.pkl (a resumed finish may meet its own earlier copy at ``dest``)."""
    dest = Path(dest).absolute()
    bundle = bundle_path_for(dest)
    if dest.is_dir():
        raise ConfigError(f"{dest}: is a folder; --export takes a file path, e.g. {dest / 'model.pkl'}")
    _writable_folder(dest)
    if (dest.parent / "config.json").is_file() and (dest.parent / "last.pth").is_file():
        raise ConfigError(f"{dest}: is inside the run folder {dest.parent}; --export must be outside run folders")
    info = _bundle_info(bundle) if bundle.is_dir() else None
    if bundle.exists() and info is None:
        raise ConfigError(f"{bundle}: exists and is not a fastseg bundle, and the export's bundle would replace it; {_AGAIN}")
    occupant = _occupant(dest, info, Path(own).absolute() if own is not None else None)
    if occupant is not None and not occupant.kept and not _movable(occupant):
        raise ConfigError(f"{dest}: holds the only copy of the model of {occupant.describe()}; {_AGAIN}")
    return occupant


def _occupant(dest: Path, info: dict | None, own: Path | None) -> Occupant | None:
    run = Path(info["run"]).absolute() if info and info.get("run") else None
    if not dest.exists():
        return None if info is None else Occupant(run, kept=bool(run and (run / "model").is_dir()))
    sha = sha256_file(dest)
    journal = _journal(dest)
    mine = own is not None and own.is_file() and sha256_file(own) == sha
    if mine or journal.get("pkl_sha256") == sha:  # an export a kill stopped between the .pkl and the bundle
        pkl_run = own.parent if mine else Path(journal["run"])
        if run is not None and run != pkl_run:
            return Occupant(run, kept=(run / "model").is_dir(), interrupted=True)  # the bundle is an older model's
        return None if mine else Occupant(pkl_run, kept=True, interrupted=True)  # that run holds the same file
    if info is not None and info.get("pkl_sha256") == sha:
        return Occupant(run, kept=_kept(run, sha))
    if info is not None and "pkl_sha256" not in info and zipfile.is_zipfile(dest):
        return Occupant(run, kept=_kept(run, sha))  # a pair written before fastseg recorded the .pkl's hash
    beside = f"it does not match the bundle {bundle_path_for(dest)} beside it" if info else \
        f"no fastseg bundle {bundle_path_for(dest)} beside it"
    raise ConfigError(f"{dest}: exists and fastseg cannot tell that it wrote it ({beside}); {_AGAIN}")


def _movable(occupant: Occupant) -> bool:
    """The run folder of a model that exists only at the destination, ready to take it in."""
    run = occupant.run
    return bool(run and run.is_dir() and not (run / RUN_MODEL).exists() and not (run / "model").exists())


def _keep_previous(dest: Path, occupant: Occupant | None, notify: Notify) -> None:
    """Move a model whose only copy is at ``dest`` into its run folder (``check_destination`` made sure it can)."""
    if occupant is None or occupant.kept:
        return
    if dest.exists():
        shutil.move(dest, occupant.run / RUN_MODEL)
    if bundle_path_for(dest).is_dir():
        shutil.move(bundle_path_for(dest), occupant.run / "model")
    notify(f"moved the previous model at {dest} into its run folder {occupant.run}")


@contextmanager
def _locked(dest: Path) -> Iterator[IO[str]]:
    """An exclusive flock on ``.<name>.lock`` beside ``dest``: one writer of the pair at a time."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(_lock_file(dest), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_journal(lock: IO[str], entry: dict | None) -> None:
    lock.seek(0)
    lock.truncate()
    if entry:
        lock.write(json.dumps(entry))
    lock.flush()
    os.fsync(lock.fileno())


def publish(run_pkl: str | Path, dest: str | Path, notify: Notify = silent) -> Path:
    """Copy the run's model.pkl and its bundle to ``dest`` and ``dest``'s bundle path, as a pair."""
    run_pkl, dest = Path(run_pkl).absolute(), Path(dest).absolute()
    if dest == run_pkl:
        return dest
    sha = sha256_file(run_pkl)
    src_bundle, bundle = bundle_path_for(run_pkl), bundle_path_for(dest)
    with _locked(dest) as lock:
        occupant = check_destination(dest, own=run_pkl)  # again, under the lock: another fit may have written
        _keep_previous(dest, occupant, notify)
        _write_journal(lock, {"run": str(run_pkl.parent), "pkl_sha256": sha})
        with atomic_path(dest) as tmp:
            shutil.copyfile(run_pkl, tmp)
        with atomic_dir(bundle) as tmp:
            for f in src_bundle.iterdir():
                shutil.copyfile(f, tmp / f.name)
        _write_journal(lock, None)
    if occupant is not None:
        notify(f"replaced {dest} and {bundle}/ (the model of {occupant.describe()})")
    return dest
