"""The engine stages for a batch of prepared images: base graph -> fused step -> head graph -> per-image scores.

Patches of several images are scored together; each image's result is the aggregate of its own patches
(DESIGN.md §2 step 7): ``p_fake`` = mean of the head's per-patch P(fake); the base detector's view is the mean
probability vector, ``base_p_fake = 1 - mean P(authentic)`` and ``attribution`` = its most likely class.
A model without a head takes ``p_fake`` from the base detector (``base_p_fake``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from gcage_fast.engine.base import Runner, infer_chunked
from gcage_fast.errors import OutOfMemory
from gcage_fast.kernels.cpu import fuse_cam_from_patches_fast
from gcage_fast.kernels.reference import PATCH, gather_patches, quantize_cams
from gcage_fast.log import logger
from gcage_fast.models.spec import ModelSpec
from gcage_fast.ingest.prepare import Prepared

__all__ = ["ImageScore", "Detector", "aggregate_scores", "base_patch_p_fake", "score_one_by_one_on_oom"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ImageScore:
    """Scores of one image. Per-patch arrays follow the image's patch order (best contrast first)."""

    p_fake: float
    verdict: str
    base_probs: np.ndarray  # (C,) float64
    base_p_fake: float
    attribution: str
    patch_probs: np.ndarray  # (k, C) float32
    patch_p_fake: np.ndarray  # (k,) float32
    patch_cams: np.ndarray  # (k, h*w) uint8
    heat: np.ndarray | None = None  # (k, P, P) float32 in [0, 1], only when heatmaps are kept


class Detector:
    """Scores prepared images with a base runner and an optional head runner (both already opened).

    Args:
        spec: the model spec (class names, authentic index).
        base, head: runners; ``head`` None means base-only verdicts.
        threshold: ``verdict = fake`` when ``p_fake >= threshold``.
        batch_size: patches per engine call.
        keep_heat: keep the normalised 224×224 heatmaps (for PNG overlays).
    """

    def __init__(self, spec: ModelSpec, base: Runner, head: Runner | None, threshold: float, batch_size: int = 32,
                 keep_heat: bool = False) -> None:
        self.spec = spec
        self.base = base
        self.head = head
        self.threshold = threshold
        self.batch_size = batch_size
        self.keep_heat = keep_heat

    def score(self, items: list[Prepared]) -> list[ImageScore | None]:
        """Scores for ``items`` (all with ``status == "ok"``), in the same order.

        When the engine runs out of memory even at batch size 1, the images are scored one by one and an image
        that still does not fit gets None (its row becomes ``engine.out_of_memory``).
        """
        return score_one_by_one_on_oom(self._score, items)

    def _score(self, items: list[Prepared]) -> list[ImageScore]:
        counts = [len(it.patches) for it in items]
        strip = np.concatenate([it.patches for it in items]).reshape(-1, PATCH, 3)
        n = sum(counts)
        boxes = np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), np.arange(n) * PATCH], axis=1)
        x = gather_patches([strip], boxes)
        out = infer_chunked(self.base, x, self.batch_size)
        probs, cams = out["probs"], out["cam"]
        fused = fuse_cam_from_patches_fast(x, cams)
        if self.head is not None:
            patch_p = infer_chunked(self.head, fused, self.batch_size)["p_fake"].astype(np.float32)
        else:
            patch_p = base_patch_p_fake(self.spec, probs)
        heat = fused[:, 3] if self.keep_heat else None
        return aggregate_scores(self.spec, self.threshold, counts, probs, patch_p, cams, heat)


def score_one_by_one_on_oom(score: Callable[[list[T]], list[R]], items: list[T]) -> list[R | None]:
    """``score(items)``; when it runs out of memory (even at batch size 1), ``score`` of each item alone, with
    None for an item that still does not fit."""
    if not items:
        return []
    try:
        return list(score(items))
    except OutOfMemory:
        if len(items) == 1:
            return [None]
        logger.warning("out of memory on a batch of %d images; scoring them one by one", len(items))
    results: list[R | None] = []
    for it in items:
        try:
            results.extend(score([it]))
        except OutOfMemory:
            results.append(None)
    return results


def base_patch_p_fake(spec: ModelSpec, probs: np.ndarray) -> np.ndarray:
    """Per-patch P(fake) of a model without a head: ``1 - P(authentic)`` of the base detector, float32."""
    return (1.0 - probs[:, spec.authentic_index]).astype(np.float32)


def aggregate_scores(spec: ModelSpec, threshold: float, counts: list[int], probs: np.ndarray,
                     patch_p: np.ndarray, cams: np.ndarray, heat: np.ndarray | None = None) -> list[ImageScore]:
    """Per-image scores from per-patch results, the images' patches one after the other (``counts`` per image).

    ``probs`` (N, C) base probabilities, ``patch_p`` (N,) float32 per-patch P(fake), ``cams`` (N, h, w) raw CAMs
    (quantised here), ``heat`` (N, P, P) normalised heatmaps to keep, or None.
    """
    auth = spec.authentic_index
    cams_q = quantize_cams(cams)
    results = []
    start = 0
    for k in counts:
        sl = slice(start, start + k)
        start += k
        mean_probs = probs[sl].astype(np.float64).mean(axis=0)
        p_fake = float(patch_p[sl].astype(np.float64).mean())
        results.append(ImageScore(
            p_fake=p_fake,
            verdict="fake" if p_fake >= threshold else "real",
            base_probs=mean_probs,
            base_p_fake=float(1.0 - mean_probs[auth]),
            attribution=spec.class_names[int(np.argmax(mean_probs))],
            patch_probs=probs[sl].astype(np.float32),
            patch_p_fake=patch_p[sl],
            patch_cams=cams_q[sl],
            heat=heat[sl].copy() if heat is not None else None,
        ))
    return results
