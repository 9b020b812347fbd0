"""Device-side layout shared by every kernel implementation: packed images, per-patch tables, device top-k.

Conventions:
- A batch of images of different sizes is uploaded once as one flat uint8 buffer (:class:`PackedImages`): each
  image H×W×3 (RGB, row-major, channels last) follows the previous one. Image ``i`` starts at element
  ``offsets[i]``.
- A patch is addressed by a *patch table*: ``base`` (int64, the flat index of its top-left pixel's red byte) and
  ``stride`` (int64, the image's row length in bytes, ``3*W``). Pixel (row r, column c, channel ch) of patch n is
  ``flat[base[n] + r*stride[n] + 3*c + ch]``. Kernels take these tables, so one launch serves patches drawn
  from several images of different sizes.
- Boxes are int64 ``(image_index, x, y)`` rows, as in :mod:`gcage_fast.kernels.reference`.
- The patch grid is SuSy's (:mod:`gcage_fast.scoring.patches`): ``num_x = W // P``, ``num_y = H // P``, patch
  ``k = i*num_y + j`` at ``x = P*i``, ``y = P*j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PackedImages", "pack_images", "patch_table", "grid_boxes", "topk_per_image", "selected_boxes"]


@dataclass(frozen=True)
class PackedImages:
    """Images uploaded once into one flat uint8 device buffer; shapes and offsets are also kept on the host."""

    flat: torch.Tensor  # (sum of H*W*3,) uint8
    offsets: torch.Tensor  # (n,) int64, on the device
    widths: torch.Tensor  # (n,) int64, on the device
    host_offsets: tuple[int, ...]
    shapes: tuple[tuple[int, int], ...]  # (H, W) per image

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def __len__(self) -> int:
        return len(self.shapes)


def pack_images(images: Sequence[np.ndarray], device: str | torch.device = "cpu") -> PackedImages:
    """Upload uint8 H×W×3 arrays into one flat buffer on ``device``: one host copy into a staging buffer (pinned
    when the device is CUDA) and one transfer."""
    device = torch.device(device)
    shapes, offsets, total = [], [], 0
    for n, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image {n} must be uint8 H×W×3, got {img.dtype} {img.shape}")
        shapes.append((int(img.shape[0]), int(img.shape[1])))
        offsets.append(total)
        total += img.size
    pin = device.type == "cuda"
    staging = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
    view = staging.numpy()
    for img, off in zip(images, offsets):
        view[off:off + img.size] = np.ascontiguousarray(img).reshape(-1)
    flat = staging.to(device, non_blocking=pin) if device.type != "cpu" else staging
    meta = torch.tensor([offsets, [w for _, w in shapes]], dtype=torch.int64).to(device)
    return PackedImages(flat, meta[0], meta[1], tuple(offsets), tuple(shapes))


def patch_table(packed: PackedImages, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(base, stride)`` int64 tables for ``boxes`` (N, 3) ``(image_index, x, y)`` (any device; result on the
    images' device)."""
    boxes = boxes.to(packed.device, torch.int64)
    idx, x, y = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    stride = packed.widths[idx] * 3
    base = packed.offsets[idx] + y * stride + x * 3
    return base.contiguous(), stride.contiguous()


def grid_boxes(packed: PackedImages, patch: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """Every grid patch of every image, in k order per image: boxes (M, 3) on the device, patches per image and
    ``num_y`` per image (host lists)."""
    rows, counts, num_ys = [], [], []
    for n, (h, w) in enumerate(packed.shapes):
        num_x, num_y = w // patch, h // patch
        if num_x == 0 or num_y == 0:
            raise ValueError(f"image {n} of {w}x{h} is smaller than one {patch}x{patch} patch; pad it first")
        k = np.arange(num_x * num_y)
        rows.append(np.stack([np.full_like(k, n), (k // num_y) * patch, (k % num_y) * patch], axis=1))
        counts.append(num_x * num_y)
        num_ys.append(num_y)
    boxes = torch.from_numpy(np.concatenate(rows).astype(np.int64)).to(packed.device)
    return boxes, counts, num_ys


def topk_per_image(sums: torch.Tensor, counts: Sequence[int], top_k: int) -> tuple[torch.Tensor, list[int]]:
    """Per image, the indices k of the ``top_k`` largest contrast sums, best first, ties to the lower k.

    ``sums`` is (M,) int64, the images' segments one after the other (``counts``). Returns the selected k
    (device, int64, images one after the other) and how many were kept per image (host). One stable sort of a
    padded (n_images, max_count) matrix on the device; padding (-1) sorts last since sums are >= 0.
    """
    counts = list(counts)
    keep = [min(top_k, c) for c in counts]
    width = max(counts)
    padded = torch.full((len(counts), width), -1, dtype=torch.int64, device=sums.device)
    rows = torch.from_numpy(np.repeat(np.arange(len(counts)), counts)).to(sums.device)
    cols = torch.from_numpy(np.concatenate([np.arange(c) for c in counts])).to(sums.device)
    padded[rows, cols] = sums
    order = torch.sort(padded, dim=1, descending=True, stable=True).indices[:, :max(keep)]
    mask = torch.from_numpy(np.arange(max(keep))[None, :] < np.asarray(keep)[:, None]).to(sums.device)
    return order[mask], keep


def selected_boxes(packed: PackedImages, ks: torch.Tensor, keep: Sequence[int], num_ys: Sequence[int],
                   patch: int) -> torch.Tensor:
    """(N, 3) int64 ``(image_index, x, y)`` boxes on the device for the selected ``ks`` (``keep`` per image)."""
    img = torch.from_numpy(np.repeat(np.arange(len(keep)), keep)).to(ks.device)
    ny = torch.tensor(list(num_ys), dtype=torch.int64, device=ks.device)[img]
    return torch.stack([img, (ks // ny) * patch, (ks % ny) * patch], dim=1)
