"""Training batches cut on the device: crops, flips and normalisation as a few batched tensor ops.

fastai's path builds every batch item by item in Python (a PIL crop, a tensor, a collate) and then runs
its batch transforms; on a GPU that per-item work takes longer than the training step. Here the decoded
set is held as uint8 tensors, on the GPU when it fits in ``DEVICE_CACHE_SHARE`` of its free memory, else
in pinned host memory (batches then travel to the GPU without blocking), and a batch is one gather: the
crop windows and their dihedral flips become one index tensor through which images and masks are read
alike (a label stays with its pixel, void 255 included), then scaled and normalised exactly as fastai's
``IntToFloatTensor`` + ``Normalize`` do. No worker processes, nothing per item.

Scope: augmentation ``none`` and ``flips`` (the ``full`` recipe's rotations, zoom, warp and lighting stay
on fastai's path), images at least as large as the crop (fastai's path resizes smaller ones), training
only: ``learn.export`` and ``learn.predict`` need fastai's item pipeline, so a learner keeps its fastai
DataLoaders and these are swapped in while it fits (as progressive resizing swaps its loaders).
``choose_data_path`` says when to use it; ``CropStore.from_spec`` + ``device_dataloaders`` build it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import TensorImage, TensorMask

from ..errors import ConfigError, DataError

__all__ = ["DEVICE_CACHE_SHARE", "FLIP_P", "DEVICE_AUGS", "CropStore", "CropSet", "DeviceDL", "choose_data_path",
           "crop_windows", "window_index", "cut", "device_dataloaders"]

DEVICE_CACHE_SHARE = 0.25  # the set goes on the GPU when it needs at most this share of free GPU memory: the rest
# is for the model, its activations and --bs auto's probes (which run after the set is placed)
FLIP_P = 0.5  # an item is turned with this probability, then to one of the 8 dihedral orientations uniformly:
# fastai's Dihedral(p=0.5) in aug_transforms, which the flips level of fastai's path uses
DEVICE_AUGS = ("none", "flips")  # exact pixel moves; the full recipe resamples and stays on fastai's path
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # fastai's imagenet_stats, as fastseg normalises


@dataclass
class CropStore:
    """A decoded data set as one table of pixels: ``pixels`` P x C and ``labels`` P (uint8), the images one
    after the other, row-major; ``start``, ``height``, ``width``: each image's first row and shape (CPU).
    Images ``0..n_train-1`` are the training set, the rest validation. ``device``: where batches go;
    ``pixels`` is there too (``where == "device"``) or in host memory (``"host"``, pinned for CUDA).
    ``mean``/``std``: 1 x C x 1 x 1 on ``device``, in 0-1 units (fastai's Normalize)."""

    pixels: torch.Tensor
    labels: torch.Tensor
    start: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    n_train: int
    device: torch.device
    where: str
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def min_side(self) -> int:
        return int(torch.minimum(self.height, self.width).min()) if len(self.height) else 0

    @classmethod
    def from_arrays(cls, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], n_train: int,
                    device="cpu", where: str = "device", stats=IMAGENET_STATS) -> "CropStore":
        """The store of ``images`` (H x W x C or H x W uint8) and their class-index ``masks`` (H x W)."""
        device = torch.device(device)
        shapes = [_check_pair(i, img, mask) for i, (img, mask) in enumerate(zip(images, masks, strict=True))]
        channels = {c for _, _, c in shapes}
        if len(channels) > 1:
            raise DataError(f"images have different channel counts {sorted(channels)}; the device cache needs one")
        c = channels.pop() if channels else 3
        if len(stats[0]) != c or len(stats[1]) != c:
            raise ConfigError(f"normalisation stats have {len(stats[0])} values but the images have {c} channels "
                              "(give one mean and one std per channel)")
        sizes = torch.tensor([[h, w] for h, w, _ in shapes], dtype=torch.long).reshape(-1, 2)
        area = sizes[:, 0] * sizes[:, 1]
        start = torch.cumsum(area, 0) - area
        home = device if where == "device" else torch.device("cpu")
        pin = where == "host" and device.type == "cuda"
        pixels = torch.empty((int(area.sum()), c), dtype=torch.uint8, device=home, pin_memory=pin)
        labels = torch.empty(int(area.sum()), dtype=torch.uint8, device=home, pin_memory=pin)
        for a, n, img, mask in zip(start.tolist(), area.tolist(), images, masks):
            pixels[a:a + n].copy_(torch.from_numpy(np.require(img, requirements="CW")).reshape(n, c))
            labels[a:a + n].copy_(torch.from_numpy(np.require(mask, requirements="CW")).reshape(n))
        mean, std = (torch.tensor(s, dtype=torch.float32, device=device).view(1, c, 1, 1) for s in stats)
        return cls(pixels, labels, start, sizes[:, 0].clone(), sizes[:, 1].clone(), n_train, device, where, mean, std)

    @classmethod
    def from_spec(cls, spec, device="cpu", where: str = "device", getters=None, stats=IMAGENET_STATS) -> "CropStore":
        """The store of a ``DataSpec``'s training then validation pairs, decoded as fastai's path decodes them
        (``getters``: fastseg's ``(ImageForPath, MaskForImage)`` whose RAM cache to reuse instead of decoding)."""
        from ..data.dataset import SCAN_THREADS, read_image

        get_x, get_y = getters or (None, None)
        decoder = spec.decoder

        def decode(sample):
            img = get_x.cache.get(str(sample.image)) if get_x is not None else None
            mask = get_y.cache.get(str(sample.image)) if get_y is not None else None
            return (read_image(sample.image, spec.scaling) if img is None else img,
                    decoder(sample.mask) if mask is None else mask)

        samples = [*spec.train, *spec.valid]
        with ThreadPoolExecutor(SCAN_THREADS) as pool:  # PIL decodes with the GIL released
            pairs = list(pool.map(decode, samples))
        return cls.from_arrays([p[0] for p in pairs], [p[1] for p in pairs], len(spec.train), device, where, stats)


def _check_pair(i: int, img: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """(height, width, channels) of pair ``i``, refusing what the store cannot hold."""
    if img.dtype != np.uint8 or mask.dtype != np.uint8:
        raise DataError(f"pair {i}: the device cache holds uint8 images and masks, got {img.dtype} and {mask.dtype}")
    if img.shape[:2] != mask.shape[:2] or mask.ndim != 2 or img.ndim not in (2, 3):
        raise DataError(f"pair {i}: image {img.shape} and mask {mask.shape} differ in size (they must match pixel "
                        "for pixel)")
    return img.shape[0], img.shape[1], img.shape[2] if img.ndim == 3 else 1


def crop_windows(store: CropStore, rows: torch.Tensor, size: int, gen: torch.Generator | None = None,
                 flips: bool = False) -> torch.Tensor:
    """m x 3 long (CPU), one line per crop: the store row of its top-left pixel, its image's width, and its
    dihedral element 0-7. Random windows and (``flips``) turns from ``gen``; centre crops when ``gen`` is
    None (fastai's RandomCrop on validation items: top-left = (side - size) // 2)."""
    h, w = store.height[rows], store.width[rows]
    if gen is None:
        top, left, turn = (h - size) // 2, (w - size) // 2, torch.zeros_like(h)
    else:
        top = (torch.rand(len(rows), generator=gen, dtype=torch.float64) * (h - size + 1)).long()
        left = (torch.rand(len(rows), generator=gen, dtype=torch.float64) * (w - size + 1)).long()
        turn = torch.randint(8, (len(rows),), generator=gen)
        turn = turn * (torch.rand(len(rows), generator=gen) < FLIP_P) if flips else torch.zeros_like(turn)
    return torch.stack([store.start[rows] + top * w + left, w, turn], 1)


def window_index(windows: torch.Tensor, size: int) -> torch.Tensor:
    """B x size x size store rows: each window's pixels in the orientation of its dihedral element (bit 0
    reverses columns, bit 1 rows, bit 2 transposes; together the 8 flips/rotations). Separable: the row of
    the output picks one offset, its column another, so one broadcast add makes the whole index."""
    first, width, turn = windows.unbind(1)
    ar = torch.arange(size, device=windows.device)
    rows = torch.where((turn & 2).bool()[:, None], size - 1 - ar, ar) * width[:, None]  # B x size source row offsets
    cols = torch.where((turn & 1).bool()[:, None], size - 1 - ar, ar)
    swap = (turn & 4).bool()[:, None]
    down, across = torch.where(swap, cols, rows), torch.where(swap, rows, cols)
    return first[:, None, None] + down[:, :, None] + across[:, None, :]


def cut(store: CropStore, windows: torch.Tensor, size: int) -> tuple[TensorImage, TensorMask]:
    """One batch: the windows' pixels and labels through one index, normalised on ``store.device``.

    The image comes out N x C x H x W in channels_last memory (what the model trains in), float32
    ``(x / 255 - mean) / std`` as fastai's IntToFloatTensor + Normalize compute it; the mask int64."""
    idx = window_index(windows, size).view(-1)
    n, c = len(windows), store.pixels.shape[1]
    if store.where == "device":
        x, y = store.pixels.index_select(0, idx), store.labels.index_select(0, idx)
    else:  # gather into pinned buffers on the host, copy without blocking (the allocator tracks the copy)
        pin = store.device.type == "cuda"
        x = torch.index_select(store.pixels, 0, idx, out=torch.empty((len(idx), c), dtype=torch.uint8, pin_memory=pin))
        y = torch.index_select(store.labels, 0, idx, out=torch.empty(len(idx), dtype=torch.uint8, pin_memory=pin))
        x, y = x.to(store.device, non_blocking=True), y.to(store.device, non_blocking=True)
    x = x.view(n, size, size, c).permute(0, 3, 1, 2).float().div_(255.0).sub_(store.mean).div_(store.std)
    return TensorImage(x), TensorMask(y.view(n, size, size).long())


class CropSet:
    """A ``DeviceDL``'s items: store ``rows`` cut at ``size``, random windows (and ``flips``) drawn from a
    generator seeded with ``seed`` for training (``train``), centre crops for validation."""

    def __init__(self, store: CropStore, rows: torch.Tensor, size: int, train: bool, flips: bool = False,
                 seed: int = 0):
        self.store, self.rows, self.size, self.train, self.flips, self.seed = store, rows, size, train, flips, seed
        self.gen = torch.Generator().manual_seed(seed) if train else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])

    def windows(self, items: torch.Tensor) -> torch.Tensor:
        """The crop windows of ``items`` (positions in this set), on the device that holds the pixels."""
        win = crop_windows(self.store, self.rows[items], self.size, self.gen, self.flips)
        return win.to(self.store.pixels.device)


class DeviceDL(DataLoader):
    """A fastai ``DataLoader`` over a ``CropSet`` that cuts whole batches at once (``cut``).

    Only ``create_batches`` differs: it takes the sampler's item indices, so fastai's shuffling, ``len``,
    ``n``, ``one_batch``, the callbacks' ``before_iter``/``after_iter`` and DDP's ``DistributedDL`` (which
    hands each rank its shard of the indices) work unchanged. Everything runs in the training process."""

    def __init__(self, dataset: CropSet | None = None, bs: int | None = None, shuffle: bool = False,
                 drop_last: bool = False, device=None, **kwargs):
        for k in ("num_workers", "pin_memory", "indexed", "persistent_workers"):  # as ``new`` passes them: fixed here
            kwargs.pop(k, None)
        super().__init__(dataset, bs=bs, shuffle=shuffle, drop_last=drop_last, device=device, indexed=True,
                         num_workers=0, **kwargs)

    def shuffle_fn(self, idxs):
        """The epoch's order from the set's own seeded generator (fastai's comes from Python's global one)."""
        return [idxs[i] for i in torch.randperm(len(idxs), generator=self.dataset.gen).tolist()]

    def create_batches(self, samps):
        items = torch.tensor(list(samps), dtype=torch.long)
        windows = self.dataset.windows(items)  # the whole epoch's windows: one host-to-device copy
        stop = len(items) - len(items) % self.bs if self.drop_last else len(items)
        for a in range(0, stop, self.bs):
            yield cut(self.dataset.store, windows[a:a + self.bs], self.dataset.size)


def _train_dl(store: CropStore, size: int, bs: int, aug: str, repeats: int, seed: int) -> DeviceDL:
    rows = torch.arange(store.n_train).repeat(max(1, repeats))
    return DeviceDL(CropSet(store, rows, size, train=True, flips=aug == "flips", seed=seed), bs=bs, shuffle=True,
                    drop_last=len(rows) > bs, device=store.device)


def device_dataloaders(store: CropStore, size: int, bs: int, aug: str = "none", repeats: int = 1,
                       seed: int = 0, valid=None) -> DataLoaders:
    """fastai ``DataLoaders`` over ``store``: random ``size`` crops of the training images (each ``repeats``
    times per epoch, shuffled, ``aug`` none|flips, the last partial batch dropped when there are more items
    than ``bs``) and centre crops of the validation images, in order. Batches land on ``store.device``.

    ``seed``: the crop windows' (under DDP each rank adds its rank); ``valid``: a validation loader to keep
    (the run's own, so every epoch's metrics compare) instead of the store's centre crops."""
    if aug not in DEVICE_AUGS:
        raise ConfigError(f"the device data path does augmentation {' or '.join(DEVICE_AUGS)}, got {aug!r} "
                          "(the full recipe runs on fastai's path)")
    if size > store.min_side:
        raise ConfigError(f"crop {size} is larger than the smallest image side {store.min_side} "
                          "(fastai's path resizes such images; use it, or a smaller --size)")
    from .distributed import rank

    if valid is None:
        valid = DeviceDL(CropSet(store, torch.arange(store.n_train, len(store.start)), size, train=False), bs=bs,
                         device=store.device)
    # DDP: each rank draws its own windows (the order of the items comes from rank 0)
    return DataLoaders(_train_dl(store, size, bs, aug, repeats, seed + rank()), valid, device=store.device)


def _free_gpu_bytes(device: torch.device) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def choose_data_path(device, aug: str, crops_fit: bool, needed: int, cache: str = "auto",
                     free: tuple[int, int] | None = None) -> tuple[str | None, str]:
    """Where the device data path keeps the decoded set, "device" or "host", or None for fastai's path; and why.

    ``crops_fit``: every image is at least the crop size; ``needed``: the decoded set's bytes
    (``fastseg.train.loaders.cache_bytes``); ``cache``: the --cache mode; ``free``: (free GPU bytes,
    available RAM bytes), measured here when not given. CUDA only: on a CPU the data time is small next to
    a training step. The GPU when the set needs at most ``DEVICE_CACHE_SHARE`` of its free memory, else
    pinned host RAM by ``fastseg.device.resolve_cache``'s rule (which refuses ``ram`` that cannot fit)."""
    from ..device import available_ram, resolve_cache

    device = torch.device(device)
    mib = f"{needed / 2**20:.0f} MiB"
    if device.type != "cuda":
        return None, "fastai's per-item path: on a CPU its data time is small next to a training step"
    if aug not in DEVICE_AUGS:
        return None, f"fastai's path: augmentation {aug} resamples (rotations, zoom, warp) in fastai's transforms"
    if not crops_fit:
        return None, "fastai's path: images smaller than the crop are resized there"
    if cache == "none":
        return None, "fastai's path: --cache none reads the images from disk every epoch"
    free_gpu, free_ram = free if free is not None else (_free_gpu_bytes(device), available_ram())
    if needed <= free_gpu * DEVICE_CACHE_SHARE:
        return "device", f"decoded set ({mib}) cached on the GPU ({free_gpu / 2**30:.1f} GiB free)"
    if resolve_cache(cache, needed, free_ram):
        return "host", (f"decoded set ({mib}) cached in pinned RAM: more than {DEVICE_CACHE_SHARE:.0%} of the "
                        f"GPU's {free_gpu / 2**30:.1f} GiB free")
    return None, f"fastai's path: the decoded set ({mib}) fits neither the GPU nor RAM; read from disk"
