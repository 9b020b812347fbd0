"""The Triton kernels under the CPU interpreter (TRITON_INTERPRET=1) against the NumPy oracle.

Small patch sizes (P = 16, 32) keep the interpreter fast; one test runs the real P = 224. Outputs are poisoned
(NaN) before each launch so a missed element shows up. Deliberately wrong launches (align_corners=True resize,
off-by-one strides) must fail the same parity checks.
"""

import time

import numpy as np
import pytest
import torch

from gcage_fast.kernels import reference as ref
from gcage_fast.kernels import torch_ref
from gcage_fast.kernels.batching import grid_boxes, pack_images, patch_table
from gcage_fast.scoring.patches import contrast_sums, grayscale

FP32_TOL = 1e-5
FP16_TOL = 2e-3


def _images(seed, shapes):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes]


def _assert_close(out, expected, tol):
    out = np.asarray(out, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert out.shape == expected.shape
    assert np.isfinite(out).all(), "an element was not written (poison left)"
    err = np.abs(out - expected) / np.maximum(np.abs(expected), 1.0)
    assert err.max() <= tol, f"max relative error {err.max():.3g} > {tol}"


def _cams(rng, n, h, w):
    cams = (rng.random((n, h, w)) * rng.uniform(1e-3, 10)).astype(np.float32)
    if n > 1:
        cams[1] = 0.0  # all-zero map -> zeros
    if n > 2:
        cams[2] = 0.37  # flat map -> zeros
    if n > 3:
        cams[3, h // 2, w // 2] = 50.0  # an interior peak
    return cams


SHAPES = [
    [(16, 16)],  # a 1x1 grid
    [(16, 16), (35, 50), (47, 20)],  # different sizes, remainders that are not multiples of P
    [(70, 33), (16, 81)],
]


@pytest.mark.parametrize("shapes", SHAPES)
def test_contrast_matches_numpy(triton_interpreted, shapes):
    p = 16
    images = _images(1, shapes)
    packed = pack_images(images)
    boxes, counts, _ = grid_boxes(packed, p)
    base, stride = patch_table(packed, boxes)
    got = triton_interpreted.patch_contrast(packed.flat, base, stride, p)
    expected = np.concatenate([contrast_sums(grayscale(im), p) for im in images])
    assert got.dtype == torch.int64 and len(got) == sum(counts)
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(torch_ref.patch_contrast(packed.flat, base, stride, p).numpy(), expected)


def test_contrast_grayscale_truncation(triton_interpreted):
    """Every grey level and colours whose float32 grayscale lands near an integer truncate as NumPy does."""
    p = 16
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    img[:16, :16] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)  # r = g = b: 0.9999 * v truncates to v-1
    packed = pack_images([img])
    boxes, _, _ = grid_boxes(packed, p)
    base, stride = patch_table(packed, boxes)
    got = triton_interpreted.patch_contrast(packed.flat, base, stride, p, distance=3)
    np.testing.assert_array_equal(got.numpy(), contrast_sums(grayscale(img), p, 3))


def _random_boxes(images, p, n, seed):
    """Boxes anywhere inside the images (not only on the grid), from several images."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        idx = i % len(images)
        h, w = images[idx].shape[:2]
        rows.append((idx, rng.integers(0, w - p + 1), rng.integers(0, h - p + 1)))
    return np.array(rows, dtype=np.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("p", [16, 21])
def test_gather_matches_reference(triton_interpreted, dtype, p):
    images = _images(2, [(21, 21), (40, 57), (64, 23)])
    packed = pack_images(images)
    boxes = _random_boxes(images, p, 7, seed=p)
    base, stride = patch_table(packed, torch.from_numpy(boxes))
    out = torch.full((len(boxes), 3, p, p), float("nan"), dtype=dtype)
    got = triton_interpreted.gather_patches(packed.flat, base, stride, p, dtype=dtype, out=out)
    assert got is out
    expected = ref.gather_patches(images, boxes, p)
    if dtype == torch.float32:
        np.testing.assert_array_equal(got.numpy(), expected)  # pixel / 255 correctly rounded
    else:
        _assert_close(got.float().numpy(), expected, FP16_TOL)


@pytest.mark.parametrize("p,cam_hw,dtype", [
    (16, (7, 7), torch.float32),
    (16, (3, 3), torch.float32),
    (32, (7, 7), torch.float32),
    (21, (3, 5), torch.float32),
    (16, (7, 7), torch.float16),
])
def test_fuse_from_cams_matches_reference(triton_interpreted, p, cam_hw, dtype):
    images = _images(3, [(p, p), (2 * p + 3, 3 * p - 1), (p + 5, 2 * p)])
    packed = pack_images(images)
    boxes = _random_boxes(images, p, 6, seed=p + 1)
    base, stride = patch_table(packed, torch.from_numpy(boxes))
    cams = _cams(np.random.default_rng(p), len(boxes), *cam_hw)
    out = torch.full((len(boxes), 4, p, p), float("nan"), dtype=dtype)
    got, used = triton_interpreted.fuse_cam(packed.flat, base, stride, p, cams=torch.from_numpy(cams), dtype=dtype,
                                            out=out)
    assert got is out
    expected = ref.fuse_cam(images, boxes, cams, p)
    _assert_close(got.float().numpy(), expected, FP32_TOL if dtype == torch.float32 else FP16_TOL)
    np.testing.assert_array_equal(used.numpy(), cams)
    assert (got[1:3, 3] == 0).all()  # zero and flat maps


def test_fuse_from_activations_matches_reference(triton_interpreted):
    p, k, h, w = 16, 70, 7, 7  # K not a multiple of the K block
    images = _images(4, [(33, 40), (16, 16)])
    packed = pack_images(images)
    boxes = _random_boxes(images, p, 5, seed=9)
    base, stride = patch_table(packed, torch.from_numpy(boxes))
    rng = np.random.default_rng(10)
    acts = rng.random((len(boxes), k, h, w)).astype(np.float32)
    weights = rng.standard_normal((len(boxes), k)).astype(np.float32)
    weights[1] = -np.abs(weights[1])  # relu clips everything -> zero map
    cam64 = np.maximum(np.einsum("nk,nkhw->nhw", weights.astype(np.float64), acts.astype(np.float64)), 0)
    out = torch.full((len(boxes), 4, p, p), float("nan"))
    got, cams = triton_interpreted.fuse_cam(packed.flat, base, stride, p, activations=torch.from_numpy(acts),
                                            weights=torch.from_numpy(weights), out=out)
    _assert_close(cams.numpy(), cam64, FP32_TOL)
    _assert_close(got.numpy(), ref.fuse_cam(images, boxes, cam64.astype(np.float32), p), FP32_TOL)
    assert (got[1, 3] == 0).all()


def test_wrong_variants_fail_the_parity_check(triton_interpreted):
    """The checks above are sharp enough to catch a wrong resize convention and off-by-one addressing."""
    p = 16
    images = _images(5, [(40, 40), (35, 50)])
    packed = pack_images(images)
    boxes = _random_boxes(images, p, 4, seed=11)
    base, stride = patch_table(packed, torch.from_numpy(boxes))
    cams = _cams(np.random.default_rng(12), len(boxes), 7, 7)
    expected = ref.fuse_cam(images, boxes, cams, p)
    right, _ = triton_interpreted.fuse_cam(packed.flat, base, stride, p, cams=torch.from_numpy(cams))
    _assert_close(right.numpy(), expected, FP32_TOL)
    variants = {
        "align_corners=True": (base, stride, {"_align_corners": True}),
        "row stride + 1 pixel": (base, stride + 3, {}),
        "base + 1 byte": (base + 1, stride, {}),
    }
    for name, (b, s, kw) in variants.items():
        wrong, _ = triton_interpreted.fuse_cam(packed.flat, b, s, p, cams=torch.from_numpy(cams), **kw)
        with pytest.raises(AssertionError):
            _assert_close(wrong.numpy(), expected, FP32_TOL)
    wrong_x = triton_interpreted.gather_patches(packed.flat, base, stride + 3, p)
    assert not np.array_equal(wrong_x.numpy(), ref.gather_patches(images, boxes, p))


def test_real_patch_size(triton_interpreted):
    """P = 224 with SuSy's 7x7 CAMs, two images of different sizes (one launch per kernel)."""
    t0 = time.perf_counter()
    images = _images(6, [(224, 224), (230, 451)])
    packed = pack_images(images)
    boxes, _, _ = grid_boxes(packed, 224)
    base, stride = patch_table(packed, boxes)
    sums = triton_interpreted.patch_contrast(packed.flat, base, stride, 224)
    np.testing.assert_array_equal(sums.numpy(), np.concatenate([contrast_sums(grayscale(im)) for im in images]))
    cams = _cams(np.random.default_rng(13), len(boxes), 7, 7)
    out = torch.full((len(boxes), 4, 224, 224), float("nan"))
    got, _ = triton_interpreted.fuse_cam(packed.flat, base, stride, 224, cams=torch.from_numpy(cams), out=out)
    _assert_close(got.numpy(), ref.fuse_cam(images, boxes.numpy(), cams), FP32_TOL)
    x = triton_interpreted.gather_patches(packed.flat, base, stride, 224)
    np.testing.assert_array_equal(x.numpy(), ref.gather_patches(images, boxes.numpy()))
    assert time.perf_counter() - t0 < 60


_GPU_SCRIPT = r"""
import numpy as np, torch
from gcage_fast.kernels import reference as ref
from gcage_fast.kernels.batching import grid_boxes, pack_images, patch_table
from gcage_fast.kernels.dispatch import resolve_kernels
from gcage_fast.scoring.patches import contrast_sums, grayscale

ks = resolve_kernels("triton", "cuda")
assert ks.name == "triton" and "compiled" in ks.detail, ks.detail
rng = np.random.default_rng(0)
for p in (32, 224):
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in [(p, p), (3 * p + 5, 2 * p + 7)]]
    packed = pack_images(images, "cuda")
    boxes, _, _ = grid_boxes(packed, p)
    base, stride = patch_table(packed, boxes)
    sums = ks.patch_contrast(packed.flat, base, stride, p).cpu().numpy()
    assert (sums == np.concatenate([contrast_sums(grayscale(im), p) for im in images])).all()
    b = boxes.cpu().numpy()
    for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        out = torch.full((len(b), 3, p, p), float("nan"), dtype=dtype, device="cuda")
        x = ks.gather_patches(packed.flat, base, stride, p, dtype=dtype, out=out).float().cpu().numpy()
        assert np.abs(x - ref.gather_patches(images, b, p)).max() <= tol
        cams = (rng.random((len(b), 7, 7)) * 3).astype(np.float32)
        cams[0] = 0.5
        out = torch.full((len(b), 4, p, p), float("nan"), dtype=dtype, device="cuda")
        f, _ = ks.fuse_cam(packed.flat, base, stride, p, cams=torch.from_numpy(cams).cuda(), dtype=dtype, out=out)
        f = f.float().cpu().numpy()
        e = ref.fuse_cam(images, b, cams, p)
        assert np.isfinite(f).all() and (np.abs(f - e) / np.maximum(np.abs(e), 1)).max() <= tol
print("ok")
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_gpu():
    """The compiled kernels, in a fresh process (this one holds the interpreted build)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _GPU_SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]
