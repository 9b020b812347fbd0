"""Training data: patches chosen by the SuSy rule, cached with a margin for crop jitter, and augmentation.

Each selected patch is stored as a (224 + 2m)² region centred on it (the image edge-padded by m first), so
training can jitter the crop by up to ±m pixels while validation takes the exact grid patch at offset m. The
cache is a NumPy file in the output directory, reused when the inputs and settings are unchanged.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from gcage_fast.config import Limits
from gcage_fast.evaluation.datasets import LabelledImage
from gcage_fast.ingest.decode import DecodeFailure, decode_rgb
from gcage_fast.hashing import sha256_json
from gcage_fast.log import logger
from gcage_fast.scoring.patches import PATCH, pad_to_patch, select
from gcage_fast.ingest.prepare import read_file
from gcage_fast.ingest.workers import SupervisedPool, WorkerFailure

__all__ = ["RegionTask", "extract_regions", "PatchCache", "Augment", "augment_patch"]


@dataclass(frozen=True)
class RegionTask:
    index: int
    path: str
    top_k: int
    margin: int
    limits: Limits = Limits()


def extract_regions(task: RegionTask) -> tuple[int, np.ndarray | None, str | None]:
    """Decode one image and return its top-k patch regions (k, P+2m, P+2m, 3), or an error code."""
    try:
        rgb = decode_rgb(read_file(os.fsencode(task.path), task.limits.max_bytes), task.limits).rgb
    except DecodeFailure as f:
        return task.index, None, f.code
    rgb, _ = pad_to_patch(rgb)
    sel = select(rgb, task.top_k)
    m = task.margin
    padded = np.pad(rgb, ((m, m), (m, m), (0, 0)), mode="edge") if m else rgb
    size = PATCH + 2 * m
    regions = np.stack([padded[y:y + size, x:x + size] for x, y in sel.boxes])
    return task.index, regions, None


def _region_failure(task: RegionTask, failure: WorkerFailure) -> tuple[int, None, str]:
    return task.index, None, failure.code


class PatchCache:
    """Regions of every selected patch with their labels. ``image`` maps each patch to its image index."""

    def __init__(self, regions: np.ndarray, labels: np.ndarray, classes: np.ndarray, image: np.ndarray,
                 margin: int) -> None:
        self.regions, self.labels, self.classes, self.image, self.margin = regions, labels, classes, image, margin

    def __len__(self) -> int:
        return len(self.labels)

    def patch(self, i: int, dx: int | None = None, dy: int | None = None) -> np.ndarray:
        """The 224×224 patch at offset (dx, dy) in region i (the grid patch when None)."""
        m = self.margin
        dx = m if dx is None else dx
        dy = m if dy is None else dy
        return self.regions[i, dy:dy + PATCH, dx:dx + PATCH]

    @classmethod
    def build(cls, items: list[LabelledImage], class_of: list[int], cache_dir: Path, *, top_k: int, margin: int,
              workers: int, limits: Limits = Limits()) -> PatchCache:
        """Decode ``items`` in worker processes (or reuse an identical earlier cache in ``cache_dir``)."""
        key = sha256_json({"items": [(i.relpath, i.digest(), i.label) for i in items], "classes": class_of,
                           "top_k": top_k, "margin": margin, "limits": asdict(limits) | {"formats": list(limits.formats)},
                           "version": 1})[:16]
        cache_dir.mkdir(parents=True, exist_ok=True)
        meta_path = cache_dir / f"patches-{key}.json"
        data_path = cache_dir / f"patches-{key}.npy"
        if meta_path.is_file() and data_path.is_file():
            meta = json.loads(meta_path.read_text())
            regions = np.load(data_path, mmap_mode="r")
            return cls(regions, np.array(meta["labels"]), np.array(meta["classes"]), np.array(meta["image"]),
                       margin)
        size = PATCH + 2 * margin
        tmp = data_path.with_name(data_path.name + ".tmp.npy")
        regions = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(items) * top_k, size, size, 3))
        labels, classes, image, n, failed = [], [], [], 0, 0
        tasks = ((i, RegionTask(i, str(item.path), top_k, margin, limits), None) for i, item in enumerate(items))
        with SupervisedPool(workers, extract_regions, _region_failure) as pool:
            for _, (index, reg, error) in pool.imap(tasks, max(2, 4 * workers)):
                if reg is None:
                    failed += 1
                    logger.warning("skipping %s: %s", items[index].relpath, error)
                    continue
                regions[n:n + len(reg)] = reg
                labels += [items[index].label] * len(reg)
                classes += [class_of[index]] * len(reg)
                image += [index] * len(reg)
                n += len(reg)
        regions.flush()
        del regions
        full = np.load(tmp, mmap_mode="r")
        np.save(data_path, full[:n])  # trimmed copy; the oversized temp file is removed
        del full
        tmp.unlink()
        meta_path.write_text(json.dumps({"labels": labels, "classes": classes, "image": image, "failed": failed}))
        return cls(np.load(data_path, mmap_mode="r"), np.array(labels), np.array(classes), np.array(image), margin)


@dataclass(frozen=True)
class Augment:
    """CNNDetection-style augmentation (blur and JPEG with independent probabilities, flips) plus crop jitter and
    random grayscale (the colour-robust training of T-FF). All off gives the plain grid patch."""

    flip: bool = True
    jitter: bool = True
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 100)
    gray_p: float = 0.0


def augment_patch(cache: PatchCache, i: int, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """One augmented 224×224 uint8 patch of region ``i``."""
    m = cache.margin
    if aug.jitter and m:
        dx, dy = (int(v) for v in rng.integers(0, 2 * m + 1, size=2))
    else:
        dx = dy = m
    patch = np.array(cache.patch(i, dx, dy))
    if aug.blur_p and rng.random() < aug.blur_p:
        sigma = float(rng.uniform(*aug.blur_sigma))
        patch = np.asarray(Image.fromarray(patch).filter(ImageFilter.GaussianBlur(radius=sigma)))
    if aug.jpeg_p and rng.random() < aug.jpeg_p:
        buf = io.BytesIO()
        Image.fromarray(patch).save(buf, "JPEG", quality=int(rng.integers(aug.jpeg_quality[0], aug.jpeg_quality[1] + 1)))
        with Image.open(buf) as im:
            patch = np.asarray(im.convert("RGB"))
    if aug.gray_p and rng.random() < aug.gray_p:
        patch = np.asarray(Image.fromarray(patch).convert("L").convert("RGB"))
    if aug.flip and rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)
