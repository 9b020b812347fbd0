"""Kernels for the fused patch-extraction + CAM-weighting step. ``reference`` is the NumPy implementation
(the CPU path and the oracle for accelerated kernels); ``cpu`` its fast float32 form used by CPU scans.

Device kernels (patch_contrast, gather_patches, fuse_cam on torch tensors): ``batching`` (packed images, patch
tables, device top-k), ``torch_ref`` (torch operations), ``triton_kernels`` (Triton), ``cuda_fuse`` with
``cuda/fuse_cam.cu`` (CUDA C), chosen by ``dispatch.resolve_kernels``. None of them is imported here: torch and
triton stay out of light imports."""

from gcage_fast.kernels.reference import fuse_cam, fuse_cam_from_patches, gather_patches

__all__ = ["fuse_cam", "fuse_cam_from_patches", "gather_patches"]
