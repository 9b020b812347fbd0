"""Triton implementations of the three device kernels (Triton 3.6-3.7 language only).

Same signatures and results as :mod:`gcage_fast.kernels.torch_ref`; inputs are a flat uint8 image buffer and
per-patch ``(base, stride)`` tables (:mod:`gcage_fast.kernels.batching`), so one launch serves patches of
several images of different sizes. The patch size P is a compile-time parameter (224 in production; tests use
small P).

- ``patch_contrast``: one program per patch reads the RGB pixels, forms the truncating grayscale in registers
  (float32, launched with ``enable_fp_fusion=False`` so ``0.2989 R + 0.587 G + 0.114 B`` is rounded after each
  operation exactly as NumPy does; a fused multiply-add could move a value across an integer and change the
  truncation) and accumulates the distance-``D`` squared differences exactly (int32 per lane, int64 total).
- ``gather_patches``: programs over (patch, block of rows) write ``pixel / 255`` (correctly rounded division) in
  float32 or float16.
- ``fuse_cam``: one program per patch. When given activations and weights it first forms the CAM
  ``relu(sum_k w_k A_k)`` and writes it to the returned (N, h, w) CAM tensor. Pass 1 writes the three pixel
  channels (each image byte is read once) and reduces the min and max of the bilinearly upsampled CAM; pass 2
  recomputes the upsampled value (four taps of an L1-resident h×w map) and writes it min-max normalised.
  The min and max are taken over the upsampled map, not the h×w map: with align_corners=False at 7 -> 224 no
  output pixel falls on an interior CAM node, so an interior extreme is never reached by the upsampled map.

Import this module only after deciding on the interpreter: ``TRITON_INTERPRET=1`` must be in the environment
before the ``@triton.jit`` decorators below run (:mod:`gcage_fast.kernels.dispatch` does this check).
``INTERPRETED`` records which mode the kernels were built in.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gcage_fast.kernels.reference import FLAT_RTOL

__all__ = ["INTERPRETED", "patch_contrast", "gather_patches", "fuse_cam"]


# Reductions use tl.reduce with the combine functions below rather than tl.sum/tl.min/tl.max, and tl.full rather
# than tl.zeros: those are @triton.jit functions of Triton's standard library, built in the mode triton itself was
# imported in, so an interpreted kernel cannot call them when triton was imported before TRITON_INTERPRET=1 was set.
@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _min(a, b):
    return tl.minimum(a, b)


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _gray(ptr, mask):
    r = tl.load(ptr, mask=mask, other=0).to(tl.float32)
    g = tl.load(ptr + 1, mask=mask, other=0).to(tl.float32)
    b = tl.load(ptr + 2, mask=mask, other=0).to(tl.float32)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(tl.int32)


@triton.jit
def _contrast_kernel(img_ptr, base_ptr, stride_ptr, out_ptr, P: tl.constexpr, D: tl.constexpr,
                     BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    base = tl.load(base_ptr + n)
    stride = tl.load(stride_ptr + n)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < P - D
    acc = tl.full([BLOCK_R, BLOCK_C], 0, tl.int32)
    for r0 in range(0, P, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        m = (rows < P)[:, None] & cmask[None, :]
        ptr = img_ptr + base + rows[:, None].to(tl.int64) * stride + cols[None, :] * 3
        d = _gray(ptr + 3 * D, m) - _gray(ptr, m)
        acc += d * d
    tl.store(out_ptr + n, tl.reduce(tl.reduce(acc.to(tl.int64), 1, _add), 0, _add))


@triton.jit
def _gather_kernel(img_ptr, base_ptr, stride_ptr, out_ptr, P: tl.constexpr, BLOCK_R: tl.constexpr,
                   BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    rb = tl.program_id(1)
    base = tl.load(base_ptr + n)
    stride = tl.load(stride_ptr + n)
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_C)
    m = (rows < P)[:, None] & (cols < P)[None, :]
    src = img_ptr + base + rows[:, None].to(tl.int64) * stride + cols[None, :] * 3
    dst = out_ptr + n.to(tl.int64) * (3 * P * P) + rows[:, None] * P + cols[None, :]
    for ch in tl.static_range(3):
        v = tl.load(src + ch, mask=m, other=0).to(tl.float32)
        v = tl.math.div_rn(v, tl.full(v.shape, 255.0, tl.float32))
        tl.store(dst + ch * P * P, v.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _taps(o, N_IN: tl.constexpr, N_OUT: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """Source taps (i0, i1) and weight of i1 for output positions ``o`` of a 1-D bilinear resize."""
    if ALIGN_CORNERS:
        src = o.to(tl.float32) * ((N_IN - 1) / (N_OUT - 1))
    else:
        src = tl.maximum((o.to(tl.float32) + 0.5) * (N_IN / N_OUT) - 0.5, 0.0)
    i0 = tl.minimum(tl.floor(src).to(tl.int32), N_IN - 1)
    i1 = tl.minimum(i0 + 1, N_IN - 1)
    lam = tl.minimum(src - i0.to(tl.float32), 1.0)
    return i0, i1, lam


@triton.jit
def _bilinear(cam, y0, y1, ly, x0, x1, lx, m, CW: tl.constexpr):
    c00 = tl.load(cam + y0[:, None] * CW + x0[None, :], mask=m, other=0.0)
    c01 = tl.load(cam + y0[:, None] * CW + x1[None, :], mask=m, other=0.0)
    c10 = tl.load(cam + y1[:, None] * CW + x0[None, :], mask=m, other=0.0)
    c11 = tl.load(cam + y1[:, None] * CW + x1[None, :], mask=m, other=0.0)
    wx = lx[None, :]
    wy = ly[:, None]
    top = (1.0 - wx) * c00 + wx * c01
    bot = (1.0 - wx) * c10 + wx * c11
    return (1.0 - wy) * top + wy * bot


@triton.jit
def _fuse_kernel(img_ptr, base_ptr, stride_ptr, cam_ptr, act_ptr, w_ptr, out_ptr, K, flat_rtol,
                 P: tl.constexpr, CH: tl.constexpr, CW: tl.constexpr, FROM_ACT: tl.constexpr,
                 ALIGN_CORNERS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_HW: tl.constexpr,
                 BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    cam = cam_ptr + n * (CH * CW)
    if FROM_ACT:
        hw = tl.arange(0, BLOCK_HW)
        hwm = hw < CH * CW
        acc = tl.full([BLOCK_HW], 0.0, tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            km = ks < K
            a = tl.load(act_ptr + n.to(tl.int64) * K * (CH * CW) + ks[:, None] * (CH * CW) + hw[None, :],
                        mask=km[:, None] & hwm[None, :], other=0.0).to(tl.float32)
            w = tl.load(w_ptr + n.to(tl.int64) * K + ks, mask=km, other=0.0).to(tl.float32)
            acc += tl.reduce(a * w[:, None], 0, _add)
        tl.store(cam + hw, tl.maximum(acc, 0.0), mask=hwm)
        tl.debug_barrier()  # the map is read back below by every thread of the program

    base = tl.load(base_ptr + n)
    stride = tl.load(stride_ptr + n)
    out = out_ptr + n.to(tl.int64) * (4 * P * P)
    cols = tl.arange(0, BLOCK_C)
    cm = cols < P
    x0, x1, lx = _taps(cols, CW, P, ALIGN_CORNERS)
    lo = tl.full([BLOCK_R, BLOCK_C], float("inf"), tl.float32)
    hi = tl.full([BLOCK_R, BLOCK_C], float("-inf"), tl.float32)
    for r0 in range(0, P, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        m = (rows < P)[:, None] & cm[None, :]
        src = img_ptr + base + rows[:, None].to(tl.int64) * stride + cols[None, :] * 3
        dst = out + rows[:, None] * P + cols[None, :]
        for ch in tl.static_range(3):
            v = tl.load(src + ch, mask=m, other=0).to(tl.float32)
            v = tl.math.div_rn(v, tl.full(v.shape, 255.0, tl.float32))
            tl.store(dst + ch * P * P, v.to(out_ptr.dtype.element_ty), mask=m)
        y0, y1, ly = _taps(rows, CH, P, ALIGN_CORNERS)
        val = _bilinear(cam, y0, y1, ly, x0, x1, lx, m, CW)
        lo = tl.minimum(lo, tl.where(m, val, float("inf")))
        hi = tl.maximum(hi, tl.where(m, val, float("-inf")))
    lo_s = tl.reduce(tl.reduce(lo, 1, _min), 0, _min)
    hi_s = tl.reduce(tl.reduce(hi, 1, _max), 0, _max)
    rng = hi_s - lo_s
    ok = rng > flat_rtol * tl.maximum(tl.abs(hi_s), tl.abs(lo_s))
    safe = tl.where(ok, rng, 1.0)
    for r0 in range(0, P, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        m = (rows < P)[:, None] & cm[None, :]
        y0, y1, ly = _taps(rows, CH, P, ALIGN_CORNERS)
        val = _bilinear(cam, y0, y1, ly, x0, x1, lx, m, CW)
        norm = tl.where(ok, (val - lo_s) / safe, 0.0)
        tl.store(out + 3 * P * P + rows[:, None] * P + cols[None, :], norm.to(out_ptr.dtype.element_ty), mask=m)


INTERPRETED = not isinstance(_gather_kernel, triton.runtime.JITFunction)


def _blocks(patch: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_C): a power-of-two column block covering a patch row, and about 2048 elements a step."""
    block_c = triton.next_power_of_2(patch)
    return max(1, min(triton.next_power_of_2(patch), 2048 // block_c)), block_c


def _check(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor) -> None:
    if flat.dtype != torch.uint8 or flat.dim() != 1:
        raise ValueError("flat must be a 1-D uint8 tensor")
    if base.dtype != torch.int64 or stride.dtype != torch.int64 or base.shape != stride.shape:
        raise ValueError("base and stride must be int64 tensors of the same shape")
    if not (flat.device == base.device == stride.device):
        raise ValueError("flat, base and stride must be on the same device")


def patch_contrast(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
                   distance: int = 5) -> torch.Tensor:
    """(N,) int64 contrast sums per patch; see :func:`gcage_fast.kernels.torch_ref.patch_contrast`."""
    _check(flat, base, stride)
    out = torch.empty(len(base), dtype=torch.int64, device=flat.device)
    if len(base) == 0:
        return out
    block_r, _ = _blocks(patch)
    block_c = triton.next_power_of_2(max(1, patch - distance))
    _contrast_kernel[(len(base),)](flat, base.contiguous(), stride.contiguous(), out, P=patch, D=distance,
                                   BLOCK_R=block_r, BLOCK_C=block_c, num_warps=8, enable_fp_fusion=False)
    return out


def gather_patches(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
                   dtype: torch.dtype = torch.float32, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 3, patch, patch) ``pixel / 255`` in ``dtype`` (float32 or float16); writes into ``out`` when given."""
    _check(flat, base, stride)
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"gather_patches writes float32 or float16, not {dtype}")
    if out is None:
        out = torch.empty((len(base), 3, patch, patch), dtype=dtype, device=flat.device)
    if len(base) == 0:
        return out
    block_r, block_c = _blocks(patch)
    grid = (len(base), triton.cdiv(patch, block_r))
    _gather_kernel[grid](flat, base.contiguous(), stride.contiguous(), out, P=patch, BLOCK_R=block_r,
                         BLOCK_C=block_c, num_warps=4)
    return out


def fuse_cam(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
             cams: torch.Tensor | None = None, activations: torch.Tensor | None = None,
             weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
             out: torch.Tensor | None = None, _align_corners: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, 4, patch, patch) head input and the (N, h, w) float32 CAMs; see
    :func:`gcage_fast.kernels.torch_ref.fuse_cam`. ``_align_corners`` exists only so tests can show that the
    parity check rejects the wrong resize convention."""
    _check(flat, base, stride)
    n = len(base)
    from_act = cams is None
    if from_act:
        if activations is None or weights is None:
            raise ValueError("fuse_cam needs cams, or activations and weights")
        activations = activations.contiguous()
        weights = weights.contiguous()
        k, ch, cw = activations.shape[1:]
        if weights.shape != (n, k):
            raise ValueError(f"weights must be ({n}, {k}), got {tuple(weights.shape)}")
        cams = torch.empty((n, ch, cw), dtype=torch.float32, device=flat.device)
        act, w = activations, weights
    else:
        cams = cams.to(torch.float32).contiguous()
        k, (ch, cw) = 0, cams.shape[1:]
        act = w = cams  # unused by the kernel (FROM_ACT is False)
    if out is None:
        out = torch.empty((n, 4, patch, patch), dtype=dtype, device=flat.device)
    if n == 0:
        return out, cams
    block_r, block_c = _blocks(patch)
    block_hw = triton.next_power_of_2(ch * cw)
    block_k = max(1, min(64, 4096 // block_hw))
    _fuse_kernel[(n,)](flat, base.contiguous(), stride.contiguous(), cams, act, w, out, k, FLAT_RTOL, P=patch,
                       CH=ch, CW=cw, FROM_ACT=from_act, ALIGN_CORNERS=_align_corners, BLOCK_K=block_k,
                       BLOCK_HW=block_hw, BLOCK_R=block_r, BLOCK_C=block_c, num_warps=8)
    return out, cams
