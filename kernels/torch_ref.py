"""The three device kernels written with torch operations: the ``reference`` implementation of
:mod:`gcage_fast.kernels.dispatch` (the choice on CPU tensors, and a fallback on a GPU without Triton).

Same signatures as :mod:`gcage_fast.kernels.triton_kernels`; same functions as the NumPy oracle
(:mod:`gcage_fast.kernels.reference`, :mod:`gcage_fast.scoring.patches`). Inputs are a flat uint8 image buffer and
per-patch ``(base, stride)`` tables (:mod:`gcage_fast.kernels.batching`).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from gcage_fast.kernels.reference import FLAT_RTOL

__all__ = ["patch_contrast", "gather_patches", "cam_from_activations", "upsample_normalize", "fuse_cam",
           "patch_pixels"]

_GRAY = (0.2989, 0.587, 0.114)


def patch_pixels(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int) -> torch.Tensor:
    """(N, 3, patch, patch) uint8 pixels of each patch, channel-first (one strided view per patch, stacked)."""
    if len(base) == 0:
        return torch.empty((0, 3, patch, patch), dtype=torch.uint8, device=flat.device)
    views = [flat.as_strided((3, patch, patch), (1, s, 3), b) for b, s in zip(base.tolist(), stride.tolist())]
    return torch.stack(views)


def patch_contrast(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
                   distance: int = 5) -> torch.Tensor:
    """(N,) int64: per patch, sum over rows and columns of ``(g[:, c+distance] - g[:, c])**2``, where ``g`` is the
    truncating grayscale ``uint8(0.2989 R + 0.587 G + 0.114 B)`` computed in float32 (as
    :func:`gcage_fast.scoring.patches.contrast_sums`)."""
    if len(base) == 0:
        return torch.zeros(0, dtype=torch.int64, device=flat.device)
    px = patch_pixels(flat, base, stride, patch).to(torch.float32)
    w = [torch.tensor(v, dtype=torch.float32, device=flat.device) for v in _GRAY]
    g = (w[0] * px[:, 0] + w[1] * px[:, 1] + w[2] * px[:, 2]).to(torch.uint8).to(torch.int32)
    d = g[:, :, distance:] - g[:, :, :-distance]
    return (d * d).sum(dim=(1, 2), dtype=torch.int64)


def gather_patches(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 3, patch, patch) in [0, 1]: the patch pixels / 255, computed in float32, then cast to ``dtype``."""
    return (patch_pixels(flat, base, stride, patch).to(torch.float32) / 255.0).to(dtype)


def cam_from_activations(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N, h, w) float32 ``relu(sum_k weights[n, k] * activations[n, k])`` from (N, K, h, w) and (N, K)."""
    cam = torch.einsum("nk,nkhw->nhw", weights.float(), activations.float())
    return torch.relu(cam)


def upsample_normalize(cams: torch.Tensor, size: int) -> torch.Tensor:
    """(N, h, w) -> (N, size, size) float32: bilinear (align_corners=False), per-map min-max, flat maps -> 0
    (``max - min <= FLAT_RTOL * max(|max|, |min|)``)."""
    up = F.interpolate(cams.float()[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    flat = up.reshape(len(up), -1)
    lo = flat.min(dim=1).values
    hi = flat.max(dim=1).values
    rng = hi - lo
    ok = rng > FLAT_RTOL * torch.maximum(hi.abs(), lo.abs())
    safe = torch.where(ok, rng, torch.ones_like(rng))
    norm = (up - lo[:, None, None]) / safe[:, None, None]
    return torch.where(ok[:, None, None], norm, torch.zeros_like(norm))


def fuse_cam(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
             cams: torch.Tensor | None = None, activations: torch.Tensor | None = None,
             weights: torch.Tensor | None = None,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The G-CAGE head input (N, 4, patch, patch) and the (N, h, w) float32 CAMs it used.

    Channels 0-2: the patch pixels / 255; channel 3: the CAM upsampled and min-max normalised
    (:func:`upsample_normalize`). The CAM is ``cams`` when given, else computed from ``activations`` and
    ``weights`` (:func:`cam_from_activations`).
    """
    if cams is None:
        if activations is None or weights is None:
            raise ValueError("fuse_cam needs cams, or activations and weights")
        cams = cam_from_activations(activations, weights)
    cams = cams.float()
    out = torch.empty((len(base), 4, patch, patch), dtype=dtype, device=flat.device)
    if len(base):
        out[:, :3] = gather_patches(flat, base, stride, patch)
        out[:, 3] = upsample_normalize(cams, patch)
    return out, cams
