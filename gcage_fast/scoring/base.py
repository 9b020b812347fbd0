"""What every scorer shares: the per-image score, the :class:`Scorer` protocol, and the out-of-memory policy.

A scorer turns a batch of prepared images (``status == "ok"``, from :func:`gcage_fast.ingest.prepare.prepare`)
into per-image scores with opened engine runners. Two implementations:

- :class:`gcage_fast.scoring.host.HostScorer`: the patches were selected in the decode workers; the fused step
  runs in NumPy on the host (every CPU scan).
- :class:`gcage_fast.scoring.device.DeviceScorer`: whole images go to the engine's device, where patch selection,
  gather and the fused step run as kernels; the selection found there is written back into each Prepared.

Both give the same rows (tests/test_device_scoring.py); :func:`gcage_fast.scoring.factory.make_scorer` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from gcage_fast.engine.base import Runner
from gcage_fast.errors import OutOfMemory
from gcage_fast.log import logger
from gcage_fast.models.spec import ModelSpec

__all__ = ["EngineScorer", "ImageScore", "Prepared", "Scorer", "score_one_by_one_on_oom"]

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


class Prepared(Protocol):
    """What a scorer reads and writes of one prepared input (:class:`gcage_fast.ingest.prepare.Prepared` is
    one): scoring knows nothing of how inputs were read and decoded."""

    patches: np.ndarray | None  # (k, P, P, 3) uint8, selected in the decode worker (host path)
    image: np.ndarray | None  # (H, W, 3) uint8, padded: the device path selects its patches itself
    boxes: np.ndarray | None  # (k, 2) int32 (x, y): written by the device scorer
    contrast: np.ndarray | None  # (k,) float64: written by the device scorer
    n_patches_total: int | None  # grid patches: written by the device scorer
    preview: np.ndarray | None


class Scorer(Protocol):
    """Scores batches of prepared images with engines that are already open."""

    #: What run.json records about the patch kernels (None on the host path).
    kernel_info: dict[str, Any] | None

    def score(self, items: list[Prepared]) -> list[ImageScore | None]:
        """Scores for ``items`` (all ``status == "ok"``), in the same order. An image that does not fit in device
        memory even alone gets None (its row becomes ``engine.out_of_memory``); the others are scored."""
        ...


class EngineScorer:
    """What both scorers hold: the model spec, the opened runners and how they call them.

    Args:
        spec: the model spec (class names, authentic index, default ``top_k``).
        base, head: opened runners; ``head`` None means base-only verdicts.
        threshold: ``verdict = fake`` when ``p_fake >= threshold``.
        batch_size: patches per engine call (halved on out-of-memory).
        keep_heat: keep the normalised P×P heatmaps (for PNG overlays).
    """

    #: What run.json records about the patch kernels (None on the host path).
    kernel_info: dict[str, Any] | None = None

    def __init__(self, spec: ModelSpec, base: Runner, head: Runner | None, threshold: float, batch_size: int = 32,
                 keep_heat: bool = False) -> None:
        self.spec = spec
        self.base = base
        self.head = head
        self.threshold = threshold
        self.batch_size = batch_size
        self.keep_heat = keep_heat


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
