"""Atomic writes, file hashes and the class palette (fastseg.io)."""

import hashlib
import os

import pytest

from fastseg.io import atomic_dir, atomic_path, atomic_write_bytes, default_mode, palette_for, sha256_file


def test_writes_leave_the_process_umask_alone(tmp_path, monkeypatch):
    from fastseg.io import atomic_write_bytes

    with open("/proc/self/status") as f:
        umask = int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    calls = []
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or umask)
    f = atomic_write_bytes(tmp_path / "x.bin", b"1")
    assert calls == []
    assert os.stat(f).st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_destination_as_it_was_and_no_temporary_file(tmp_path):
    dest = atomic_write_bytes(tmp_path / "sub" / "f.txt", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old" and [p.name for p in dest.parent.iterdir()] == ["f.txt"]


def test_atomic_dir_swaps_the_whole_folder_and_leaves_nothing_beside_it(tmp_path):
    dest = tmp_path / "bundle"
    for name in ("a", "b"):
        with atomic_dir(dest) as d:
            (d / name).write_text(name)
    assert [p.name for p in dest.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["bundle"]
    assert dest.stat().st_mode & 0o777 == default_mode(0o777)
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as d:
            (d / "c").write_text("c")
            raise RuntimeError
    assert [p.name for p in dest.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_sha256_and_palette(tmp_path):
    f = atomic_write_bytes(tmp_path / "x", b"abc" * 500000)  # more than one 1 MiB block
    assert sha256_file(f) == hashlib.sha256(b"abc" * 500000).hexdigest()
    pal = palette_for(4)
    colours = [tuple(pal[i:i + 3]) for i in range(0, len(pal), 3)]
    assert len(colours) == 256 and colours[0] == (0, 0, 0) and colours[255] == (255, 255, 255)
    assert len(set(colours[:32])) == 32  # the classes a data set has get distinct colours
