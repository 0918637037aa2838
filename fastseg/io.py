"""Small file helpers shared by every writer: atomic writes and the class palette."""

from __future__ import annotations

import colorsys
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_dir", "atomic_write_bytes", "default_mode", "sha256_file", "palette_for"]


@contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it over ``dest``.

    A crash or an exception leaves ``dest`` as it was (never half-written).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if Path(tmp).is_file():
            os.chmod(tmp, default_mode(0o666))  # mkstemp makes 0600 files; use the usual umask-based mode
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    """The process umask, read once at import: setting it to read it back is a race with other threads."""
    try:
        with open("/proc/self/status") as f:  # Linux: readable without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


UMASK = _read_umask()


@contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; on success swap it in for ``dest`` as a whole.

    A crash leaves ``dest`` as it was, or (killed between the two renames) absent with the old
    copy in a hidden ``.<name>.old.*`` folder beside it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, default_mode(0o777))  # mkdtemp makes 0700 folders; the result is meant to be shared
    try:
        yield tmp
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / "b")
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_mode(base: int) -> int:
    """``base`` (0o666 for files, 0o777 for folders) less the process umask, as open()/mkdir() would give."""
    return base & ~UMASK


def atomic_write_bytes(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def palette_for(n_classes: int) -> list[int]:
    """A flat 768-int PIL palette: class 0 black, others well-separated hues, 255 (void) white."""
    pal = [0, 0, 0]
    for i in range(1, 255):
        h = ((i - 1) * 0.618034) % 1.0  # golden-ratio hue steps stay distinct for many classes
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
        pal += [int(r * 255), int(g * 255), int(b * 255)]
    pal += [255, 255, 255]
    return pal
