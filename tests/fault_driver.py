"""Run ``fastseg fit`` and stop, blocked, at one named point, so a test can SIGKILL it exactly there.

From a test: ``kill_at(POINT, fit options, cwd)`` runs ``python tests/fault_driver.py POINT OPTIONS...``,
which patches its own copy of fastseg and runs ``fastseg fit OPTIONS``. At POINT it prints
``FAULT-POINT POINT`` and blocks; the test reads that line (an event, not a sleep) and SIGKILLs it.
In the driver every epoch counts as a new best (so best.pth is written at every epoch), and the points
in training and in the checkpoint writes wait for the second epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

POINTS = ("mid-epoch", "in-best-write", "in-last-write", "before-promote", "export-run", "export-copy")
WATCHDOG_S = 600  # a driver that never reports is killed, so a broken test fails instead of hanging


def kill_at(point: str, args: list[str], cwd: Path) -> None:
    """Run ``fastseg fit ARGS`` in the driver until it reports ``point``, then SIGKILL it."""
    assert point in POINTS, f"unknown point {point}; one of {POINTS}"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    log = Path(cwd) / f"driver-{point}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, __file__, point, *args], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=err)
        watchdog = threading.Timer(WATCHDOG_S, proc.kill)
        watchdog.start()
        try:
            reached = any(line.strip() == f"FAULT-POINT {point}" for line in proc.stdout)
        finally:
            watchdog.cancel()
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert reached, f"the fit ended before {point}:\n{log.read_text()[-3000:]}"


def hold(point: str) -> None:
    print(f"\nFAULT-POINT {point}", flush=True)  # on a line of its own: a progress bar may be mid-line
    threading.Event().wait()  # until SIGKILL


def patch(point: str) -> None:
    from fastai.callback.core import Callback

    import fastseg.train.callbacks
    import fastseg.export.formats
    import fastseg.export.publish
    import fastseg.train.loop

    best_init = fastseg.train.callbacks.BestCheckpoint.__init__

    def every_epoch_best(self, *args, **kwargs):
        best_init(self, *args, **kwargs)
        self.comp = lambda value, best: True

    fastseg.train.callbacks.BestCheckpoint.__init__ = every_epoch_best
    if point == "mid-epoch":
        cbs = fastseg.train.loop.training_cbs

        class Hold(Callback):
            def after_batch(self):
                if self.training and self.epoch == 1:
                    hold(point)

        fastseg.train.loop.training_cbs = lambda cfg: [*cbs(cfg), Hold()]
    elif point in ("in-best-write", "in-last-write", "before-promote"):
        patch_checkpoints(point)
    elif point == "export-run":
        fastseg.export.formats.export_bundle_beside = lambda learn, pkl: hold(point)
    elif point == "export-copy":
        fastseg.export.publish.atomic_dir = lambda dest: hold(point)


def patch_checkpoints(point: str) -> None:
    import torch

    import fastseg.train.runs

    save = fastseg.train.runs._save

    def held_save(dest, payload):
        epoch = payload.get("epoch") if dest.name == fastseg.train.runs.LAST else payload.get("epoch", -1) + 1
        if epoch != 2:
            return save(dest, payload)
        if (point, dest.name) in (("in-best-write", fastseg.train.runs.BEST_NEXT), ("in-last-write", fastseg.train.runs.LAST)):
            with fastseg.train.runs.atomic_path(dest) as tmp:  # written, not yet renamed into place
                torch.save(payload, tmp)
                hold(point)
        save(dest, payload)
        if point == "before-promote" and dest.name == fastseg.train.runs.LAST:
            hold(point)

    fastseg.train.runs._save = held_save


if __name__ == "__main__":
    from fastseg.cli import main

    point, *args = sys.argv[1:]
    patch(point)
    main(["fit", *args], prog_name="fastseg")
