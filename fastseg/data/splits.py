"""Train, validation and test splits: one function decides all three, so test images never train.

Precedence: the layout's own lists (SegNet folders, VOC ImageSets), then ``test.txt`` and
``valid.txt`` in the data folder, then a seeded random validation share of what is left.
``test.txt`` takes its images out of training and validation before anything else is chosen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .layouts import Found, Sample

__all__ = ["Splits", "make_splits", "check_splits"]


@dataclass(frozen=True)
class Splits:
    train: tuple[Sample, ...]
    valid: tuple[Sample, ...]
    test: tuple[Sample, ...]  # never trained on: the layout's own test split plus test.txt's images
    source: str  # where the split came from, in words


def _names(path: Path) -> list[str]:
    return [n for n in (line.strip() for line in path.read_text().splitlines()) if n]


def _listed(path: Path, pairs: list[Sample], root: Path) -> list[Sample]:
    """The samples ``path`` names (image names or stems, one per line), in ``pairs`` order."""
    by_key = {}
    for s in pairs:
        by_key[s.image.name] = s
        by_key[s.image.stem] = s
    names = _names(path)
    unknown = [n for n in names if n not in by_key and Path(n).stem not in by_key]
    if unknown:
        raise DataError(f"{path}: names no image in {root} ({', '.join(unknown[:3])}"
                        f"{' ...' if len(unknown) > 3 else ''}) (list image names or stems, one per line)")
    chosen = {by_key.get(n, by_key.get(Path(n).stem)).image for n in names}
    return [s for s in pairs if s.image in chosen]


def _valid(pool: list[Sample], root: Path, valid_pct: float, seed: int) -> tuple[list[Sample], str]:
    """valid.txt's images, else a seeded random ``valid_pct`` of ``pool``."""
    valid_file = root / "valid.txt"
    if valid_file.is_file():
        valid = _listed(valid_file, pool, root)
        return valid, f"valid.txt ({len(valid)} images)"
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    chosen = set(order[:max(1, round(len(pool) * valid_pct))]) if pool else set()
    return [s for i, s in enumerate(pool) if i in chosen], f"random {valid_pct:.0%} (seed {seed})"


def make_splits(found: Found, root: Path, valid_pct: float, seed: int) -> Splits:
    """Train/valid/test from the layout's own lists, ``test.txt``, ``valid.txt`` and ``valid_pct``."""
    pool = found.splits.get("all") or [*found.splits.get("train", []), *found.splits.get("valid", [])]
    test = list(found.splits.get("test", []))
    test_file = root / "test.txt"
    listed = _listed(test_file, pool, root) if test_file.is_file() else []
    test += [s for s in listed if s not in test]
    held_out = {s.image for s in listed}
    if "valid" in found.splits:
        valid = [s for s in found.splits["valid"] if s.image not in held_out]
        how = found.split_source or "the layout's split"
    else:
        listed_valid = (root / "valid.txt").is_file()  # checked against test.txt below, not silently trimmed
        candidates = pool if listed_valid else [s for s in pool if s.image not in held_out]
        valid, how = _valid(candidates, root, valid_pct, seed)
        both = [s for s in valid if s.image in held_out]
        if both:
            raise DataError(f"{root / 'valid.txt'}: names {len(both)} image(s) that test.txt also names, e.g. "
                            f"{both[0].image.name} (an image is either validation or test: remove it from one list)")
    chosen = held_out | {s.image for s in valid}
    train = [s for s in (found.splits.get("all") or found.splits["train"]) if s.image not in chosen]
    if listed:
        how += f"; test.txt ({len(listed)} images, never trained on)"
    return Splits(tuple(train), tuple(valid), tuple(test), how)


def check_splits(root: Path, train: list[Sample], valid: list[Sample]) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the split itself."""
    if not valid:
        return [f"{root}: the validation set is empty (list images in valid.txt or raise --valid-pct)"], []
    if not train:
        return [f"{root}: every image is in the validation set (nothing is left to train on; shorten valid.txt)"], []
    t, v = {s.image.stem for s in train}, {s.image.stem for s in valid}
    if t == v:
        return [f"{root}: the validation set is the training set ({len(v)} images with the same names) "
                "(validate on images the model does not train on)"], []
    both = t & v
    return [], [f"Warning: {root}: {len(both)} validation image name(s) also in training, e.g. {sorted(both)[0]}"] if both else []
