"""Isotonic regression by pool-adjacent-violators (PAV), in NumPy: the monotone (non-decreasing) map of a score
to P(fake) that fits labelled scores best in weighted least squares.

The fit returns knots (score, calibrated value); :func:`apply_isotonic` maps new scores by linear interpolation
between the knots and holds the end values beyond them, so the map is monotone everywhere. This module only fits
and applies; it never reads or writes files and never changes a scan's p_fake.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pav", "fit_isotonic", "apply_isotonic"]


def pav(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to ``y`` (in order) in weighted least squares: adjacent blocks that
    violate the order are pooled into their weighted mean until none does."""
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    counts: list[int] = []
    for value, weight in zip(y.tolist(), w.tolist()):
        means.append(value)
        weights.append(weight)
        counts.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m, wt, c = means.pop(), weights.pop(), counts.pop()
            total = weights[-1] + wt
            means[-1] = (means[-1] * weights[-1] + m * wt) / total
            weights[-1] = total
            counts[-1] += c
    return np.repeat(np.array(means), np.array(counts, dtype=np.int64))


def fit_isotonic(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots ``(x, y)`` of the isotonic fit of ``labels`` (0/1) on ``scores``.

    Tied scores are pooled first (one point, weighted by its count), so equal scores always map to one value.
    Only the first and last score of each constant block are kept: interpolating between them gives the same map.
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(labels, dtype=np.float64)
    if s.ndim != 1 or s.shape != t.shape or s.size == 0:
        raise ValueError("scores and labels must be 1-D arrays of one non-zero length")
    ux, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=t, minlength=ux.size)
    fitted = pav(sums / counts, counts.astype(np.float64))
    keep = np.ones(ux.size, dtype=bool)
    if ux.size > 2:
        same_prev = np.r_[False, fitted[1:] == fitted[:-1]]
        same_next = np.r_[fitted[:-1] == fitted[1:], False]
        keep = ~(same_prev & same_next)
    return ux[keep], fitted[keep]


def apply_isotonic(scores: np.ndarray, knots_x: np.ndarray, knots_y: np.ndarray) -> np.ndarray:
    """Map ``scores`` through the knots: linear between them, the end values beyond them."""
    return np.interp(np.asarray(scores, dtype=np.float64), np.asarray(knots_x, dtype=np.float64),
                     np.asarray(knots_y, dtype=np.float64))
