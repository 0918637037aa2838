"""How closely the faster, reduced-precision backends reproduce a model's fp32 masks.

Measured once per model on its own validation images (at the end of ``fit``, and for the int8 model
at ``fastseg export --int8``) and kept in its metadata (``meta["agreement"]``: the learner's meta, the
bundle's fastseg.json, the ONNX metadata), so ``fastseg predict``'s ``auto`` backend uses a backend
only where it gives the same classes as fp32 on at least ``AGREEMENT_MIN`` of the pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from .backends import AGREEMENT_MIN, ModelSource, OnnxBackend, build_backend, onnx_session, openvino_available
from ..errors import FastsegError

__all__ = ["AGREEMENT_IMAGES", "AGREEMENT_MIN", "mask_agreement", "measure_agreement", "reduced_backends",
           "record_agreement", "int8_agreement"]

AGREEMENT_IMAGES = 8  # validation images compared: a 512 px image alone has 262k pixels; bounds the cost at fit end


def mask_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> tuple[float, int]:
    """(share of pixels with the same class, pixels compared) over pairs of masks."""
    equal = sum(int((a == b).sum()) for a, b in zip(reference, other, strict=True))
    total = sum(a.size for a in reference)
    return (equal / total if total else 1.0), total


def measure_agreement(predictor, images: Sequence, backends: dict, bs: int = 4) -> dict:
    """``{"backends": {key: share}, "images": n, "pixels": n}`` for each backend against ``predictor``
    (an fp32 torch ``Predictor``) on ``images``, through the same normalisation, padding and argmax."""
    ref = predictor.predict(images, bs=bs)
    shares, pixels = {}, 0
    for backend in backends.values():
        other = dataclasses.replace(predictor, backend=backend, backend_note=backend.name)
        shares[backend.key], pixels = mask_agreement(ref, other.predict(images, bs=bs))
    return {"backends": shares, "images": len(images), "pixels": pixels}


def reduced_backends(predictor) -> dict:
    """The reduced-precision backends that can be built here from ``predictor``'s torch model: torch-bf16
    (torch emulates bf16 where the CPU lacks it, with the same rounding) and OpenVINO where it computes
    in less than fp32 on this machine (in fp32 it is exact and needs no check)."""
    import copy

    card = predictor.card
    source = ModelSource(model=copy.deepcopy(predictor.model),  # channels_last and ONNX export leave the original alone
                         sample_side=card.fit_side(64), channels=card.in_channels)
    out = {"torch-bf16": build_backend("torch-bf16", source, predictor.device)}
    if openvino_available():
        try:
            ov = build_backend("openvino", source, predictor.device)
        except FastsegError:  # the model does not convert: auto will not offer it either
            ov = None
        if ov is not None and not ov.exact:
            out["openvino"] = ov
    return out


def record_agreement(learn, images: Sequence[Path]) -> dict:
    """At the end of ``fit``: agreement of each reduced-precision backend with the trained fp32 model on
    up to ``AGREEMENT_IMAGES`` of ``images`` (the validation images), stored in the learner's meta."""
    from .predictor import Predictor

    images = list(images)[:AGREEMENT_IMAGES]
    if not images:
        return {}
    predictor = Predictor.from_learner(learn, backend="torch")
    found = measure_agreement(predictor, images, reduced_backends(predictor))
    learn.fastseg_info.meta["agreement"] = found
    return found


def int8_agreement(model, card, int8_onnx: bytes, images: Sequence[Path], source: str) -> dict:
    """At ``fastseg export --int8``: ``measure_agreement`` of the int8 ONNX graph with the fp32 torch ``model``
    on up to ``AGREEMENT_IMAGES`` of ``images`` (``fastseg.export.formats.Int8Check``)."""
    from .predictor import Predictor

    predictor = Predictor(model=model, codes=list(card.codes), mean=card.mean, std=card.std, meta=card.to_dict())
    backend = OnnxBackend(onnx_session(int8_onnx, source=source), name="onnx-int8")
    return measure_agreement(predictor, list(images)[:AGREEMENT_IMAGES], {"onnx-int8": backend})
