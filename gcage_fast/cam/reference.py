"""The reference CAM: hooks and ``backward()``, the way the original G-CAGE computed Grad-CAM with
pytorch-grad-cam. Slow (a backward pass per batch) and kept as the oracle the in-graph CAM is tested against,
and as the benchmark baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from gcage_fast.cam.registry import IN_GRAPH_METHODS, METHODS
from gcage_fast.cam.targets import CamTarget, target_value

__all__ = ["reference_cam", "gradcam", "hirescam", "xgradcam", "gradcam_pp", "layercam"]


def gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: the spatial mean of the gradient weighs each channel."""
    w = grads.mean(dim=(2, 3))
    return torch.einsum("nk,nkhw->nhw", w, acts)


def hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """HiResCAM: the gradient times the activations, summed over channels."""
    return (grads * acts).sum(dim=1)


def xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGradCAM: channel weights sum_ij G A / (sum_ij A + 1e-7)."""
    s = acts.sum(dim=(2, 3), keepdim=True)
    w = (grads * acts / (s + 1e-7)).sum(dim=(2, 3))
    return torch.einsum("nk,nkhw->nhw", w, acts)


def gradcam_pp(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: channel weights sum_ij relu(G) G^2 / (2 G^2 + S G^3 + 1e-6)."""
    g2 = grads**2
    g3 = g2 * grads
    s = acts.sum(dim=(2, 3), keepdim=True)
    a = g2 / (2 * g2 + s * g3 + 1e-6)
    a = torch.where(grads != 0, a, torch.zeros_like(a))
    w = (torch.relu(grads) * a).sum(dim=(2, 3))
    return torch.einsum("nk,nkhw->nhw", w, acts)


def layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """LayerCAM: relu(gradient) times the activations, summed over channels."""
    return (torch.relu(grads) * acts).sum(dim=1)


def _spatial_cam(method: str, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's formulas on general (non-uniform) gradients; returns relu(cam) (N, h, w). The formula of
    each method is its registry entry's ``reference``."""
    if method not in IN_GRAPH_METHODS:
        raise ValueError(f"unknown CAM method {method!r}")
    return torch.relu(METHODS[method].reference_fn()(acts, grads))


def reference_cam(base: nn.Module, x: torch.Tensor, method: str, target: CamTarget, layer: str = "layer4"):
    """Run ``base`` with hooks on the CAM layer and backpropagate Y. Returns ``(probs, cam)``.

    For SuSy, ``layer4`` hooks ``feature_extractor.resnet_model.layer4`` and ``F`` the input of
    ``feature_extractor.gap`` (the summed staircase map); each architecture names its modules through
    ``feature_extractor.cam_module``. Activation gradients are captured with tensor hooks, as pytorch-grad-cam does.
    """
    # torch 2.13 (CPU) corrupts the heap in the backward pass of ResNet's strided 1x1 downsample convolution when
    # the input is channels-last strided (for example a permuted HWC batch): always backpropagate NCHW-contiguous.
    x = x.contiguous()
    store: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor) -> None:
        store["acts"] = t.detach()
        t.register_hook(lambda g: store.__setitem__("grads", g.detach()))

    fe = base.feature_extractor
    if layer not in ("layer4", "F"):
        raise ValueError(f"unknown CAM layer {layer!r}")
    module, where = fe.cam_module(layer)
    if where == "output":
        handle = module.register_forward_hook(lambda _m, _i, out: keep(out))
    else:
        handle = module.register_forward_hook(lambda _m, inp, _o: keep(inp[0]))
    try:
        with torch.enable_grad():
            logits = base.mlp(fe(x))
            probs = torch.softmax(logits, dim=1)
            base.zero_grad(set_to_none=True)
            target_value(target, logits, probs).sum().backward()
    finally:
        handle.remove()
    return probs.detach(), _spatial_cam(method, store["acts"], store["grads"])
