"""Kernels for the fused patch-extraction + CAM-weighting step. ``reference`` is the NumPy implementation
(the CPU path and the oracle for accelerated kernels)."""

from gcage_fast.kernels.reference import fuse_cam, fuse_cam_from_patches, gather_patches

__all__ = ["fuse_cam", "fuse_cam_from_patches", "gather_patches"]
