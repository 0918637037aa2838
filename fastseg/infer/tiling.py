"""Sliding-window inference: overlapping tiles, blended with weights that fall off towards tile edges.

Pixels near a tile's border see less context and are predicted worse; a trapezoid weight window
lets the tile that sees a pixel best dominate, so seams between tiles disappear.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

__all__ = ["tile_starts", "blend_window", "tiled_rows"]


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``[0, length)``; the last tile is flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, max(1, stride)))
    return starts + [length - tile]


def blend_window(h: int, w: int, device=None) -> torch.Tensor:
    """h x w trapezoid weights: rising linearly over the outer quarter of each side, 1 in the middle."""
    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32, device=device)
        edge = torch.minimum(i + 0.5, n - i - 0.5)
        return (edge / max(n / 4, 1.0)).clamp(max=1.0)

    return ramp(h)[:, None] * ramp(w)[None, :]


def tiled_rows(probs_fn: Callable[[np.ndarray], torch.Tensor], image: np.ndarray, tile: int, overlap: float,
               bs: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Blend ``probs_fn`` (N x h x w x channels tiles -> N x K x h x w) over overlapping tiles of one image.

    ``image`` (H x W x channels, as the predictor decodes it) stays on the host and only ``bs`` tiles at a time reach ``probs_fn``.
    Yields (first row, K x rows x W float32 probabilities on the CPU) in order as soon as no later tile
    can touch those rows, so the blend needs memory for about a tile's height of rows, not the image.
    """
    H, W = image.shape[:2]
    th, tw = min(tile, H), min(tile, W)
    stride = max(1, round(tile * (1 - overlap)))
    boxes = [(y, x) for y in tile_starts(H, th, stride) for x in tile_starts(W, tw, stride)]
    weight = blend_window(th, tw)
    top, acc, wsum = 0, None, torch.zeros(0, W)  # rows from `top` down that tiles have touched so far
    for b in range(0, len(boxes), bs):
        chunk = boxes[b:b + bs]
        p = probs_fn(np.stack([image[y:y + th, x:x + tw] for y, x in chunk])).float().cpu()
        grow = chunk[-1][0] + th - top - wsum.shape[0]
        if grow > 0:
            acc = torch.cat([acc if acc is not None else torch.zeros(p.shape[1], 0, W), torch.zeros(p.shape[1], grow, W)], 1)
            wsum = torch.cat([wsum, torch.zeros(grow, W)])
        for (y, x), pk in zip(chunk, p):
            acc[:, y - top:y - top + th, x:x + tw] += pk * weight
            wsum[y - top:y - top + th, x:x + tw] += weight
        done = (boxes[b + bs][0] if b + bs < len(boxes) else H) - top  # later tiles all start at or below
        if done > 0:
            yield top, acc[:, :done] / wsum[:done]
            top, acc, wsum = top + done, acc[:, done:], wsum[done:]
