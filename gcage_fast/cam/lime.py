"""LIME on superpixels for one patch (Ribeiro et al., KDD 2016; defaults of marcotcr/lime's image explainer).

Superpixels: a regular grid by default, or scikit-image's SLIC when it is installed (``segmentation="slic"``).
Samples: ``num_samples`` random binary masks (the first keeps everything); switched-off superpixels are filled
with their own mean colour. Every masked patch goes through the base engine in large batches. Surrogate: ridge
regression (alpha 1, with intercept) weighted by an exponential kernel (width 0.25) of the cosine distance to
the unmasked patch. The heatmap paints each superpixel with its coefficient. Seeded: same inputs and seed, same
explanation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gcage_fast.cam.perturbation import target_from_probs
from gcage_fast.cam.registry import PatchInputs
from gcage_fast.cam.targets import CamTarget
from gcage_fast.errors import ConfigError
from gcage_fast.optional import available

__all__ = ["grid_segments", "segments_for", "lime", "ridge_weighted", "explain_lime"]


def grid_segments(size: int, cells: int = 8) -> np.ndarray:
    """(size, size) int labels of a cells×cells grid."""
    idx = np.minimum(np.arange(size) * cells // size, cells - 1)
    return (idx[:, None] * cells + idx[None, :]).astype(np.int32)


def segments_for(patch_hwc: np.ndarray, segmentation: str, cells: int = 8) -> np.ndarray:
    if segmentation == "grid":
        return grid_segments(patch_hwc.shape[0], cells)
    if segmentation == "slic":
        if not available("skimage"):
            raise ConfigError("LIME with SLIC superpixels needs scikit-image (pip install scikit-image); "
                              "use the grid segmentation instead")
        from skimage.segmentation import slic

        return slic(patch_hwc, n_segments=cells * cells, compactness=10, start_label=0).astype(np.int32)
    raise ConfigError(f"unknown segmentation {segmentation!r}; choose grid or slic")


def ridge_weighted(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """Weighted ridge regression with an unpenalised intercept: minimises sum w (y - x b - c)^2 + alpha |b|^2,
    as scikit-learn's ``Ridge(alpha).fit(x, y, sample_weight=w)``."""
    wn = w / w.sum()
    xm = (wn[:, None] * x).sum(axis=0)
    ym = float((wn * y).sum())
    xc, yc = x - xm, y - ym
    sw = np.sqrt(w)[:, None]
    a = (xc * sw).T @ (xc * sw) + alpha * np.eye(x.shape[1])
    coef = np.linalg.solve(a, (xc * sw).T @ (yc * sw[:, 0]))
    return coef, ym - float(xm @ coef)


def lime(patch: np.ndarray, target: CamTarget, probs_fn: Callable[[np.ndarray], np.ndarray], reference: np.ndarray,
         num_samples: int = 1000, seed: int = 0, segmentation: str = "grid", cells: int = 8,
         batch_size: int = 64, kernel_width: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Explain one patch (3, P, P) in [0, 1]. Returns (heatmap (1, P, P) relu'd, segments (P, P), coefficients)."""
    hwc = np.ascontiguousarray(patch.transpose(1, 2, 0))
    segments = segments_for((hwc * 255).astype(np.uint8), segmentation, cells)
    n_seg = int(segments.max()) + 1
    means = np.stack([hwc[segments == s].mean(axis=0) if (segments == s).any() else np.zeros(3)
                      for s in range(n_seg)])
    fill = means[segments].transpose(2, 0, 1).astype(np.float32)
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, size=(num_samples, n_seg)).astype(np.float32)
    z[0] = 1.0
    y = np.empty(num_samples, dtype=np.float64)
    for start in range(0, num_samples, batch_size):
        zb = z[start:start + batch_size]
        keep = zb[:, segments][:, None]  # (b, 1, P, P)
        batch = (patch[None] * keep + fill[None] * (1.0 - keep)).astype(np.float32)
        y[start:start + len(zb)] = target_from_probs(target, probs_fn(batch), reference)
    cos = (z @ np.ones(n_seg)) / (np.linalg.norm(z, axis=1) * np.sqrt(n_seg) + 1e-12)
    distance = 1.0 - cos
    weights = np.sqrt(np.exp(-(distance**2) / kernel_width**2))
    coef, _ = ridge_weighted(z.astype(np.float64), y, weights)
    heat = np.maximum(coef[segments], 0).astype(np.float32)[None]
    return heat, segments, coef


def explain_lime(p: PatchInputs) -> tuple[None, np.ndarray]:
    """The ``explain`` entry of LIME in gcage_fast.cam.registry: no raw map, the min-max normalised heatmap."""
    from gcage_fast.kernels.reference import minmax_normalize

    heat, _, _ = lime(p.patch, p.target, p.probs_fn, p.probs, p.lime_samples, p.seed, p.lime_segmentation,
                      batch_size=p.batch_size)
    return None, minmax_normalize(heat)[0]
