"""Progressive resizing: when a run trains its first epochs on half-size crops, and how many steps it takes.

Half-size random crops cost about a quarter of a full-size step, so early training (which learns
local texture) takes 3-4x the optimiser steps in the same time; the last part at full size gives
back the context. ``fastseg.train.loop.plan_phases`` splits the epochs; this module holds the rule that
decides whether to split, and the step count that ``--aug auto`` and the notices use.
"""

from __future__ import annotations

from ..config import FitConfig

__all__ = ["PROGRESSIVE_SHARE", "PROGRESSIVE_MIN_EPOCHS", "PROGRESSIVE_LR_DIV", "progressive_size",
           "small_epochs", "crops_per_image", "optimiser_steps"]

PROGRESSIVE_SHARE = 0.65  # of the trained epochs on half-size crops (ISBI, seeds 42/1: 0.772/0.748 vs 0.744/0.746 at 0.5)
PROGRESSIVE_MIN_EPOCHS = 4  # shorter runs leave too little of either part to be worth the switch
PROGRESSIVE_LR_DIV = 4  # the full-size part refines: at the full peak LR its first epochs undid the half-size part


def progressive_size(cfg: FitConfig, spec, size: int, minimum: int = 32) -> tuple[int | None, str]:
    """The crop side of the first, cheap part of a progressive-resizing run (``None``: off), and why.

    ``auto`` needs images at least twice the crop side (crops are then windows of larger images:
    nothing is down-scaled). ``spec``: anything with the data set's ``min_side``; ``minimum``: the
    model's smallest input side (``fastseg.model.input_rule``)."""
    small = (size // 2) // 32 * 32
    epochs = cfg.epochs
    if cfg.progressive == "off":
        return None, "--progressive off"
    least = max(32, minimum)
    if small < least:
        return None, f"no half-size crop for size {size} (crops must be multiples of 32{f', at least {least}' * (least > 32)})"
    if epochs < PROGRESSIVE_MIN_EPOCHS:
        return None, f"{epochs} epochs < {PROGRESSIVE_MIN_EPOCHS}"
    if cfg.progressive == "auto" and spec.min_side < 2 * size:
        return None, f"auto: smallest image side {spec.min_side} < 2 x crop {size}"
    why = "--progressive on" if cfg.progressive == "on" else f"auto: images >= 2 x crop {size}"
    return small, why


def small_epochs(epochs: int) -> int:
    """How many of ``epochs`` trained epochs run on half-size crops (0: the run cannot be split)."""
    n = int(epochs * PROGRESSIVE_SHARE)
    return n if 1 <= n < epochs else 0


def crops_per_image(size: int, small: int) -> int:
    """Half-size crops per image per epoch: as many pixels as one full-size crop, about the same cost."""
    return round((size / small) ** 2)


def optimiser_steps(cfg: FitConfig, spec, size: int, bs: int) -> int:
    """The optimiser steps of ``cfg.epochs`` trained epochs, counting the half-size part's extra crops."""
    n_train = len(spec.train)
    full = max(1, n_train // bs)
    small, _ = progressive_size(cfg, spec, size)
    n_small = small_epochs(cfg.epochs) if small else 0
    if not n_small:
        return cfg.epochs * full
    return n_small * max(1, n_train * crops_per_image(size, small) // bs) + (cfg.epochs - n_small) * full
