"""Patch grid and selection, exactly SuSy's released inference path (METHOD.md §1.7, DESIGN.md §2 step 2).

- Grid: ``num_x = W // P``, ``num_y = H // P`` (floor: right and bottom remainders are dropped); patch
  ``k = i * num_y + j`` sits at ``x = P*i, y = P*j`` (column-major).
- Grayscale: torchvision's ``0.2989 R + 0.587 G + 0.114 B`` in float32, truncated to uint8.
- Contrast: ``mean((g[:, 5:] - g[:, :-5])**2)`` over the patch, equal to scikit-image's GLCM contrast at
  distance 5, angle 0, 256 levels, symmetric, normed. Sums are exact integers, so ranking is exact.
- Selection: the ``top_k`` patches by descending contrast, ties broken by the lower index k.

NumPy only (this module runs in the decode workers). ``PATCH`` is re-exported from
:mod:`gcage_fast.kernels.reference`, where the patch size has its one definition (kernels sit below scoring).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gcage_fast.kernels.reference import PATCH

__all__ = ["PATCH", "DISTANCE", "grayscale", "grid_shape", "contrast_sums", "select", "pad_to_patch", "Selection"]

DISTANCE = 5
_W = (np.float32(0.2989), np.float32(0.587), np.float32(0.114))


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 -> uint8 H×W with torchvision's truncating weights (computed in float32)."""
    r = rgb[..., 0].astype(np.float32)
    g = rgb[..., 1].astype(np.float32)
    b = rgb[..., 2].astype(np.float32)
    return (_W[0] * r + _W[1] * g + _W[2] * b).astype(np.uint8)


def grid_shape(height: int, width: int, patch: int = PATCH) -> tuple[int, int]:
    """``(num_x, num_y)`` of the floor grid."""
    return width // patch, height // patch


def contrast_sums(gray: np.ndarray, patch: int = PATCH, distance: int = DISTANCE) -> np.ndarray:
    """Sum of squared horizontal differences at ``distance`` per patch, int64, indexed by k (column-major).

    contrast_k = sums[k] / (patch * (patch - distance)).
    """
    num_x, num_y = grid_shape(gray.shape[0], gray.shape[1], patch)
    sums = np.zeros((num_x, num_y), dtype=np.int64)
    for j in range(num_y):  # one strip of patch rows at a time keeps the int32 temporary small
        strip = gray[j * patch:(j + 1) * patch, : num_x * patch].astype(np.int32)
        strip = strip.reshape(patch, num_x, patch)
        d = strip[:, :, distance:] - strip[:, :, :-distance]
        sums[:, j] = (d * d).sum(axis=(0, 2), dtype=np.int64)
    return sums.reshape(-1)


def pad_to_patch(rgb: np.ndarray, patch: int = PATCH) -> tuple[np.ndarray, bool]:
    """Edge-replicate pad (bottom/right) so both sides are at least ``patch``. Returns (image, padded)."""
    h, w = rgb.shape[:2]
    if h >= patch and w >= patch:
        return rgb, False
    pads = ((0, max(0, patch - h)), (0, max(0, patch - w)), (0, 0))
    return np.pad(rgb, pads, mode="edge"), True


@dataclass(frozen=True)
class Selection:
    """Selected patches of one image: indices k, their (x, y) corners and contrasts, plus the grid size."""

    indices: np.ndarray  # (n,) int64, best first
    boxes: np.ndarray  # (n, 2) int32, (x, y)
    contrast: np.ndarray  # (n,) float64
    n_total: int


def select(rgb: np.ndarray, top_k: int, patch: int = PATCH, distance: int = DISTANCE) -> Selection:
    """Grid, contrast and top-k of an RGB uint8 image whose sides are both >= ``patch``."""
    sums = contrast_sums(grayscale(rgb), patch, distance)
    order = np.lexsort((np.arange(len(sums)), -sums))[:top_k]  # primary: -sum ascending; ties: lower k
    num_y = rgb.shape[0] // patch
    boxes = np.stack([(order // num_y) * patch, (order % num_y) * patch], axis=1).astype(np.int32)
    contrast = sums[order].astype(np.float64) / float(patch * (patch - distance))
    return Selection(order.astype(np.int64), boxes, contrast, len(sums))
