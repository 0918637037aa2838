"""Tiled prediction (fastseg.infer.tiling): tile positions, the blending window, rows streamed as they finish."""

import numpy as np
import torch

from fastseg.infer.tiling import blend_window, tile_starts, tiled_rows


def test_tiled_rows_stream_and_match_the_whole_blend():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (150, 110, 3), dtype=np.uint8)
    calls = []

    def probs_fn(tiles):  # any deterministic function of the tile will do
        calls.append(len(tiles))
        t = torch.from_numpy(tiles).float().permute(0, 3, 1, 2)
        return torch.softmax(t / 64, dim=1)

    rows, seen_at = [], []
    for y, p in tiled_rows(probs_fn, image, 32, 0.25, 4):
        rows.append((y, p))
        seen_at.append(len(calls))
    n_tiles = len(tile_starts(150, 32, 24)) * len(tile_starts(110, 32, 24))
    assert seen_at[0] < n_tiles  # the first rows come out long before the last tile is computed
    assert [y for y, _ in rows] == sorted(y for y, _ in rows) and rows[0][0] == 0
    assert max(p.shape[1] for _, p in rows) <= 32 + 24 * 2  # never more than a few tile heights held
    got = torch.cat([p for _, p in rows], dim=1)
    # the reference: one accumulator over the whole image, as before
    acc, wsum, w = torch.zeros(3, 150, 110), torch.zeros(150, 110), blend_window(32, 32)
    for y in tile_starts(150, 32, 24):
        for x in tile_starts(110, 32, 24):
            acc[:, y:y + 32, x:x + 32] += probs_fn(image[None, y:y + 32, x:x + 32])[0] * w
            wsum[y:y + 32, x:x + 32] += w
    assert torch.equal(got, acc / wsum)


def test_tiling_blends_to_the_whole_image_result_for_a_local_model():
    from fastseg.infer.predictor import Predictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    pred = Predictor(net, ["a", "b", "c"], [0.5] * 3, [0.25] * 3, device=torch.device("cpu"))
    img = np.random.default_rng(0).integers(0, 255, (256, 200, 3), dtype=np.uint8)
    (whole,), (wp,) = pred.predict([img], probs=True)
    (tiled,), (tp,) = pred.predict([img], tile=64, overlap=0.25, bs=5, probs=True)
    assert tiled.shape == (256, 200)
    # a 5-pixel receptive field: only pixels at inner tile borders (weighted down) can differ
    assert np.abs(tp.astype(np.float32) - wp.astype(np.float32)).mean() < 1e-3
    assert (tiled == whole).mean() > 0.995


def test_tile_starts_cover_the_length_and_end_flush():
    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]  # the last tile moves back to end at the border
    assert tile_starts(64, 32, 32) == [0, 32]
    assert tile_starts(20, 32, 24) == [0]  # shorter than a tile: one tile (padded by the caller)
    for length in (33, 50, 97, 150):
        starts = tile_starts(length, 32, 24)
        assert starts[-1] + 32 == length and all(b - a <= 24 for a, b in zip(starts, starts[1:]))


def test_blend_window_weighs_the_centre_and_never_zero():
    w = blend_window(32, 48)
    assert w.shape == (32, 48) and float(w.min()) > 0
    assert float(w[16, 24]) == float(w.max()) and float(w[0, 0]) == float(w.min())
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1))  # symmetric: no side of a tile favoured
