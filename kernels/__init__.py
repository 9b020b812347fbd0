"""Kernels for the fused patch-extraction + CAM-weighting step. ``reference`` is the NumPy oracle (float64) that
every other implementation is tested against; ``cpu`` is the production host fused step (float32), the one that
CPU scans, training, export parity checks and benchmarks run, re-exported here as ``fuse_cam_from_patches``.

Device kernels (patch_contrast, gather_patches, fuse_cam on torch tensors): ``batching`` (packed images, patch
tables, device top-k), ``torch_ref`` (torch operations), ``triton_kernels`` (Triton), ``cuda_fuse`` with
``cuda/fuse_cam.cu`` (CUDA C), chosen by ``dispatch.resolve_kernels``. None of them is imported here: torch and
triton stay out of light imports."""

from gcage_fast.kernels.cpu import fuse_cam_from_patches
from gcage_fast.kernels.reference import gather_patches

__all__ = ["fuse_cam_from_patches", "gather_patches"]
