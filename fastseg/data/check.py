"""``fastseg check``: what fastseg would train on, and every problem that would stop it.

``check(root, ...)`` runs the same discovery as ``fit`` (``fastseg.data.dataset.inspect_data``) and returns a
``CheckReport``: layout, counts per split (test never trains), classes with their pixel share, the mapping applied,
the void class, warnings and problems. ``ok`` is True when the data is trainable.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from .dataset import inspect_data
from ..errors import DataError

__all__ = ["ClassShare", "CheckReport", "check"]


@dataclass(frozen=True)
class ClassShare:
    name: str
    index: int | None  # class index in the masks fastseg trains on; None for the void row
    pixels: int  # over train + valid (+ test)
    share: float  # of all pixels, void included
    train_pixels: int


@dataclass(frozen=True)
class CheckReport:
    root: str
    ok: bool
    layout: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # split -> images
    split_source: str = ""
    classes: tuple[ClassShare, ...] = ()
    mapping: tuple[str, ...] = ()
    void: str | None = None  # what is void, in words
    min_side: int | None = None
    image_values: str | None = None  # how 16-bit/float images are scaled to 0-255 (None: 8-bit images only)
    channels: int | None = None  # the model's input channels: 3 for 8-bit sets read as RGB, else the images' own
    dtype: str | None = None  # the images' stored value types, e.g. "uint8" or "uint8, uint16"
    stats: dict | None = None  # {"mean": [...], "std": [...]} per channel of sets not read as RGB; None: ImageNet's
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def check(root: str | os.PathLike, valid_pct: float = 0.2, seed: int = 42, *, layout: str = "auto",
          colors: str | None = None, void: str | None = None, ignore_index: int | None = None) -> CheckReport:
    """Inspect a data folder (read-only) and report; never raises ``DataError``, reports it instead."""
    start = time.perf_counter()
    try:
        spec, problems = inspect_data(root, valid_pct, seed, layout=layout, colors=colors, void=void,
                                      ignore_index=ignore_index)
    except DataError as e:
        return CheckReport(root=str(root), ok=False, problems=(str(e),), seconds=time.perf_counter() - start)
    if spec is None:
        return CheckReport(root=str(root), ok=False, problems=tuple(problems), seconds=time.perf_counter() - start)
    parts = {"train": spec.train, "valid": spec.valid, "test": spec.test}
    per_split = [spec.class_pixels[s] for s in parts if s in spec.class_pixels]
    totals = [sum(col) for col in zip(*per_split)]
    grand = max(1, sum(totals))
    train = spec.class_pixels.get("train", [0] * len(totals))
    classes = [ClassShare(name, i, totals[i], totals[i] / grand, train[i]) for i, name in enumerate(spec.codes)]
    if totals[-1]:
        classes.append(ClassShare("(void)", None, totals[-1], totals[-1] / grand, train[-1]))
    void_words = " and ".join(filter(None, [f"class '{spec.void_code}'" if spec.void_code else None,
                                            "mask value 255" if spec.lut[255] == 255 else None]))
    return CheckReport(root=str(spec.root), ok=not problems, layout=spec.layout,
                       counts={s: len(v) for s, v in parts.items() if v or s != "test"},
                       split_source=spec.split_source, classes=tuple(classes), mapping=spec.mapping,
                       void=void_words or None, min_side=spec.min_side,
                       image_values=spec.scaling.why if spec.scaling.top is not None else None, warnings=spec.warnings,
                       channels=spec.channels, dtype=", ".join(spec.dtypes) or None,
                       stats=None if spec.stats is None else {"mean": list(spec.stats[0]), "std": list(spec.stats[1])},
                       problems=tuple(problems), seconds=time.perf_counter() - start)
