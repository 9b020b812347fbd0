"""Reference implementation of the fused step (DESIGN.md §2 step 5): patch gather + CAM upsampling + per-patch
min-max + the 4-channel G-CAGE input. NumPy only.

This is the test oracle: the production host version (``kernels/cpu.py``, which scans, training, export parity
checks and benchmarks run) and the Triton and CUDA kernels must match it. Nothing in production calls its fused step.

Conventions:
- ``images`` is a sequence of uint8 arrays H×W×3 (RGB); ``boxes`` is an int array (N, 3) of
  ``(image_index, x, y)``, the top-left corner of each P×P patch.
- CAMs are (N, h, w) non-negative maps (7×7 for SuSy at 224). Upsampling is bilinear with
  ``align_corners=False`` (PyTorch's ``F.interpolate`` semantics, source index clamped at 0).
- Min-max normalisation is per patch over the upsampled P×P map. A flat map (max − min ≤ 1e-6·max|x|,
  which includes an all-zero map) becomes all zeros: it carries no localisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "PATCH",
    "FLAT_RTOL",
    "bilinear_matrix",
    "gather_patches",
    "upsample_cams",
    "minmax_normalize",
    "fuse_cam",
    "fuse_cam_from_patches",
    "quantize_cams",
]

PATCH = 224
FLAT_RTOL = 1e-6


@lru_cache(maxsize=16)
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix U with ``U @ v`` = 1-D bilinear resize of v, align_corners=False."""
    scale = n_in / n_out
    u = np.zeros((n_out, n_in), dtype=np.float64)
    for o in range(n_out):
        src = max(scale * (o + 0.5) - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = i0 + 1 if i0 < n_in - 1 else i0
        lam = min(src - i0, 1.0)
        u[o, i0] += 1.0 - lam
        u[o, i1] += lam
    u.setflags(write=False)
    return u


def gather_patches(images: Sequence[np.ndarray], boxes: np.ndarray, size: int = PATCH,
                   dtype: np.dtype = np.float32) -> np.ndarray:
    """The base detector's input: (N, 3, size, size) in [0, 1], channel-first."""
    boxes = np.asarray(boxes)
    out = np.empty((len(boxes), 3, size, size), dtype=dtype)
    for n, (idx, x, y) in enumerate(boxes):
        patch = images[int(idx)][y:y + size, x:x + size]
        if patch.shape[:2] != (size, size):
            raise ValueError(f"patch {n} at x={x}, y={y} leaves image {int(idx)} of shape {images[int(idx)].shape}")
        out[n] = patch.transpose(2, 0, 1)
    out /= 255.0  # exactly SuSy's uint8 / 255.0, correctly rounded in the output dtype
    return out


def upsample_cams(cams: np.ndarray, size: int = PATCH) -> np.ndarray:
    """(N, h, w) -> (N, size, size) float32, bilinear, align_corners=False."""
    cams = np.asarray(cams, dtype=np.float64)
    uh = bilinear_matrix(cams.shape[1], size)
    uw = bilinear_matrix(cams.shape[2], size)
    return (uh @ cams @ uw.T).astype(np.float32)


def minmax_normalize(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max to [0, 1] over all but the first axis; flat maps -> zeros. Returns float32."""
    maps = np.asarray(maps, dtype=np.float32)
    flat = maps.reshape(len(maps), -1)
    lo = flat.min(axis=1)
    hi = flat.max(axis=1)
    rng = hi - lo
    scale = np.maximum(np.abs(hi), np.abs(lo))
    ok = rng > FLAT_RTOL * scale
    out = np.zeros_like(maps)
    if ok.any():
        shape = (-1,) + (1,) * (maps.ndim - 1)
        out[ok] = (maps[ok] - lo[ok].reshape(shape)) / rng[ok].reshape(shape)
    return out


def fuse_cam_from_patches(patches: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """(N, 3, P, P) float patches in [0, 1] + (N, h, w) CAMs -> (N, 4, P, P) float32 G-CAGE input."""
    n, _, p, _ = patches.shape
    out = np.empty((n, 4, p, p), dtype=np.float32)
    out[:, :3] = patches
    out[:, 3] = minmax_normalize(upsample_cams(cams, p))
    return out


def fuse_cam(images: Sequence[np.ndarray], boxes: np.ndarray, cams: np.ndarray, size: int = PATCH) -> np.ndarray:
    """The fused step from the uint8 images, the patch boxes and the CAMs: (N, 4, size, size) float32."""
    return fuse_cam_from_patches(gather_patches(images, boxes, size), cams)


def quantize_cams(cams: np.ndarray) -> np.ndarray:
    """(N, h, w) CAMs -> (N, h*w) uint8: min-max per map (flat -> 0), x255, rounded. Stored in the output."""
    norm = minmax_normalize(cams)
    return np.rint(norm.reshape(len(norm), -1) * 255.0).astype(np.uint8)
