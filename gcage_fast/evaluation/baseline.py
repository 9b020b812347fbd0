"""The original G-CAGE way, kept as the reference pipeline and the benchmark baseline.

Eager PyTorch fp32, Grad-CAM by hooks and ``backward()`` on each batch, the heatmap upsampled with
``F.interpolate`` and min-max normalised in torch, the 4-channel input built with ``torch.cat``, the head eager.
It shares only decoding and patch selection with the product path, so agreement between the two checks the
in-graph CAM, the export, the runners and the fused step together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from gcage_fast.cam.reference import reference_cam
from gcage_fast.cam.targets import parse_target
from gcage_fast.kernels.reference import FLAT_RTOL
from gcage_fast.models.registry import LoadedModel
from gcage_fast.scoring.patches import PATCH, pad_to_patch, select

__all__ = ["BaselineResult", "baseline_score", "torch_minmax"]


@dataclass
class BaselineResult:
    p_fake: float
    base_p_fake: float
    base_probs: np.ndarray
    patch_p_fake: np.ndarray
    patch_probs: np.ndarray
    boxes: np.ndarray


def torch_minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max over the last two axes; flat maps (same rule as the fused step) -> zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values
    hi = flat.max(dim=1).values
    rng = hi - lo
    ok = rng > FLAT_RTOL * torch.maximum(hi.abs(), lo.abs())
    out = (maps - lo[:, None, None]) / torch.where(ok, rng, torch.ones_like(rng))[:, None, None]
    return torch.where(ok[:, None, None], out, torch.zeros_like(out))


def baseline_score(model: LoadedModel, rgb: np.ndarray, top_k: int | None = None, cam_method: str | None = None,
                   cam_target: str | None = None, cam_layer: str | None = None) -> BaselineResult:
    """Score one decoded RGB uint8 image the original way (eager torch, autograd Grad-CAM)."""
    spec = model.spec
    target = parse_target(cam_target or spec.cam.target, spec.class_names, spec.authentic_index)
    rgb, _ = pad_to_patch(rgb)
    sel = select(rgb, top_k or spec.top_k)
    patches = np.stack([rgb[y:y + PATCH, x:x + PATCH] for x, y in sel.boxes])
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).contiguous().float() / 255.0
    probs, cam = reference_cam(model.base, x, cam_method or spec.cam.method, target, cam_layer or spec.cam.layer)
    heat = torch_minmax(F.interpolate(cam[:, None], size=(PATCH, PATCH), mode="bilinear", align_corners=False)[:, 0])
    auth = spec.authentic_index
    with torch.no_grad():
        if model.head is not None:
            patch_p = torch.sigmoid(model.head(torch.cat([x, heat[:, None]], dim=1)))
        else:
            patch_p = 1.0 - probs[:, auth]
    mean_probs = probs.double().mean(dim=0).numpy()
    return BaselineResult(
        p_fake=float(patch_p.double().mean()),
        base_p_fake=float(1.0 - mean_probs[auth]),
        base_probs=mean_probs,
        patch_p_fake=patch_p.numpy(),
        patch_probs=probs.numpy(),
        boxes=sel.boxes,
    )
