"""Overlays for eyeballing predictions: the image tinted with class colours, plus a legend strip."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_write_bytes, palette_for

__all__ = ["overlay_image", "overlay_jpeg", "save_overlay"]

ALPHA = 0.5  # half tint: class colour readable, image structure still visible underneath


def overlay_image(image: np.ndarray, mask: np.ndarray, codes: list[str], alpha: float = ALPHA) -> Image.Image:
    """HxWx3 image blended with the mask's class colours (class 0 left untinted), legend below."""
    pal = np.asarray(palette_for(len(codes)), dtype=np.float32).reshape(256, 3)
    img = image.astype(np.float32)
    tint = mask > 0
    img[tint] = (1 - alpha) * img[tint] + alpha * pal[mask[tint]]
    body = Image.fromarray(img.round().clip(0, 255).astype(np.uint8))
    font = ImageFont.load_default()
    line, sw, pad = 14, 10, 6
    entries = [(f"{i} {name}" + (" (untinted)" if i == 0 else ""), tuple(int(v) for v in pal[i])) for i, name in enumerate(codes)]
    widths = [sw + 4 + int(ImageDraw.Draw(body).textlength(text, font=font)) + 2 * pad for text, _ in entries]
    width = max(body.width, *widths)  # a narrow image still gets readable legend entries
    rows, x = 1, 0
    for w in widths:  # wrap entries into as many rows as the width needs
        if x and x + w > width:
            rows, x = rows + 1, 0
        x += w
    canvas = Image.new("RGB", (width, body.height + rows * line + pad), (255, 255, 255))
    canvas.paste(body, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x, y = 0, body.height + pad // 2
    for (text, colour), w in zip(entries, widths):
        if x and x + w > width:
            x, y = 0, y + line
        draw.rectangle([x + pad, y + 2, x + pad + sw, y + 2 + sw], fill=colour, outline=(0, 0, 0))
        draw.text((x + pad + sw + 4, y), text, fill=(0, 0, 0), font=font)
        x += w
    return canvas


def overlay_jpeg(image: np.ndarray, mask: np.ndarray, codes: list[str]) -> bytes:
    """The overlay as JPEG bytes (for writers that record what they write)."""
    buf = io.BytesIO()
    overlay_image(image, mask, codes).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def save_overlay(image: np.ndarray, mask: np.ndarray, codes: list[str], dest: str | Path) -> Path:
    return atomic_write_bytes(dest, overlay_jpeg(image, mask, codes))
