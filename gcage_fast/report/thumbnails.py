"""Thumbnails of the most suspicious images for the report, as inline JPEG data URIs.

In order of preference: the scan's own heatmap overlay (``heatmaps/xx/<input_id>.png|.jpg|.webp``); else the source file,
when still readable and unchanged (same sha256), with the row's stored 7×7 CAMs drawn over its patches; else the
CAMs alone. Source files
are untrusted: they are decoded in one supervised worker process (timeout, memory limit), never in the process
that writes the report.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from gcage_fast.config import Limits
from gcage_fast.kernels.reference import PATCH, upsample_cams
from gcage_fast.output.outdir import OutputDir
from gcage_fast.ingest.prepare import PrepareTask, prepare, prepare_failure
from gcage_fast.output.heatmaps import HEATMAP_PIL_FORMATS, find_heatmap, jet, render_overlay
from gcage_fast.ingest.workers import PoolLimits, SupervisedPool

__all__ = ["Thumbnail", "make_thumbnails", "THUMB_MAX"]

THUMB_MAX = 256
_JPEG_QUALITY = 80


@dataclass
class Thumbnail:
    data_uri: str
    source: str  # heatmap | source | cams


def _encode(im: Image.Image) -> str:
    im = im.convert("RGB")
    im.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _heats(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    patches = row.get("patches") or []
    boxes = np.array([[p["x"], p["y"]] for p in patches], dtype=np.int64).reshape(-1, 2)
    cams = np.array([p["cam"] for p in patches], dtype=np.float32).reshape(-1, 7, 7) / 255.0
    heat = upsample_cams(cams, PATCH) if len(cams) else np.zeros((0, PATCH, PATCH), np.float32)
    return boxes, np.clip(heat, 0.0, 1.0)


def _cams_only(row: dict[str, Any]) -> Image.Image:
    _, heat = _heats(row)
    if not len(heat):
        return Image.new("RGB", (64, 64), (200, 200, 200))
    tiles = [Image.fromarray(jet(h)).resize((96, 96)) for h in heat]
    out = Image.new("RGB", (100 * len(tiles), 96), (255, 255, 255))
    for i, t in enumerate(tiles):
        out.paste(t, (100 * i, 0))
    return out


def _open_heatmap(od: OutputDir, input_id: str) -> Image.Image | None:
    path = find_heatmap(od.path, input_id)
    try:
        if path is None or path.is_symlink() or path.stat().st_size > 32 * 2**20:
            return None
        with Image.open(path) as im:
            if im.format not in HEATMAP_PIL_FORMATS or im.width * im.height > 4096 * 4096:
                return None
            im.load()
            return im.copy()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def make_thumbnails(od: OutputDir, rows: list[dict[str, Any]], read_sources: bool = True,
                    limits: Limits = Limits(timeout_s=20.0, worker_memory_mb=2048)) -> dict[str, Thumbnail]:
    """Thumbnails keyed by ``input_id``."""
    thumbs: dict[str, Thumbnail] = {}
    need_source = []
    for row in rows:
        im = _open_heatmap(od, row["input_id"])
        if im is not None:
            thumbs[row["input_id"]] = Thumbnail(_encode(im), "heatmap")
        elif read_sources and row.get("member") is None:
            need_source.append(row)
        else:
            thumbs[row["input_id"]] = Thumbnail(_encode(_cams_only(row)), "cams")
    if need_source:
        tasks = ((row, PrepareTask(i, row["path_bytes"], 1, limits=limits, preview_max=THUMB_MAX * 2), None)
                 for i, row in enumerate(need_source))
        pool_limits = PoolLimits(timeout_s=limits.timeout_s, memory_bytes=limits.worker_memory_mb * 2**20)
        with SupervisedPool(1, prepare, prepare_failure, pool_limits) as pool:
            for row, prepared in pool.imap(tasks, window=4):
                same = prepared.sha256 is not None and prepared.sha256 == row.get("sha256")
                if prepared.status == "ok" and prepared.preview is not None and same:
                    boxes, heat = _heats(row)
                    im = render_overlay(prepared.preview, prepared.preview_scale, boxes, heat, PATCH)
                    thumbs[row["input_id"]] = Thumbnail(_encode(im), "source")
                else:
                    thumbs[row["input_id"]] = Thumbnail(_encode(_cams_only(row)), "cams")
    return thumbs
