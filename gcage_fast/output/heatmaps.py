"""Heatmap overlays: the image (scaled to at most 1024 px) with each scanned patch outlined and its CAM drawn over
it in a jet colour map, written as PNG (lossless), JPEG or WebP (``scan --heatmaps``). Files are named by
``input_id`` only, never by the input's file name, and only by :func:`heatmap_path`."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw

from gcage_fast.fsutil import tmp_name

__all__ = ["jet", "render_overlay", "write_png_atomic", "write_heatmap_atomic", "encode_heatmap", "heatmap_path",
           "find_heatmap", "wants_heatmap", "HEATMAP_PIL_FORMATS", "PREVIEW_MAX"]

PREVIEW_MAX = 1024
#: ``--heatmaps`` format -> (file extension, Pillow format name).
_FORMATS = {"png": ("png", "PNG"), "jpeg": ("jpg", "JPEG"), "webp": ("webp", "WEBP")}
#: The Pillow format names a heatmap file may have (a reader refuses anything else).
HEATMAP_PIL_FORMATS = frozenset(pil for _, pil in _FORMATS.values())


def heatmap_path(input_id: str, fmt: str = "png") -> PurePosixPath:
    """The one place a heatmap is named: ``heatmaps/<first two hex digits>/<input_id>.<png|jpg|webp>``, relative
    to the output directory. ``fmt`` is a ``--heatmaps`` format (png, jpeg, webp)."""
    return PurePosixPath("heatmaps", input_id[:2], f"{input_id}.{_FORMATS[fmt][0]}")


def find_heatmap(output: str | Path, input_id: str) -> Path | None:
    """The heatmap of ``input_id`` in the output directory ``output``, whatever its format; None without one."""
    for fmt in _FORMATS:
        path = Path(output) / heatmap_path(input_id, fmt)
        if path.is_file():
            return path
    return None


def wants_heatmap(verdict: str | None, heatmaps_for: str) -> bool:
    """Whether a scored row with ``verdict`` gets an overlay under ``--heatmaps-for`` (all, fake, uncertain)."""
    if heatmaps_for == "fake":
        return verdict == "fake"
    if heatmaps_for == "uncertain":
        return verdict in ("fake", "uncertain")
    return True


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


def encode_heatmap(image: Image.Image, fmt: str = "png", quality: int = 85) -> bytes:
    """The bytes of an overlay in ``fmt``: png lossless, jpeg and webp at ``quality`` (1-100)."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, "PNG", compress_level=1)  # level 6 (the default) made overlays cost more than scoring
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, "JPEG", quality=quality)
    elif fmt == "webp":
        image.convert("RGB").save(buf, "WEBP", quality=quality, method=4)
    else:
        raise ValueError(f"unknown heatmap format {fmt!r}")
    return buf.getvalue()


def write_png_atomic(image: Image.Image, path: Path, tag: str) -> None:
    """:func:`write_heatmap_atomic` as PNG."""
    write_heatmap_atomic(image, path, tag)


def write_heatmap_atomic(image: Image.Image, path: Path, tag: str, fmt: str = "png", quality: int = 85) -> None:
    """Write an overlay without following links at the destination: temp file (O_EXCL|O_NOFOLLOW) then rename,
    in a directory that must not be a link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for d in (path.parent, path.parent.parent):
        if d.is_symlink():
            raise OSError(f"refusing to write heatmaps through the symbolic link {d}")
    data = encode_heatmap(image, fmt, quality)
    tmp = tmp_name(path, tag)
    try:
        os.unlink(tmp)  # a stale temp from a killed run (unlink never follows a link)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)
