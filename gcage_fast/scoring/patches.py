"""Patch grid and selection, exactly SuSy's released inference path (METHOD.md §1.7, DESIGN.md §2 step 2).

- Grid ``floor`` (the default): ``num_x = W // P``, ``num_y = H // P`` (the right and bottom remainders are
  dropped); patch ``k = i * num_y + j`` sits at ``x = P*i, y = P*j`` (column-major).
- Grid ``cover``: the floor grid plus, when ``W % P != 0``, one more column at ``x = W - P`` and, when
  ``H % P != 0``, one more row at ``y = H - P`` (the last column and row shifted to the image edge, as SuSy's own
  evaluation does), so every pixel lies in at least one patch. Same k order over the extended grid.
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

from gcage_fast.config import GRIDS
from gcage_fast.kernels.reference import PATCH

__all__ = ["PATCH", "DISTANCE", "GRIDS", "grayscale", "grid_shape", "grid_origins", "grid_boxes", "contrast_sums",
           "select", "pad_to_patch", "Selection"]

DISTANCE = 5
#: Patch grids: ``floor`` (SuSy's inference grid, remainders dropped) and ``cover`` (plus edge-aligned border
#: patches). The names ``--grid`` accepts (gcage_fast.config validates them).
_W = (np.float32(0.2989), np.float32(0.587), np.float32(0.114))


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 -> uint8 H×W with torchvision's truncating weights (computed in float32)."""
    r = rgb[..., 0].astype(np.float32)
    g = rgb[..., 1].astype(np.float32)
    b = rgb[..., 2].astype(np.float32)
    return (_W[0] * r + _W[1] * g + _W[2] * b).astype(np.uint8)


def _check_grid(grid: str) -> None:
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose {' or '.join(GRIDS)}")


def grid_origins(height: int, width: int, patch: int = PATCH, grid: str = "floor") -> tuple[list[int], list[int]]:
    """``(xs, ys)``: the left edges of the grid's columns and the top edges of its rows, in order."""
    _check_grid(grid)
    xs = [patch * i for i in range(width // patch)]
    ys = [patch * j for j in range(height // patch)]
    if grid == "cover":
        if width % patch and width >= patch:
            xs.append(width - patch)
        if height % patch and height >= patch:
            ys.append(height - patch)
    return xs, ys


def grid_shape(height: int, width: int, patch: int = PATCH, grid: str = "floor") -> tuple[int, int]:
    """``(num_x, num_y)`` of the ``grid`` (``floor``: ``W // P, H // P``; ``cover`` adds a border column/row)."""
    xs, ys = grid_origins(height, width, patch, grid)
    return len(xs), len(ys)


def grid_boxes(height: int, width: int, patch: int = PATCH, grid: str = "floor") -> np.ndarray:
    """Every patch of the grid as ``(x, y)`` corners, (num_x * num_y, 2) int32, row k = i * num_y + j."""
    xs, ys = grid_origins(height, width, patch, grid)
    bx = np.repeat(np.asarray(xs, dtype=np.int32), len(ys))
    by = np.tile(np.asarray(ys, dtype=np.int32), len(xs))
    return np.stack([bx, by], axis=1).reshape(-1, 2)


def contrast_sums(gray: np.ndarray, patch: int = PATCH, distance: int = DISTANCE, grid: str = "floor") -> np.ndarray:
    """Sum of squared horizontal differences at ``distance`` per patch, int64, indexed by k (column-major).

    contrast_k = sums[k] / (patch * (patch - distance)).
    """
    xs, ys = grid_origins(gray.shape[0], gray.shape[1], patch, grid)
    floor_x = gray.shape[1] // patch
    sums = np.zeros((len(xs), len(ys)), dtype=np.int64)
    for j, y in enumerate(ys):  # one strip of patch rows at a time keeps the int32 temporary small
        rows = gray[y:y + patch]
        strip = rows[:, : floor_x * patch].astype(np.int32).reshape(patch, floor_x, patch)
        d = strip[:, :, distance:] - strip[:, :, :-distance]
        sums[:floor_x, j] = (d * d).sum(axis=(0, 2), dtype=np.int64)
        if len(xs) > floor_x:  # cover: the border column at x = W - P
            edge = rows[:, xs[-1]:xs[-1] + patch].astype(np.int32)
            d = edge[:, distance:] - edge[:, :-distance]
            sums[floor_x, j] = (d * d).sum(dtype=np.int64)
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


def select(rgb: np.ndarray, top_k: int, patch: int = PATCH, distance: int = DISTANCE,
           grid: str = "floor") -> Selection:
    """Grid, contrast and top-k of an RGB uint8 image whose sides are both >= ``patch``; the boxes are the real
    ``(x, y)`` corners in the image (under ``cover``, a border patch overlaps its floor neighbour)."""
    sums = contrast_sums(grayscale(rgb), patch, distance, grid)
    order = np.lexsort((np.arange(len(sums)), -sums))[:top_k]  # primary: -sum ascending; ties: lower k
    boxes = grid_boxes(rgb.shape[0], rgb.shape[1], patch, grid)[order]
    contrast = sums[order].astype(np.float64) / float(patch * (patch - distance))
    return Selection(order.astype(np.int64), boxes, contrast, len(sums))
