"""Sliding-window inference: overlapping tiles, blended with weights that fall off towards tile edges.

Pixels near a tile's border see less context and are predicted worse; a trapezoid weight window
lets the tile that sees a pixel best dominate, so seams between tiles disappear.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["tile_starts", "blend_window", "tiled_probs"]


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


def tiled_probs(probs_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: float,
                bs: int) -> torch.Tensor:
    """Blend ``probs_fn`` (N x 3 x h x w -> N x K x h x w) over overlapping tiles of each image in ``x``."""
    n, _, H, W = x.shape
    th, tw = min(tile, H), min(tile, W)
    stride = max(1, round(tile * (1 - overlap)))
    boxes = [(y, xx) for y in tile_starts(H, th, stride) for xx in tile_starts(W, tw, stride)]
    weight = blend_window(th, tw, device=x.device)
    outs = []
    for k in range(n):
        acc = wsum = None
        for b in range(0, len(boxes), bs):
            chunk = boxes[b:b + bs]
            p = probs_fn(torch.stack([x[k, :, y:y + th, xx:xx + tw] for y, xx in chunk]))
            if acc is None:
                acc = torch.zeros(p.shape[1], H, W, device=p.device)
                wsum = torch.zeros(H, W, device=p.device)
            w = weight.to(p.device)
            for (y, xx), pk in zip(chunk, p):
                acc[:, y:y + th, xx:xx + tw] += pk * w
                wsum[y:y + th, xx:xx + tw] += w
        outs.append(acc / wsum)
    return torch.stack(outs)
