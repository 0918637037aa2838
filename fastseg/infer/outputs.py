"""Where predictions go: an output folder that knows which of its files fastseg wrote, and a bounded writer.

Before any inference every destination is checked: none may be an input image or the model, and an
existing file may be replaced only while its bytes are still exactly what fastseg wrote there (a
ground-truth mask of the same name, or a mask corrected by hand after pre-labelling, is never
destroyed). Files are then written by one background thread with a bounded queue that stops at the
first failed write.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import stat
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..config import PredictConfig
from ..errors import OutputError
from ..io import atomic_write_bytes

__all__ = ["LOG_NAME", "OutputFolder", "BackgroundWriter", "output_files", "prepare_outputs"]

# Content hashes, not names, say what fastseg wrote: a name cannot tell a mask fastseg wrote from a
# ground-truth mask of the same name, or from that mask after someone corrected it.
LOG_NAME = ".fastseg-predict.jsonl"


def output_files(rel: Path, overlay: bool = False, probs: bool = False, mask: bool = True) -> list[Path]:
    """The files a prediction for mask path ``rel`` writes, relative to the output folder (``mask``: the
    PNG mask itself; pre-annotation formats write one file for all images instead)."""
    files = [rel] if mask else []
    if overlay:
        files.append(rel.with_name(rel.stem + "_overlay.jpg"))
    if probs:
        files.append(rel.with_name(rel.stem + "_probs.npy"))
    return files


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _identities(paths: Iterable[Path], label: str) -> dict[tuple[int, int], str]:
    """(device, inode) -> label for ``paths`` and the files directly in any folder among them.

    Identities, as ``os.path.samefile`` compares them, catch symlinks and hard links in one set lookup.
    """
    found = {}
    for p in paths:
        p = Path(p)
        for q in [p, *(p.iterdir() if p.is_dir() else ())]:
            try:
                st = q.stat()
            except OSError:
                continue
            found[(st.st_dev, st.st_ino)] = label
    return found


class OutputFolder:
    """An output folder: refuses to replace what fastseg did not write, and records what it writes.

    The record is ``LOG_NAME``, an append-only log of JSON lines (path, size, sha256) appended *before*
    each file is replaced: one short append per file instead of rewriting a whole manifest per file,
    and a crash tears at most the last line, which reading skips.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.log = self.root / LOG_NAME
        self._lock = threading.Lock()
        self._lines = 0
        self._known = self._read_log()  # path relative to root -> {(size, sha256)} fastseg wrote there
        self._current: dict[str, tuple[int, str]] = {}  # destinations found holding fastseg's own bytes

    def _read_log(self) -> dict[str, set[tuple[int, str]]]:
        known: dict[str, set[tuple[int, str]]] = {}
        try:
            lines = self.log.read_bytes().splitlines()
        except (FileNotFoundError, NotADirectoryError):  # no log yet (a missing folder is claim's to report)
            return known
        except OSError as e:
            raise OutputError(f"{self.log}: cannot read fastseg's record of its outputs ({e.strerror or e}); "
                              "choose another --out folder") from None
        for line in lines:
            try:
                entry = json.loads(line)
                known.setdefault(str(entry["path"]), set()).add((int(entry["size"]), str(entry["sha256"])))
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: the file it announced was not replaced
        self._lines = len(lines)
        return known

    def claim(self, rels: Sequence[Path], inputs: Iterable[Path] = (), model: Path | None = None) -> None:
        """Check every destination before any work (``OutputError`` naming the first conflict), then the folder."""
        blocker = next((p for p in (self.root, *self.root.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"{self.root}: cannot create the output folder ({blocker} is a file); "
                              "choose another --out folder")
        guarded = {**_identities(inputs, "is an input image"),
                   **_identities([model] if model is not None else [], "is the model")}
        conflicts = [(self.root / rel, why) for rel in rels if (why := self._conflict(Path(rel), guarded))]
        if conflicts:
            path, why = conflicts[0]
            n = len(conflicts)
            raise OutputError(f"{path} {why}; predicting would replace it ({n} output file{'s' * (n > 1)} in the way): "
                              "predict into another --out folder, or move those files away")
        self._make_folder()
        self._compact()

    def _conflict(self, rel: Path, guarded: dict) -> str | None:
        path, key = self.root / rel, rel.as_posix()
        try:
            st = path.lstat()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return "cannot be created: a folder on its path is a file"
        try:
            target = path.stat()
            why = guarded.get((target.st_dev, target.st_ino))
        except OSError:  # a dangling symlink
            why = None
        if why:
            return why
        if stat.S_ISLNK(st.st_mode):
            return "is a symbolic link (fastseg writes only plain files)"
        if stat.S_ISDIR(st.st_mode):
            return "is a folder"
        if any(size == st.st_size for size, _ in self._known.get(key, ())):  # hash only when a size matches
            digest = (st.st_size, _file_digest(path))
            if digest in self._known[key]:
                self._current[key] = digest
                return None
        if key in self._known:
            return "was written by fastseg but has changed since (edited by hand?)"
        return "exists and was not written by fastseg"

    def _make_folder(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".fastseg-probe.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputError(f"{self.root}: cannot write there ({e.strerror or e}); choose another --out folder") from None

    def _compact(self) -> None:
        """Rewrite the log (atomically) without entries for files that are gone or were replaced since."""
        keep = {k: ({self._current[k]} if k in self._current else v) for k, v in self._known.items()
                if os.path.lexists(self.root / k)}
        lines = [json.dumps({"path": k, "size": s, "sha256": h}) for k, v in sorted(keep.items()) for s, h in sorted(v)]
        if len(lines) != self._lines:
            atomic_write_bytes(self.log, "".join(line + "\n" for line in lines).encode())
            self._known, self._lines = keep, len(lines)

    def write(self, rel: Path, data: bytes) -> Path:
        """Record ``data`` as fastseg's at ``rel``, then replace that file atomically; ``OutputError`` on failure."""
        path, key = self.root / rel, Path(rel).as_posix()
        if key not in self._current and os.path.lexists(path):
            raise OutputError(f"{path} appeared during the run and was not written by fastseg, so it was left as "
                              "it is: predict into another --out folder, or move it away")
        try:
            self._record(key, data)
            atomic_write_bytes(path, data)
        except OSError as e:
            raise OutputError(f"{path}: cannot write ({e.strerror or e}); free some disk space or choose "
                              "another --out folder") from None
        return path

    def _record(self, key: str, data: bytes) -> None:
        entry = (len(data), hashlib.sha256(data).hexdigest())
        line = (json.dumps({"path": key, "size": entry[0], "sha256": entry[1]}) + "\n").encode()
        with self._lock:
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line)  # one append of a whole line: a crash can tear only this line
            finally:
                os.close(fd)
            self._known.setdefault(key, set()).add(entry)
            self._current[key] = entry
            self._lines += 1


def prepare_outputs(items: Sequence[tuple[Path, Path]], out: str | os.PathLike, cfg: PredictConfig,
                    model: str | os.PathLike | None = None) -> OutputFolder:
    """The output folder for (image, mask path) ``items``, every destination checked (see ``OutputFolder.claim``)."""
    folder = OutputFolder(out)
    rels = [f for _, rel in items for f in output_files(rel, cfg.overlay, cfg.probs, cfg.format == "png")]
    folder.claim(rels, inputs=[src for src, _ in items], model=Path(model) if model is not None else None)
    return folder


_DONE = object()


class BackgroundWriter:
    """Runs ``write(item)`` on one thread with at most ``max_pending`` items waiting (memory stays bounded).

    The first failure stops the writing: ``put`` and ``close`` raise it, and later items are dropped.
    """

    def __init__(self, write: Callable, max_pending: int):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.results: list = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fastseg-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self.error is None:
                try:
                    self.results.append(self._write(item))
                except BaseException as e:  # handed to the main thread, which raises it
                    self.error = e

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self) -> None:
        """Wait for the pending writes; raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._thread.is_alive():
            self.error = self.error or exc  # drop what is still queued
            self._queue.put(_DONE)
            self._thread.join()
