"""The fused step's reference (kernels/reference.py) against a plain torch composition:
F.interpolate (bilinear, align_corners=False) + per-patch min-max + torch.cat; and the production fused step
(kernels/cpu.py, the one scans and training share) against the reference."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gcage_fast.evaluation.baseline import torch_minmax
from gcage_fast.kernels.reference import (
    fuse_cam,
    fuse_cam_from_patches,
    gather_patches,
    minmax_normalize,
    quantize_cams,
    upsample_cams,
)


def torch_fuse(images, boxes, cams, size=224):
    patches = torch.stack([torch.from_numpy(images[i][y:y + size, x:x + size]).permute(2, 0, 1) for i, x, y in boxes])
    x = patches.float() / 255.0
    up = F.interpolate(torch.from_numpy(cams).float()[:, None], size=(size, size), mode="bilinear",
                       align_corners=False)[:, 0]
    return torch.cat([x, torch_minmax(up)[:, None]], dim=1).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fuse_matches_torch_composition(seed):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in [(224, 224), (500, 731), (1001, 260)]]
    boxes = np.array([[0, 0, 0], [1, 448, 224], [1, 0, 0], [2, 0, 672], [2, 0, 224], [1, 224, 0]])
    cams = rng.random((len(boxes), 7, 7)).astype(np.float32) * rng.uniform(1e-6, 10)
    cams[1] = 0.0  # all-zero map -> zeros
    cams[2] = 0.37  # flat map -> zeros
    cams[3, 3, 3] = 50.0  # one peak
    ours = fuse_cam(images, boxes, cams)
    ref = torch_fuse(images, boxes, cams)
    assert ours.shape == (6, 4, 224, 224) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[:, :3], ref[:, :3])  # pixels /255 are exact
    assert np.abs(ours[:, 3] - ref[:, 3]).max() <= 1e-6
    assert (ours[1:3, 3] == 0).all()
    assert ours[0, 3].min() == 0.0 and abs(ours[0, 3].max() - 1.0) <= 1e-6


@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (1, 1), (14, 14)])
def test_upsample_matches_interpolate_on_odd_shapes(shape):
    cams = np.random.default_rng(1).random((3,) + shape).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(cams)[:, None], size=(224, 224), mode="bilinear", align_corners=False)
    assert np.abs(upsample_cams(cams) - ref[:, 0].numpy()).max() <= 1e-6


def test_from_patches_equals_from_images():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, size=(448, 672, 3), dtype=np.uint8)
    boxes = np.array([[0, 224, 0], [0, 0, 224], [0, 448, 224]])
    cams = rng.random((3, 7, 7)).astype(np.float32)
    np.testing.assert_array_equal(fuse_cam([img], boxes, cams),
                                  fuse_cam_from_patches(gather_patches([img], boxes), cams))


def test_gather_rejects_boxes_outside_the_image():
    img = np.zeros((300, 300, 3), np.uint8)
    with pytest.raises(ValueError, match="leaves image 0"):
        gather_patches([img], np.array([[0, 100, 100]]))


def test_minmax_and_quantize():
    maps = np.array([[[0.0, 1.0], [2.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 1e-30]]], np.float32)
    norm = minmax_normalize(maps)
    np.testing.assert_allclose(norm[0], [[0, 0.25], [0.5, 1.0]])
    assert (norm[1] == 0).all()
    np.testing.assert_allclose(norm[2], [[0, 0], [0, 1]])  # scale-free: a tiny but real peak is kept
    q = quantize_cams(maps)
    assert q.dtype == np.uint8 and q.shape == (3, 4)
    assert q[0].tolist() == [0, 64, 128, 255] and q[1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (1, 3)])
def test_production_fuse_matches_the_reference(seed, shape):
    from gcage_fast.kernels.cpu import fuse_cam_from_patches as production_fuse

    rng = np.random.default_rng(seed)
    n, p = 5, 37 + seed * 50  # odd patch sizes too
    patches = rng.random((n, 3, p, p), dtype=np.float32)
    cams = rng.random((n, *shape)).astype(np.float32) * rng.uniform(1e-3, 1e3)
    cams[1] = 0.0  # all-zero map -> zeros
    cams[2] = 3.5  # flat map -> zeros
    ref = fuse_cam_from_patches(patches, cams)
    got = production_fuse(patches, cams)
    assert got.dtype == np.float32 and got.shape == ref.shape == (n, 4, p, p)
    assert np.array_equal(got[:, :3], ref[:, :3])
    assert np.abs(got[:, 3] - ref[:, 3]).max() <= 1e-5  # both maps are in [0, 1]
    assert not got[1:3, 3].any()


def test_scan_and_training_share_one_fused_step():
    """No train/serve skew: the head is trained on inputs built by the very function a scan uses."""
    from gcage_fast import kernels
    from gcage_fast.kernels import cpu
    from gcage_fast.scoring import host
    from gcage_fast.training import head

    assert host.fuse_cam_from_patches is head.fuse_cam_from_patches is cpu.fuse_cam_from_patches
    assert kernels.fuse_cam_from_patches is cpu.fuse_cam_from_patches
