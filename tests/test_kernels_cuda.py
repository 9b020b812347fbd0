"""The CUDA C fused step: compile checks with nvcc (no GPU needed), launcher errors on CPU, and parity with the
NumPy oracle on a GPU (marked gpu, skipped without one)."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from gcage_fast.errors import EngineError, GcageError
from gcage_fast.kernels import cuda_fuse
from gcage_fast.kernels import reference as ref
from gcage_fast.kernels.batching import pack_images, patch_table

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_nvcc
@pytest.mark.parametrize("flags,suffix", [(["-arch=compute_80", "-ptx"], "ptx"), (["-cubin", "-arch=sm_90"], "cubin")])
def test_source_compiles_with_nvcc(tmp_path, flags, suffix):
    out = tmp_path / f"fuse_cam.{suffix}"
    proc = subprocess.run([NVCC, *flags, "-Werror", "all-warnings", "-o", str(out), str(cuda_fuse.SOURCE_PATH)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    if suffix == "ptx":
        text = out.read_text()
        assert ".entry fuse_cam_f32" in text and ".entry fuse_cam_f16" in text  # extern "C": unmangled names


def test_source_constants_match_the_launcher():
    src = cuda_fuse.source()
    assert f"#define GCAGE_THREADS {cuda_fuse.THREADS}" in src
    assert f"#define GCAGE_MAX_CAM {cuda_fuse.MAX_CAM}" in src
    assert "#include" not in src  # compiles with NVRTC without include paths


def test_launcher_errors_are_clear(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)
    monkeypatch.setitem(__import__("sys").modules, "pycuda", None)
    cuda_fuse._load.cache_clear()
    try:
        with pytest.raises(GcageError, match="cupy"):
            cuda_fuse.load_launcher("cupy")
        with pytest.raises(EngineError, match="no launcher for the CUDA C kernel"):
            cuda_fuse.load_launcher()
    finally:
        cuda_fuse._load.cache_clear()


def _case(seed, p=32, n=6, cam_hw=(7, 7)):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(p, p, 3), (2 * p + 3, 3 * p - 1, 3)]]
    boxes = np.array([(i % 2, rng.integers(0, images[i % 2].shape[1] - p + 1),
                       rng.integers(0, images[i % 2].shape[0] - p + 1)) for i in range(n)], dtype=np.int64)
    cams = (rng.random((n, *cam_hw)) * 3).astype(np.float32)
    cams[1] = 0.0
    cams[2] = 0.5
    return images, boxes, cams


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
@pytest.mark.parametrize("p", [32, 224])
def test_cuda_fuse_matches_reference(dtype, tol, p):
    images, boxes, cams = _case(0, p)
    packed = pack_images(images, "cuda")
    base, stride = patch_table(packed, torch.from_numpy(boxes))
    out = torch.full((len(boxes), 4, p, p), float("nan"), dtype=dtype, device="cuda")
    launcher = cuda_fuse.load_launcher()
    got, _ = launcher.fuse_cam(packed.flat, base, stride, p, cams=torch.from_numpy(cams).cuda(), dtype=dtype,
                               out=out)
    got = got.float().cpu().numpy()
    assert np.isfinite(got).all()
    expected = ref.fuse_cam(images, boxes, cams, p)
    assert (np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)).max() <= tol


@pytest.mark.gpu
@needs_gpu
def test_cuda_fuse_from_activations():
    p, k = 32, 100
    images, boxes, _ = _case(1, p)
    rng = np.random.default_rng(2)
    acts = rng.random((len(boxes), k, 7, 7)).astype(np.float32)
    weights = rng.standard_normal((len(boxes), k)).astype(np.float32)
    cam64 = np.maximum(np.einsum("nk,nkhw->nhw", weights.astype(np.float64), acts.astype(np.float64)), 0)
    packed = pack_images(images, "cuda")
    base, stride = patch_table(packed, torch.from_numpy(boxes))
    got, cams = cuda_fuse.load_launcher().fuse_cam(packed.flat, base, stride, p,
                                                   activations=torch.from_numpy(acts).cuda(),
                                                   weights=torch.from_numpy(weights).cuda())
    np.testing.assert_allclose(cams.cpu().numpy(), cam64, rtol=1e-5, atol=1e-5)
    expected = ref.fuse_cam(images, boxes, cam64.astype(np.float32), p)
    np.testing.assert_allclose(got.cpu().numpy(), expected, rtol=1e-5, atol=1e-5)
