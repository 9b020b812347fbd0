"""Per-image scores from per-patch results (DESIGN.md §2 step 7), the same for every scorer.

``p_fake`` = mean of the head's per-patch P(fake); the base detector's view is the mean probability vector,
``base_p_fake = 1 - mean P(authentic)`` and ``attribution`` = its most likely class. A model without a head takes
its per-patch P(fake) from the base detector (:func:`base_patch_p_fake`). The model's verdict of ``p_fake`` is
:func:`model_verdict`, the one home of the rule (``fake``, ``uncertain`` in the optional band, ``real``).
"""

from __future__ import annotations

import numpy as np

from gcage_fast.kernels.reference import quantize_cams
from gcage_fast.models.spec import ModelSpec
from gcage_fast.scoring.base import ImageScore

__all__ = ["VERDICTS", "aggregate_scores", "base_patch_p_fake", "model_verdict"]

#: The values of a row's ``verdict``; ``uncertain`` only comes from a model with an uncertain band.
VERDICTS = ("fake", "uncertain", "real")


def model_verdict(p_fake: float, threshold: float, uncertain_threshold: float | None = None) -> str:
    """The model's verdict of a score: ``fake`` when ``p_fake >= threshold``; else ``uncertain`` when there is a
    band and ``p_fake >= uncertain_threshold``; else ``real``. A band whose lower edge is not below the threshold
    (a scan's ``--threshold`` under the model's ``uncertain_threshold``) is empty."""
    if p_fake >= threshold:
        return "fake"
    if uncertain_threshold is not None and p_fake >= uncertain_threshold:
        return "uncertain"
    return "real"


def base_patch_p_fake(spec: ModelSpec, probs: np.ndarray) -> np.ndarray:
    """Per-patch P(fake) of a model without a head: ``1 - P(authentic)`` of the base detector, float32."""
    return (1.0 - probs[:, spec.authentic_index]).astype(np.float32)


def aggregate_scores(spec: ModelSpec, threshold: float, counts: list[int], probs: np.ndarray,
                     patch_p: np.ndarray, cams: np.ndarray, heat: np.ndarray | None = None) -> list[ImageScore]:
    """Per-image scores from per-patch results, the images' patches one after the other (``counts`` per image).

    ``probs`` (N, C) base probabilities, ``patch_p`` (N,) float32 per-patch P(fake), ``cams`` (N, h, w) raw CAMs
    (quantised here), ``heat`` (N, P, P) normalised heatmaps to keep, or None. The verdict is
    :func:`model_verdict` with ``threshold`` and the spec's ``uncertain_threshold``.
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
            verdict=model_verdict(p_fake, threshold, spec.uncertain_threshold),
            base_probs=mean_probs,
            base_p_fake=float(1.0 - mean_probs[auth]),
            attribution=spec.class_names[int(np.argmax(mean_probs))],
            patch_probs=probs[sl].astype(np.float32),
            patch_p_fake=patch_p[sl],
            patch_cams=cams_q[sl],
            heat=heat[sl].copy() if heat is not None else None,
        ))
    return results
