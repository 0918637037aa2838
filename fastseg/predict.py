"""Batched inference: images in, class-index masks out, at each image's own size.

``load(path)`` returns a ``Predictor`` for an exported fastai learner; ``Predictor.predict`` takes
paths, PIL images or arrays and returns masks (and, on request, probabilities). Images are decoded
in background threads while the model runs, grouped by size into batches, padded to a multiple of
32 (reflection) and cropped back, so no resize blurs the result.
"""

from __future__ import annotations

import glob
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .data import IMAGE_EXTS
from .errors import DataError, ModelError
from .io import atomic_write_bytes, palette_for

__all__ = ["Predictor", "load", "collect_inputs", "load_image", "save_mask", "predict_paths", "PredictReport"]


def load_image(src) -> np.ndarray:
    """HxWx3 uint8 RGB from a path, PIL image or array (grey, RGBA, 16-bit and palette converted)."""
    if isinstance(src, np.ndarray):
        arr = src
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        return np.ascontiguousarray(arr[..., :3], dtype=np.uint8)
    try:
        im = src if isinstance(src, Image.Image) else Image.open(src)
        if im.mode in ("I;16", "I;16B", "I", "F"):
            a = np.asarray(im, dtype=np.float32)
            lo, hi = float(a.min()), float(a.max())
            im = Image.fromarray(((a - lo) / (hi - lo or 1.0) * 255).astype(np.uint8))
        return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{src}: cannot read image ({e.__class__.__name__}: {e})") from None


@dataclass
class Predictor:
    """A segmentation model with everything needed to turn images into masks."""

    model: torch.nn.Module
    codes: list[str]
    mean: torch.Tensor  # 3 values, for 0-1 inputs
    std: torch.Tensor
    meta: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    def __post_init__(self):
        self.model = self.model.to(self.device).eval().float()
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.as_tensor(self.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_learner(cls, learn) -> "Predictor":
        from fastai.data.transforms import Normalize

        norm = next((t for t in learn.dls.after_batch.fs if isinstance(t, Normalize)), None)
        if norm is None:
            raise ModelError("the learner has no Normalize transform; cannot tell how to scale inputs")
        info = getattr(learn, "fastseg_info", None)
        meta = dict(info.meta) if info is not None else {}
        codes = list(meta.get("codes") or learn.dls.vocab)
        return cls(model=learn.model, codes=codes, mean=norm.mean.flatten()[:3].cpu(), std=norm.std.flatten()[:3].cpu(), meta=meta)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 uint8 -> N x C x H x W class probabilities at the input size."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x = (x - self.mean) / self.std
        h, w = x.shape[-2:]
        if self.meta.get("input") == "resize":  # trained on images resized to `size`: predict at that scale
            s = int(self.meta["size"])
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        ph, pw = (-x.shape[-2]) % 32, (-x.shape[-1]) % 32
        if ph or pw:
            mode = "reflect" if min(x.shape[-2:]) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        logits = self.model(x)[..., : x.shape[-2] - ph, : x.shape[-1] - pw]
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits.float().softmax(dim=1)

    def predict_batches(self, images: Sequence, bs: int = 8, probs: bool = False, workers: int = 2
                        ) -> Iterator[tuple[int, np.ndarray | Exception, np.ndarray | None]]:
        """Yield (index, mask or the error reading that image, probabilities or None), batch by batch.

        Same-size images share a batch; decoding runs in ``workers`` threads ahead of the model.
        """
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            decoded = pool.map(_try_load, images)
            pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}
            for i, arr in enumerate(decoded):
                if isinstance(arr, Exception):
                    yield i, arr, None
                    continue
                group = pending.setdefault(arr.shape, [])
                group.append((i, arr))
                if len(group) == bs:
                    yield from self._run(pending.pop(arr.shape), probs)
            for group in pending.values():
                yield from self._run(group, probs)

    def _run(self, group, probs):
        p = self._forward(np.stack([a for _, a in group]))
        masks = p.argmax(dim=1).to(torch.uint8).cpu().numpy()
        pr = p.half().cpu().numpy() if probs else None
        for k, (i, _) in enumerate(group):
            yield i, masks[k], (pr[k] if probs else None)

    def predict(self, images: Sequence, bs: int = 8, probs: bool = False):
        """Masks (HxW uint8 class indices) for ``images``, in order; with ``probs``, (masks, probabilities)."""
        images = list(images)
        masks: list = [None] * len(images)
        prob: list = [None] * len(images)
        for i, m, p in self.predict_batches(images, bs=bs, probs=probs):
            if isinstance(m, Exception):
                raise m
            masks[i], prob[i] = m, p
        return (masks, prob) if probs else masks


def _try_load(src):
    try:
        return load_image(src)
    except DataError as e:
        return e


def load(path: str | os.PathLike) -> Predictor:
    """Load an exported fastseg model (fastai ``.pkl``) as a ``Predictor``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    from fastai.learner import load_learner

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the pickle-safety notice is documented in the README
            learn = load_learner(path, cpu=not torch.cuda.is_available())
    except Exception as e:
        raise ModelError(f"{path}: not a readable fastai export ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return Predictor.from_learner(learn)


def collect_inputs(inputs: Iterable[str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """(image path, output-relative path) for files, folders and glob patterns."""
    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            for f in sorted(p.glob(pattern)):
                if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith("."):
                    found.append((f, f.relative_to(p).with_suffix(".png")))
        elif p.is_file():
            found.append((p, Path(p.stem + ".png")))
        else:
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=recursive) if Path(m).is_file())
            if not matches:
                raise DataError(f"{raw}: no such file or folder")
            found += [(m, Path(m.stem + ".png")) for m in matches]
    if not found:
        raise DataError(f"no images found in {', '.join(inputs)} (looked for {', '.join(IMAGE_EXTS)})")
    seen: dict[Path, Path] = {}
    for src, rel in found:
        if rel in seen and seen[rel] != src:
            raise DataError(f"{src}: would overwrite the prediction for {seen[rel]} (same name {rel}); predict them separately")
        seen[rel] = src
    return found


def save_mask(mask: np.ndarray, dest: Path, n_classes: int) -> Path:
    """A palette PNG holding class indices (viewable as colours, readable as indices)."""
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(palette_for(n_classes))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return atomic_write_bytes(dest, buf.getvalue())


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def predict_paths(predictor: Predictor, inputs: Iterable[str], out: str | os.PathLike, bs: int = 8,
                  recursive: bool = False, progress=None) -> PredictReport:
    """Predict every image in ``inputs``; write ``out/<name>.png``. Unreadable images are reported, not fatal.

    ``progress``, if given, is called with (done, total) after each image.
    """
    items = collect_inputs(inputs, recursive=recursive)
    out = Path(out)
    report = PredictReport()
    for done, (i, mask, _) in enumerate(predictor.predict_batches([src for src, _ in items], bs=bs), 1):
        src, rel = items[i]
        if isinstance(mask, Exception):
            report.failed.append((src, str(mask)))
        else:
            report.written.append(save_mask(mask, out / rel, len(predictor.codes)))
        if progress is not None:
            progress(done, len(items))
    return report
