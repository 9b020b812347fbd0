"""Per-image scores from per-patch results (DESIGN.md §2 step 7), the same for every scorer.

``p_fake`` = mean of the head's per-patch P(fake); the base detector's view is the mean probability vector,
``base_p_fake = 1 - mean P(authentic)`` and ``attribution`` = its most likely class. A model without a head takes
its per-patch P(fake) from the base detector (:func:`base_patch_p_fake`).
"""

from __future__ import annotations

import numpy as np

from gcage_fast.kernels.reference import quantize_cams
from gcage_fast.models.spec import ModelSpec
from gcage_fast.scoring.base import ImageScore

__all__ = ["aggregate_scores", "base_patch_p_fake"]


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
