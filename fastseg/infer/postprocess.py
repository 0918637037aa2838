"""Cleaning predicted masks: small regions removed, holes filled (``--min-area N``, ``--fill-holes``).

Both work per class on the class-index mask, with scipy.ndimage:

- ``remove_small_regions``: every connected region (8-connected: a diagonal step stays in the region, so thin
  diagonal structures are not cut into specks) of any class with fewer than ``min_area`` pixels takes the class
  most of its surrounding pixels have (ties: the lower class index). The surroundings, not the background:
  a speck inside a cell becomes cell, where background would punch a hole into it. A region whose
  surroundings are all removed regions too waits for them; one with nothing left around it stays.
- ``fill_holes``: background pixels (class index 0, the first class) enclosed by a region of another class
  become that class, the innermost one when regions nest. Only background is filled: a region of another
  class inside (a nucleus in a cell) is structure, not a hole, and stays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["postprocess", "remove_small_regions", "fill_holes", "BACKGROUND", "describe"]

BACKGROUND = 0  # class index of the background: the first class, by the convention of the layouts fastseg reads
EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def describe(min_area: int, fill: bool) -> str:
    """What the options do, for the CLI to say: ``regions < 50 px merged into their surroundings, holes filled``."""
    parts = ([f"regions < {min_area} px merged into their surroundings"] if min_area > 0 else []) + \
        (["background holes inside regions filled"] if fill else [])
    return ", ".join(parts)


def postprocess(mask: np.ndarray, min_area: int = 0, fill: bool = False) -> np.ndarray:
    """``mask`` with small regions removed (``min_area`` > 0), then holes filled (``fill``); a new array."""
    out = remove_small_regions(mask, min_area) if min_area > 0 else mask.copy()
    return fill_holes(out) if fill else out


def _small_regions(mask: np.ndarray, min_area: int) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """(window, region pixels in that window) of every region under ``min_area`` px; the window has a
    one-pixel margin (where the image allows) to see the surroundings."""
    from scipy import ndimage

    found = []
    for c in np.unique(mask):
        labels, _ = ndimage.label(mask == c, structure=EIGHT)
        sizes = np.bincount(labels.ravel())
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is not None and sizes[i] < min_area:
                window = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
                found.append((window, labels[window] == i))
    return found


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Regions of fewer than ``min_area`` pixels take the majority class of their surroundings (see module doc)."""
    from scipy import ndimage

    out = mask.copy()
    regions = _small_regions(mask, min_area)
    pending = np.zeros(mask.shape, bool)
    for window, region in regions:
        pending[window] |= region
    while regions:
        decided, waiting = [], []
        for window, region in regions:
            ring = ndimage.binary_dilation(region, structure=EIGHT) & ~region & ~pending[window]
            (decided if ring.any() else waiting).append((window, region, ring))
        if not decided:  # nothing but removed regions around the rest: they stay as predicted
            break
        values = [np.bincount(out[w][ring]).argmax() for w, _, ring in decided]  # all decided before any write
        for (window, region, _), value in zip(decided, values):
            out[window][region] = value
            pending[window] &= ~region
        regions = [(w, r) for w, r, _ in waiting]
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Background pixels enclosed by a region of another class take that class; the innermost region wins."""
    from scipy import ndimage

    out = mask.copy()
    background = mask == BACKGROUND
    best = np.full(mask.shape, np.inf)  # area of the smallest filled region enclosing each pixel so far
    for c in np.unique(mask):
        if c == BACKGROUND:
            continue
        filled = ndimage.binary_fill_holes(mask == c)
        holes = filled & background
        if not holes.any():
            continue
        labels, _ = ndimage.label(filled, structure=EIGHT)
        area = np.bincount(labels.ravel())[labels]
        inner = holes & (area < best)
        out[inner], best[inner] = c, area[inner]
    return out
