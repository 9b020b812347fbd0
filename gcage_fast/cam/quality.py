"""How faithful a heatmap is to the detector: confidence change and ROAD (METHOD.md §5.5).

Every metric perturbs the patch according to the heatmap, runs the perturbed patches through the base engine
(one batch per patch) and compares the target score with the unperturbed one (Δ = y(perturbed) − y(patch)):

- ``cam_mult``: the patch multiplied by the heatmap (pytorch-grad-cam's ``CamMultImageConfidenceChange``);
  ``drop`` = max(−Δ, 0), ``increase`` = 1 when Δ > 0.
- ``keep_top``: only the top x% of the heatmap's pixels kept, the rest filled with the patch's mean colour;
  ``drop@x`` and ``increase@x`` as above. A faithful heatmap keeps the score (small drop).
- ROAD (Rong et al., ICML 2022): the most (MoRF) or least (LeRF) relevant pixels removed and re-imputed by the
  noisy linear imputer, at several percentiles; ``road_morf`` and ``road_lerf`` are the mean Δ over the
  percentiles, ``road_combined`` = (LeRF − MoRF) / 2, higher is better.
- ``flat``: 1 for a heatmap with no variation (no pixel ranks above another); its other metrics are NaN.

The imputer fills the removed pixels so that each equals the weighted mean of its 8 neighbours (1/6 for edge
neighbours, 1/12 for diagonal ones, renormalised at the patch border) and then adds 0.01·N(0, 1) noise
(tleemann/road_evaluation's ``NoisyLinearImputer``). The linear system is symmetric positive definite on the
removed pixels, and is solved here by conjugate gradients in NumPy (no SciPy needed), seeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gcage_fast.cam.perturbation import target_from_probs
from gcage_fast.cam.targets import CamTarget

__all__ = ["QualityOptions", "impute_noisy_linear", "road_mask", "cam_quality", "METRIC_KEYS"]

#: (dy, dx, weight) of the 8 neighbours in the imputer's equation (tests build the dense system from it).
OFFSETS = [(-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12),
            (1, 0, 1 / 6), (1, 1, 1 / 12)]


@dataclass(frozen=True)
class QualityOptions:
    keep_top: tuple[int, ...] = (25,)  # percentages of the heatmap kept by the keep-top metric
    road_percentiles: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    noise: float = 0.01
    seed: int = 0

    def keys(self) -> list[str]:
        return METRIC_KEYS + [f"{k}@{x}" for x in self.keep_top for k in ("drop", "increase")]


METRIC_KEYS = ["drop", "increase", "road_morf", "road_lerf", "road_combined"]


def impute_noisy_linear(image: np.ndarray, removed: np.ndarray, noise: float = 0.01, seed: int = 0,
                        tol: float = 1e-4, max_iter: int = 2000) -> np.ndarray:
    """Fill the ``removed`` pixels (P, P) bool of ``image`` (C, P, P) by the noisy linear imputer."""
    image = np.asarray(image, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    out = image.copy()
    if not removed.any():
        return out.astype(np.float32)
    if removed.all():
        raise ValueError("cannot impute when every pixel is removed")
    known = ~removed
    ones = np.ones(removed.shape)
    # Diagonal: the sum of the weights of the neighbours inside the image.
    mask = removed.astype(np.float64)

    def neighbour_sum(a: np.ndarray) -> np.ndarray:
        pad = np.pad(a, ((0, 0), (1, 1), (1, 1)))
        h, w = a.shape[-2:]
        edge = pad[:, 0:h, 1:w + 1] + pad[:, 2:h + 2, 1:w + 1] + pad[:, 1:h + 1, 0:w] + pad[:, 1:h + 1, 2:w + 2]
        diagonal = pad[:, 0:h, 0:w] + pad[:, 0:h, 2:w + 2] + pad[:, 2:h + 2, 0:w] + pad[:, 2:h + 2, 2:w + 2]
        return edge * (1 / 6) + diagonal * (1 / 12)

    def apply(x: np.ndarray) -> np.ndarray:  # A x on the removed pixels (x is 0 elsewhere)
        return (diag * x - neighbour_sum(x)) * mask

    diag = neighbour_sum(ones[None])[0]
    b = neighbour_sum(image * known) * mask
    # Start from the solution at half resolution (coarse to fine), then conjugate gradients for all channels.
    x = np.where(removed, _coarse_guess(image, removed), 0.0)
    r = b - apply(x)
    p = r.copy()
    rs = (r * r).sum(axis=(1, 2))
    stop = tol**2 * np.maximum((b * b).sum(axis=(1, 2)), 1e-30)
    for _ in range(max_iter):
        if np.all(rs <= stop):
            break
        ap = apply(p)
        step = rs / np.maximum((p * ap).sum(axis=(1, 2)), 1e-300)
        x += step[:, None, None] * p
        r -= step[:, None, None] * ap
        rs_new = (r * r).sum(axis=(1, 2))
        p = r + (rs_new / np.maximum(rs, 1e-300))[:, None, None] * p
        rs = rs_new
    if noise:
        rng = np.random.default_rng(seed)
        x += noise * rng.standard_normal(x.shape) * mask
    out[:, removed] = x[:, removed]
    return out.astype(np.float32)


def _coarse_guess(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """An initial guess for the removed pixels: the imputation of the half-resolution problem, upsampled."""
    c, h, w = image.shape
    known = ~removed
    if min(h, w) < 16:
        return np.broadcast_to((image * known).sum(axis=(1, 2), keepdims=True) / known.sum(), image.shape)
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    pad = ((0, 0), (0, 2 * h2 - h), (0, 2 * w2 - w))
    kw = np.pad(known.astype(np.float64), pad[1:]).reshape(h2, 2, w2, 2).sum(axis=(1, 3))
    vs = np.pad(image * known, pad).reshape(c, h2, 2, w2, 2).sum(axis=(2, 4))
    small_removed = kw == 0
    small = np.where(small_removed, 0.0, vs / np.maximum(kw, 1))
    if small_removed.all():
        return np.broadcast_to((image * known).sum(axis=(1, 2), keepdims=True) / known.sum(), image.shape)
    solved = impute_noisy_linear(small, small_removed, noise=0.0, tol=1e-3).astype(np.float64)
    return solved.repeat(2, axis=1).repeat(2, axis=2)[:, :h, :w]


def road_mask(heat: np.ndarray, percentile: float, most_relevant_first: bool) -> np.ndarray:
    """Pixels to remove: MoRF keeps heat < its ``percentile``-th percentile; LeRF does the same on 1 − heat."""
    h = heat if most_relevant_first else 1.0 - heat
    return ~(h < np.percentile(h, percentile))


def cam_quality(patch: np.ndarray, heat: np.ndarray, target: CamTarget,
                probs_fn: Callable[[np.ndarray], np.ndarray], reference: np.ndarray,
                options: QualityOptions = QualityOptions()) -> dict[str, float]:
    """Metrics of one heatmap ``heat`` (P, P) in [0, 1] of one patch (3, P, P) in [0, 1].

    ``reference`` is the base detector's probability vector on the unperturbed patch.
    """
    patch = np.asarray(patch, dtype=np.float32)
    heat = np.asarray(heat, dtype=np.float32)
    if not float(heat.max()) > float(heat.min()):
        # A flat heatmap (e.g. no positive evidence for the target anywhere) ranks no pixel above another:
        # the metrics are undefined, and averages leave it out (``flat`` counts them).
        return {**{k: float("nan") for k in options.keys()}, "flat": 1.0}
    y0 = float(target_from_probs(target, reference[None], reference)[0])
    batch: list[np.ndarray] = [patch * heat[None]]
    mean = patch.mean(axis=(1, 2), keepdims=True)
    for x in options.keep_top:
        keep = heat >= np.percentile(heat, 100 - x)
        batch.append(np.where(keep[None], patch, mean))
    road: list[tuple[bool, int]] = []
    for k, pct in enumerate(options.road_percentiles):
        for morf in (True, False):
            removed = road_mask(heat, pct, morf)
            if removed.all() or not removed.any():
                continue
            batch.append(impute_noisy_linear(patch, removed, options.noise, options.seed + k))
            road.append((morf, pct))
    ys = target_from_probs(target, probs_fn(np.stack(batch).astype(np.float32)), reference).astype(np.float64)
    delta = ys - y0
    out = {"drop": max(-delta[0], 0.0), "increase": float(delta[0] > 0)}
    for i, x in enumerate(options.keep_top, start=1):
        out[f"drop@{x}"] = max(-delta[i], 0.0)
        out[f"increase@{x}"] = float(delta[i] > 0)
    rd = delta[1 + len(options.keep_top):]
    morf = [d for d, (m, _) in zip(rd, road) if m]
    lerf = [d for d, (m, _) in zip(rd, road) if not m]
    out["road_morf"] = float(np.mean(morf)) if morf else float("nan")
    out["road_lerf"] = float(np.mean(lerf)) if lerf else float("nan")
    out["road_combined"] = (out["road_lerf"] - out["road_morf"]) / 2
    out["flat"] = 0.0
    return {k: float(v) for k, v in out.items()}


def mean_quality(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over several heatmaps, NaN entries (flat heatmaps) left out; NaN when all are."""
    keys = rows[0].keys() if rows else []
    out = {}
    for k in keys:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        v = v[~np.isnan(v)]
        out[k] = float(v.mean()) if len(v) else float("nan")
    return out
