"""PNG overlays: the image (scaled to at most 1024 px) with each scanned patch outlined and its CAM drawn over it
in a jet colour map. Files are named by ``input_id`` only, never by the input's file name."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gcage_fast.fsutil import tmp_name

__all__ = ["jet", "render_overlay", "write_png_atomic", "PREVIEW_MAX"]

PREVIEW_MAX = 1024


def jet(v: np.ndarray) -> np.ndarray:
    """Jet colour map of values in [0, 1] -> uint8 RGB (the classic piecewise-linear map)."""
    v = np.clip(v, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255 + 0.5).astype(np.uint8)


def render_overlay(preview: np.ndarray, scale: float, boxes: np.ndarray, heat: np.ndarray, patch: int = 224,
                   alpha: float = 0.45, label: str | None = None) -> Image.Image:
    """Overlay ``heat`` (k, P, P) in [0, 1] on the patches ``boxes`` (k, 2) of the scaled image ``preview``."""
    h, w = preview.shape[:2]
    canvas = Image.fromarray(preview).convert("RGB")
    # A padded small image has boxes reaching past the preview: extend the canvas with black.
    need_w = max([w] + [int(round((x + patch) * scale)) for x, _ in boxes])
    need_h = max([h] + [int(round((y + patch) * scale)) for _, y in boxes])
    if (need_w, need_h) != (w, h):
        bigger = Image.new("RGB", (need_w, need_h))
        bigger.paste(canvas)
        canvas = bigger
    draw = ImageDraw.Draw(canvas)
    for (x, y), hm in zip(boxes, heat):
        x0, y0 = int(round(x * scale)), int(round(y * scale))
        size = max(1, int(round(patch * scale)))
        colour = Image.fromarray(jet(hm)).resize((size, size), Image.Resampling.BILINEAR)
        region = canvas.crop((x0, y0, x0 + size, y0 + size))
        canvas.paste(Image.blend(region, colour, alpha), (x0, y0))
        draw.rectangle((x0, y0, x0 + size - 1, y0 + size - 1), outline=(255, 255, 255), width=max(1, size // 112))
    if label:
        draw.rectangle((0, 0, 8 + 7 * len(label), 16), fill=(0, 0, 0))
        draw.text((4, 2), label, fill=(255, 255, 255))
    return canvas


def write_png_atomic(image: Image.Image, path: Path, tag: str) -> None:
    """Write a PNG without following links at the destination: temp file (O_EXCL|O_NOFOLLOW) then rename, in a
    directory that must not be a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for d in (path.parent, path.parent.parent):
        if d.is_symlink():
            raise OSError(f"refusing to write heatmaps through the symbolic link {d}")
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)  # level 6 (the default) made overlays cost more than scoring
    tmp = tmp_name(path, tag)
    try:
        os.unlink(tmp)  # a stale temp from a killed run (unlink never follows a link)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(buf.getvalue())
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)
