"""Stand-in run folders for the export-publishing tests: a small model.pkl and its bundle, no training."""

from __future__ import annotations

import json
from pathlib import Path

from fastseg.export.bundle import INFO_FILE, WEIGHTS_FILE, bundle_path_for
from fastseg.io import sha256_file


def fake_run(folder: Path, tag: str) -> Path:
    """A run folder holding a small stand-in model.pkl (a zip, like torch.save's) and its bundle."""
    import zipfile

    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    pkl = folder / "model.pkl"
    with zipfile.ZipFile(pkl, "w") as z:
        z.writestr("archive/data.pkl", tag * 1000)
    (folder / "model").mkdir()
    (folder / "model" / WEIGHTS_FILE).write_bytes(tag.encode() * 1000)
    info = {"codes": ["a", "b"], "run": str(folder), "pkl_sha256": sha256_file(pkl)}
    (folder / "model" / INFO_FILE).write_text(json.dumps(info))
    return pkl


def assert_pair(dest: Path, run_pkl: Path) -> None:
    """``dest`` and its bundle are one pair, copied from ``run_pkl`` and its bundle."""
    info = json.loads((bundle_path_for(dest) / INFO_FILE).read_text())
    assert sha256_file(dest) == info["pkl_sha256"] == sha256_file(run_pkl)
    assert sha256_file(bundle_path_for(dest) / WEIGHTS_FILE) == sha256_file(bundle_path_for(run_pkl) / WEIGHTS_FILE)
