"""The production fused step on the host: what a CPU scan, training, export parity checks and benchmarks all run.

:func:`fuse_cam_from_patches` computes the same function as :func:`gcage_fast.kernels.reference.fuse_cam_from_patches`
in float32 with one pass over each output byte (the reference works in float64 and through boolean-mask copies,
which made it a fifth of a CPU scan's time). The reference stays the test oracle: tests/test_fuse.py checks this
one against it (relative error <= 1e-5 on random inputs, flat maps, odd sizes). Training builds the head's inputs
with this function too, so the head is trained on exactly the inputs a scan gives it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from gcage_fast.kernels.reference import FLAT_RTOL, bilinear_matrix

__all__ = ["fuse_cam_from_patches", "upsample_normalize"]


@lru_cache(maxsize=16)
def _matrix32(n_in: int, n_out: int) -> np.ndarray:
    m = bilinear_matrix(n_in, n_out).astype(np.float32)
    m.setflags(write=False)
    return m


def upsample_normalize(cams: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """(N, h, w) CAMs -> (N, size, size) float32: bilinear (align_corners=False), per-map min-max, flat -> 0."""
    cams = np.asarray(cams, dtype=np.float32)
    n = len(cams)
    uh = _matrix32(cams.shape[1], size)
    uw = _matrix32(cams.shape[2], size)
    if out is None:
        out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        m = out[i]
        np.matmul(uh @ cams[i], uw.T, out=m)
        lo, hi = float(m.min()), float(m.max())
        rng = hi - lo
        if rng > FLAT_RTOL * max(abs(hi), abs(lo)):
            m -= np.float32(lo)
            m *= np.float32(1.0 / rng)
        else:
            m.fill(0.0)
    return out


def fuse_cam_from_patches(patches: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """(N, 3, P, P) float32 patches in [0, 1] + (N, h, w) CAMs -> (N, 4, P, P) float32 G-CAGE input."""
    n, _, p, _ = patches.shape
    out = np.empty((n, 4, p, p), dtype=np.float32)
    out[:, :3] = patches
    for i in range(n):
        upsample_normalize(cams[i:i + 1], p, out[i, 3:4])
    return out
