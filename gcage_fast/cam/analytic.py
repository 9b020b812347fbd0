"""Forward-only CAM: the heatmap as part of the forward graph (no hooks, no backward), exportable to ONNX.

The gradient of Y with respect to the pooled features v is computed in closed form from the MLP weights and
its ReLU masks: g = W1^T [ (W2^T [ (W3^T delta) * 1(h2 > 0) ]) * 1(h1 > 0) ], with delta = dY/dlogits from the
softmax Jacobian (METHOD.md §5.4). dY/dA is g / (h*w) at every position, whichever of layer4 or the staircase
sum F is the CAM layer, because both reach the logits only through v = mean(F) and F = ... + layer4.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gcage_fast.cam.targets import CamTarget, target_delta
from gcage_fast.cam.weights import METHODS, cam_weights

__all__ = ["BaseWithCAM", "LAYERS"]

LAYERS = ("layer4", "F")


class BaseWithCAM(nn.Module):
    """Base detector + in-graph CAM. ``forward(x)`` returns ``(probs, cam)`` or, with ``with_activations``,
    ``(probs, cam, activations, cam_weights)``; cam = relu(sum_k alpha_k A_k), shape (N, h, w), not normalised.

    Args:
        base: a base detector in eval mode (SuSy or EffNetDetector; shared, not copied): it provides
            ``feature_extractor.features(x) -> (layer4 map, pooled map)`` and ``mlp`` (fc1, fc2, fc3).
        method: one of :data:`METHODS`.
        target: what the heatmap explains (see :mod:`gcage_fast.cam.targets`).
        layer: ``layer4`` (the last ResNet stage) or ``F`` (the summed staircase map).
        with_activations: also output A (N, K, h, w) and alpha (N, K), for the fused kernel.
    """

    def __init__(self, base: nn.Module, method: str, target: CamTarget, layer: str = "layer4",
                 with_activations: bool = False) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}")
        if layer not in LAYERS:
            raise ValueError(f"unknown CAM layer {layer!r}; known: {', '.join(LAYERS)}")
        self.base = base
        self.method = method
        self.target = target
        self.layer = layer
        self.with_activations = with_activations

    def forward(self, x: torch.Tensor):
        s4, fmap = self.base.feature_extractor.features(x)
        return self.from_features(s4, fmap)

    def from_features(self, s4: torch.Tensor, fmap: torch.Tensor):
        """Everything after the convolutional features: pooled MLP, softmax and the CAM (kept in the features'
        dtype; the mixed-precision graphs call it with float32 features)."""
        acts = s4 if self.layer == "layer4" else fmap
        mlp = self.base.mlp
        v = fmap.mean(dim=(2, 3))
        h1 = F.linear(v, mlp.fc1.weight, mlp.fc1.bias)
        h2 = F.linear(F.relu(h1), mlp.fc2.weight, mlp.fc2.bias)
        logits = F.linear(F.relu(h2), mlp.fc3.weight, mlp.fc3.bias)
        probs = torch.softmax(logits, dim=1)

        delta = target_delta(self.target, probs)
        g2 = (delta @ mlp.fc3.weight) * (h2 > 0).to(delta.dtype)
        g1 = (g2 @ mlp.fc2.weight) * (h1 > 0).to(delta.dtype)
        hw = acts.shape[2] * acts.shape[3]
        grad = (g1 @ mlp.fc1.weight) / hw
        alpha = cam_weights(self.method, grad, acts.sum(dim=(2, 3)), hw)
        cam = torch.relu(torch.einsum("nk,nkhw->nhw", alpha, acts))
        if self.with_activations:
            return probs, cam, acts, alpha
        return probs, cam
