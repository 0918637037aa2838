"""Batched inference: images in, class-index masks out, at each image's own size.

``load(path)`` returns a ``Predictor`` for any fastseg model: a fastai ``.pkl``, a safe bundle
(folder with ``model.safetensors`` + ``fastseg.json``), an ``.onnx`` or a TorchScript ``.pt`` file.
``Predictor.predict`` takes paths, PIL images or arrays and returns masks (and, on request,
probabilities). Images are decoded in DataLoader worker processes while the model runs, grouped by
size into batches, padded (reflection) to a side the model takes (its card's ``pad_multiple``, 32 for a Unet)
and cropped back, so no resize blurs the result; ``tile`` switches to sliding-window inference and ``tta``
averages flips; ``min_area`` / ``fill_holes`` clean the masks (``fastseg.infer.postprocess``).
"""

from __future__ import annotations

import glob
import io
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .backends import (ModelSource, OnnxBackend, OpenVinoBackend, TorchBackend, choose_backend, onnx_file_backend,
                       onnx_session)
from ..card import ModelCard
from ..config import Notify, PredictConfig, silent
from ..constants import IMAGE_EXTS, STRIDE
from ..device import resolve_num_workers
from ..errors import ConfigError, DataError, ModelError
from ..data.channels import display_rgb, load_image, tiff_size
from ..data.images import Scaling, no_pixel_limit, too_large_reason
from ..export.read import MODEL_KINDS, card_from_text, model_kind, read_model
from ..io import atomic_write_bytes, palette_for
from ..metrics import class_argmax
from .outputs import BackgroundWriter, OutputFolder, output_files, prepare_outputs
from .postprocess import postprocess
from .prelabels import open_labels
from .tiling import tiled_rows

__all__ = ["Predictor", "Prediction", "load", "collect_inputs", "load_image", "save_mask", "save_probs",
           "predict_paths", "write_predictions", "PredictReport", "MODEL_KINDS"]


def _peek_size(src, allow_large: bool = False) -> tuple[int, int]:
    """(height, width) without decoding the pixels (image headers only); ``allow_large``: no pixel limit."""
    if isinstance(src, np.ndarray):
        return src.shape[:2]
    if isinstance(src, Image.Image):
        return src.size[::-1]
    size = tiff_size(src)  # stacks and wide multi-sample TIFFs: tifffile's header (PIL's can be a page's)
    if size is not None:
        return size[::-1]
    try:
        with no_pixel_limit(allow_large), Image.open(src) as im:
            return im.size[::-1]
    except Image.DecompressionBombError as e:
        raise DataError(f"{src}: cannot read image ({too_large_reason(e)}); predict it with --tile, which "
                        "sends the model one batch of tiles at a time") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{src}: cannot read image ({e.__class__.__name__}: {e})") from None


def _try_load(src, scaling: Scaling | None = None):
    try:
        return load_image(src, scaling)
    except DataError as e:
        return e


class ImageSource(torch.utils.data.Dataset):
    """Decodes images in DataLoader workers: item -> (index, the model's input array or the DataError).

    ``allow_large`` lifts PIL's pixel limit while decoding (tiled prediction of slides), in the worker itself.
    """

    def __init__(self, items: Sequence, scaling: Scaling | None = None, allow_large: bool = False):
        self.items = items
        self.scaling = scaling
        self.allow_large = allow_large

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        with no_pixel_limit(self.allow_large):
            return i, _try_load(self.items[i], self.scaling)


def keep_list(batch: list) -> list:
    """DataLoader ``collate_fn``: keep the (index, array) pairs; the predictor stacks same-size ones."""
    return batch


def size_batches(items: Sequence, bs: int, allow_large: bool = False) -> tuple[list[list[int]], dict[int, DataError]]:
    """Indices grouped into batches of same-size images (input order kept within a size), and header errors."""
    groups: dict[tuple[int, int], list[int]] = {}
    errors: dict[int, DataError] = {}
    for i, src in enumerate(items):
        try:
            groups.setdefault(_peek_size(src, allow_large), []).append(i)
        except DataError as e:
            errors[i] = e
    return [g[k:k + bs] for g in groups.values() for k in range(0, len(g), bs)], errors


@dataclass
class Prediction:
    index: int  # position in the input sequence
    mask: np.ndarray | None  # HxW uint8 class indices; None when the image could not be read
    probs: np.ndarray | None = None  # C x H x W float16, when asked for
    image: np.ndarray | None = None  # the decoded HxWx3 input (for overlays; other channel counts shown as RGB)
    error: DataError | None = None


@dataclass
class Predictor:
    """A segmentation model with everything needed to turn images into masks, on any backend."""

    model: torch.nn.Module | None  # None for ONNX models
    codes: list[str]
    mean: torch.Tensor  # one value per input channel (3 for RGB), for 0-1 inputs
    std: torch.Tensor
    meta: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    backend: object = None  # callable: normalised N x channels x H x W tensor -> logits; default TorchBackend(model)
    backend_note: str = "torch"  # which backend runs, and why (for the CLI to show)

    def __post_init__(self):
        if self.backend is None:
            if self.model is None:
                raise ModelError("a Predictor needs a torch model or a backend")
            self.backend = TorchBackend(self.model, self.device)
        elif isinstance(self.backend, (OnnxBackend, OpenVinoBackend)):
            self.device = torch.device("cpu")
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.as_tensor(self.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @classmethod
    def from_learner(cls, learn, backend: str = "torch", origin: Path | None = None) -> "Predictor":
        from ..export.formats import learner_card

        return cls._with_backend(learn.model, learner_card(learn), backend, origin)

    @classmethod
    def _with_backend(cls, model, card: ModelCard, backend: str, origin: Path | None = None) -> "Predictor":
        """``origin``: the model's file or folder, beside which an int8 export may be (``fastseg.export.quantize``)."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        source = ModelSource(model=model, sample_side=card.fit_side(64), channels=card.in_channels)
        if origin is not None and backend in ("auto", "onnx-int8"):
            from ..export.quantize import int8_beside

            source.int8_file, source.int8_agreement = int8_beside(origin, model)
        runner, note = choose_backend(source, device, backend, agreement=(card.agreement or {}).get("backends"))
        return cls(model=model, codes=list(card.codes), mean=card.mean, std=card.std, meta=card.to_dict(),
                   device=device, backend=runner, backend_note=note)

    @property
    def card(self) -> ModelCard:
        """The model card: the recorded facts (``meta``), the classes and normalisation, and the input rule of
        the torch model itself where it is an SMP model."""
        return ModelCard.from_meta(self.meta, self.codes, self.mean.cpu(), self.std.cpu(), self.model)

    @property
    def scaling(self) -> Scaling | None:
        """The training set's pixel rule (None: a model saved before it was stored)."""
        return Scaling.from_dict(self.meta.get("scaling"))

    def read(self, src) -> np.ndarray:
        """An image (path, PIL image or array) decoded as this model takes it."""
        return load_image(src, self.scaling)

    def shown(self, image: np.ndarray) -> np.ndarray:
        """A decoded input as H x W x 3 uint8 to look at (overlays, galleries)."""
        return display_rgb(image)

    def info(self) -> dict:
        """The model card as the JSON-safe dict every format stores."""
        return self.card.to_dict()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple, least = self.meta.get("pad_multiple", STRIDE), self.meta.get("min_side", STRIDE)  # from the card
        ph, pw = max(-h % multiple, least - h), max(-w % multiple, least - w)
        if ph or pw:
            mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.backend(x)[..., :h, :w].to(self.device).float()

    def _probs(self, x: torch.Tensor, tta: bool = False) -> torch.Tensor:
        p = self._logits(x).softmax(dim=1)
        if tta:  # horizontal and vertical flips, each flipped back before averaging
            for dims in ((3,), (2,)):
                p += self._logits(x.flip(dims)).softmax(dim=1).flip(dims)
            p /= 3
        return p

    def _normalised(self, batch: np.ndarray) -> torch.Tensor:
        """N x H x W x 3 uint8 (channel models: N x H x W x C float32 in 0-255) on the host -> N x 3 (C) x H x W
        normalised float32 on the device."""
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)
        # (x / 255 - mean) / std as one scale and one shift in place: one allocation, not three
        x = x.to(torch.float32, memory_format=torch.contiguous_format)
        return x.mul_(1 / (255 * self.std)).sub_(self.mean / self.std)

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray, cfg: PredictConfig) -> torch.Tensor:
        """N x H x W x 3 uint8 -> N x C x H x W class probabilities at the input size (whole images); the logits
        instead when only the argmax is asked for (softmax cannot change it; it cost ~4% of an ONNX Runtime batch)."""
        x = self._normalised(batch)
        h, w = x.shape[-2:]
        if self.meta.get("input") == "resize":  # trained on images resized to `size`: predict at that scale
            s = int(self.meta["size"])
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        p = self._probs(x, cfg.tta) if cfg.probs or cfg.tta else self._logits(x)
        if p.shape[-2:] != (h, w):
            p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p

    def _tile_probs(self, tiles: np.ndarray, tta: bool) -> torch.Tensor:
        return self._probs(self._normalised(tiles), tta)

    @torch.inference_mode()
    def _tiled(self, image: np.ndarray, cfg: PredictConfig) -> tuple[np.ndarray, np.ndarray | None]:
        """One H x W x 3 uint8 image, tile by tile: (H x W uint8 mask, C x H x W float16 probabilities or None).

        Only a batch of tiles is on the device; the blend and the outputs are filled row band by row band.
        """
        mask, probs = np.empty(image.shape[:2], np.uint8), None
        tiles_fn = partial(self._tile_probs, tta=cfg.tta)
        for y, p in tiled_rows(tiles_fn, image, cfg.tile, cfg.overlap, cfg.bs):
            mask[y:y + p.shape[1]] = class_argmax(p[None], torch.uint8)[0].numpy()
            if cfg.probs:
                probs = probs if probs is not None else np.empty((p.shape[0], *image.shape[:2]), np.float16)
                probs[:, y:y + p.shape[1]] = p.half().numpy()
        return mask, probs

    def _masks(self, images: list[np.ndarray], cfg: PredictConfig) -> tuple[Sequence, Sequence | None]:
        """Same-size H x W x 3 uint8 images -> their masks and, with ``cfg.probs``, probabilities (host arrays)."""
        if cfg.tile is not None and self.meta.get("input") != "resize":  # resize models see the image once
            outs = [self._tiled(img, cfg) for img in images]
            return [m for m, _ in outs], ([p for _, p in outs] if cfg.probs else None)
        p = self._forward(np.stack(images), cfg)
        return class_argmax(p, torch.uint8).cpu().numpy(), (p.half().cpu().numpy() if cfg.probs else None)

    def iter_predictions(self, images: Sequence, cfg: PredictConfig | None = None, keep_images: bool = False
                         ) -> Iterator[Prediction]:
        """Yield a ``Prediction`` per image, batch by batch (same-size images share a batch; not in input order).

        Images are decoded by ``cfg.workers`` DataLoader worker processes ahead of the model (``auto``:
        ``device.resolve_num_workers``).
        """
        cfg = cfg or PredictConfig()
        images = list(images)
        large = cfg.tile is not None  # tiles keep device memory bounded, so slides over PIL's pixel limit are fine
        batches, errors = size_batches(images, 1 if cfg.tile else cfg.bs, allow_large=large)
        for i, e in errors.items():
            yield Prediction(i, None, error=e)
        # one batch: nothing to overlap with
        workers = resolve_num_workers(cfg.workers, self.device) if len(batches) > 1 else 0
        loader = torch.utils.data.DataLoader(ImageSource(images, self.scaling, allow_large=large), batch_sampler=batches,
                                             collate_fn=keep_list, num_workers=workers)
        for batch in loader:
            same: dict[tuple, list] = {}
            for i, arr in batch:
                if isinstance(arr, Exception):
                    yield Prediction(i, None, error=arr)
                else:  # headers and pixels can disagree (EXIF, odd files): regroup by decoded shape
                    same.setdefault(arr.shape, []).append((i, arr))
            for group in same.values():
                masks, pr = self._masks([a for _, a in group], cfg)
                if cfg.postprocess:
                    masks = [postprocess(m, cfg.min_area, cfg.fill_holes) for m in masks]
                for k, (i, arr) in enumerate(group):
                    yield Prediction(i, masks[k], pr[k] if pr is not None else None, self.shown(arr) if keep_images else None)

    def predict(self, images: Sequence, cfg: PredictConfig | None = None, **options):
        """Masks (HxW uint8 class indices) for ``images``, in order; with ``probs=True``, (masks, probabilities).

        Options are ``PredictConfig`` fields (bs, tile, overlap, tta, probs, workers, min_area, fill_holes); an
        unreadable image raises ``DataError``.
        """
        cfg = cfg or PredictConfig(**{"workers": 0, **options})
        images = list(images)
        masks: list = [None] * len(images)
        prob: list = [None] * len(images)
        for r in self.iter_predictions(images, cfg):
            if r.error is not None:
                raise r.error
            masks[r.index], prob[r.index] = r.mask, r.probs
        return (masks, prob) if cfg.probs else masks


def load(path: str | os.PathLike, backend: str = "auto", notify: Notify = silent,
         classes: Sequence[str] | None = None) -> Predictor:
    """Load any fastseg model as a ``Predictor``: bundle folder, .onnx, TorchScript .pt or .pkl; also a folder
    SMP's ``save_pretrained`` wrote (its class names: its README's, else ``classes``, else class0, class1, ...).

    ``backend``: ``auto`` picks, on CPU, the fastest backend here whose masks match fp32 on >= 99.5% of
    the model's validation pixels (``fastseg.infer.backends.choose_backend``; an int8 export beside the model
    counts too); any other ``BACKEND_CHOICES`` name forces one. Only a ``.pkl`` is unpickled (that runs
    code from the file, and ``notify`` says so); any other file is refused unread.
    """
    path = Path(path)
    kind = model_kind(path, classes)
    if kind == "onnx":
        return _load_onnx(path, backend)
    if kind == "torchscript" and backend == "onnx":
        raise ConfigError(f"{path}: a TorchScript model runs in torch only (use backend auto or torch)")
    model, card = read_model(path, kind, notify, classes)
    if kind == "torchscript":  # runs in torch as it was traced
        return Predictor(model=model, codes=list(card.codes), mean=card.mean, std=card.std, meta=card.to_dict(),
                         backend_note="torchscript")
    return Predictor._with_backend(model, card, backend, origin=path)


def _load_onnx(path: Path, backend: str) -> Predictor:
    if backend in ("torch", "torch-bf16"):
        raise ConfigError(f"{path}: an .onnx model runs in onnxruntime or OpenVINO only (use backend auto, onnx, "
                          "onnx-int8 or openvino)")
    session = onnx_session(str(path), source=str(path))
    card = card_from_text(session.get_modelmeta().custom_metadata_map.get("fastseg"), path)
    runner, note = onnx_file_backend(str(path), session, card.to_dict(), backend)
    return Predictor(model=None, codes=list(card.codes), mean=card.mean, std=card.std, meta=card.to_dict(),
                     backend=runner, backend_note=note)


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


def mask_png(mask: np.ndarray, n_classes: int) -> bytes:
    """A palette PNG holding class indices (viewable as colours, readable as indices)."""
    im = Image.fromarray(mask.astype(np.uint8), mode="P")
    im.putpalette(palette_for(n_classes))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def probs_npy(probs: np.ndarray) -> bytes:
    """C x H x W float16 class probabilities as ``.npy`` bytes."""
    buf = io.BytesIO()
    np.save(buf, probs.astype(np.float16, copy=False))
    return buf.getvalue()


def save_mask(mask: np.ndarray, dest: Path, n_classes: int) -> Path:
    return atomic_write_bytes(dest, mask_png(mask, n_classes))


def save_probs(probs: np.ndarray, dest: Path) -> Path:
    return atomic_write_bytes(dest, probs_npy(probs))


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)  # masks, then overlays and probabilities if asked
    failed: list[tuple[Path, str]] = field(default_factory=list)


def pending_writes(cfg: PredictConfig) -> int:
    """Predictions that may wait for the writer: two batches keep it busy without holding a run's outputs in RAM."""
    return 2 * (1 if cfg.tile else cfg.bs)


def _write_outputs(item: tuple[Prediction, Path, Path], folder: OutputFolder, predictor: Predictor,
                   cfg: PredictConfig, labels=None) -> list[Path]:
    from .overlay import overlay_jpeg

    r, rel, src = item
    names = output_files(rel, cfg.overlay, cfg.probs, cfg.format == "png")
    data = [mask_png(r.mask, len(predictor.codes))] if cfg.format == "png" else []  # else: pre-annotations
    if labels is not None:  # the one writer thread serialises the pre-annotation writer's adds
        labels.add(rel.with_suffix(src.suffix).as_posix(), r.mask)
    if cfg.overlay:
        data.append(overlay_jpeg(r.image, r.mask, predictor.codes))
    if cfg.probs:
        data.append(probs_npy(r.probs))
    return [folder.write(name, d) for name, d in zip(names, data)]


def predict_paths(predictor: Predictor, inputs: Iterable[str], out: str | os.PathLike, cfg: PredictConfig | None = None,
                  recursive: bool = False, progress=None, items: list[tuple[Path, Path]] | None = None) -> PredictReport:
    """Predict every image in ``inputs``; write ``out/<name>.png`` (and overlays/probabilities per ``cfg``).

    Every destination is checked first (``outputs.prepare_outputs``): nothing fastseg did not write is
    replaced. Then as ``write_predictions``.
    """
    cfg = cfg or PredictConfig()
    items = items if items is not None else collect_inputs(inputs, recursive=recursive)
    return write_predictions(predictor, items, prepare_outputs(items, out, cfg), cfg, progress)


def write_predictions(predictor: Predictor, items: list[tuple[Path, Path]], folder: OutputFolder,
                      cfg: PredictConfig | None = None, progress=None) -> PredictReport:
    """Predict (image, mask path) ``items`` into a checked output ``folder``.

    Unreadable images are reported, not fatal; a failed write (``OutputError``) stops the run. Files are
    encoded and written by a background thread, at most ``pending_writes`` predictions behind the model.
    ``progress``, if given, is called with (done, total) per image.
    """
    cfg = cfg or PredictConfig()
    report = PredictReport()
    labels = open_labels(cfg.format, folder.root, predictor.codes, predictor.meta.get("void_code"))  # png: None
    write = partial(_write_outputs, folder=folder, predictor=predictor, cfg=cfg, labels=labels)
    with BackgroundWriter(write, max_pending=pending_writes(cfg)) as writer:
        for done, r in enumerate(predictor.iter_predictions([src for src, _ in items], cfg, keep_images=cfg.overlay), 1):
            src, rel = items[r.index]
            if r.error is not None:
                report.failed.append((src, str(r.error)))
            else:
                writer.put((r, rel, src))
            if progress is not None:
                progress(done, len(items))
    report.written = [p for paths in writer.results for p in paths]
    if labels is not None:
        report.written.append(labels.close())
    return report
