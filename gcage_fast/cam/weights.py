"""Channel weights alpha of the forward-only CAM family, given a spatially uniform gradient.

For SuSy the target layer feeds global average pooling and an MLP, so dY/dA[k, i, j] = g_k / (h*w) at every
position (DESIGN.md §2 step 4). With a uniform gradient G_k every method below is ``relu(sum_k alpha_k A_k)``:

- Grad-CAM (Selvaraju et al., arXiv 1610.02391): alpha = mean_ij G = G.
- HiResCAM (Draelos & Carin, arXiv 2011.08891): sum_k G_k * A_k, i.e. alpha = G.
- XGradCAM (Fu et al., arXiv 2008.02312): alpha = sum_ij G A / (sum_ij A + 1e-7) = G S / (S + 1e-7).
- Grad-CAM++ (Chattopadhyay et al., arXiv 1710.11063): a = G^2 / (2 G^2 + S G^3 + 1e-6) (0 where G = 0),
  alpha = sum_ij relu(G) a = h*w relu(G) a.
- LayerCAM (Jiang et al., IEEE TIP 2021): sum_k relu(G_k) * A_k, i.e. alpha = relu(G).

The constants are pytorch-grad-cam's, so results agree with it numerically, not just up to scale. Which function
serves which method is :data:`gcage_fast.cam.registry.METHODS`'s ``weights``.
"""

from __future__ import annotations

import torch

from gcage_fast.cam.registry import IN_GRAPH_METHODS as METHODS
from gcage_fast.cam.registry import METHODS as REGISTRY

__all__ = ["METHODS", "cam_weights", "uniform_gradient", "xgradcam", "gradcam_pp", "layercam"]


def uniform_gradient(grad: torch.Tensor, act_sum: torch.Tensor, hw: int) -> torch.Tensor:
    """Grad-CAM and HiResCAM: alpha = G."""
    return grad


def xgradcam(grad: torch.Tensor, act_sum: torch.Tensor, hw: int) -> torch.Tensor:
    """XGradCAM: alpha = G S / (S + 1e-7)."""
    return grad * act_sum / (act_sum + 1e-7)


def gradcam_pp(grad: torch.Tensor, act_sum: torch.Tensor, hw: int) -> torch.Tensor:
    """Grad-CAM++: alpha = h*w relu(G) G^2 / (2 G^2 + S G^3 + 1e-6), 0 where G = 0."""
    g2 = grad * grad
    a = g2 / (2 * g2 + act_sum * g2 * grad + 1e-6)
    a = torch.where(grad != 0, a, torch.zeros_like(a))
    return torch.relu(grad) * a * hw


def layercam(grad: torch.Tensor, act_sum: torch.Tensor, hw: int) -> torch.Tensor:
    """LayerCAM: alpha = relu(G)."""
    return torch.relu(grad)


def cam_weights(method: str, grad: torch.Tensor, act_sum: torch.Tensor, hw: int) -> torch.Tensor:
    """alpha (N, K) from the uniform gradient ``grad`` (N, K) and ``act_sum`` = sum_ij A (N, K)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; known: {', '.join(METHODS)}")
    return REGISTRY[method].weights_fn()(grad, act_sum, hw)
