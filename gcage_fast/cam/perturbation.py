"""CAM methods for explaining single images (``gcage-fast explain``), beyond the in-graph family.

- The forward-only family (Grad-CAM, HiResCAM, XGradCAM, Grad-CAM++, LayerCAM) from one engine pass: the base
  graph exported with its activations outputs A and Grad-CAM's weights, which are the uniform gradient G itself.
- EigenCAM (Muhammad & Yeasin, arXiv 2008.00299): projection of the mean-centred activations on their first
  right-singular vector (sign arbitrary, as in pytorch-grad-cam).
- ScoreCAM (Wang et al., arXiv 1910.01279): each channel, upsampled and min-max normalised, masks the patch; the
  masked patches go through the base engine in large batches; alpha = softmax of their target scores.
- AblationCAM (Desai & Ramaswamy, WACV 2020): alpha_k = (y - y_k) / y with channel k of the CAM layer set to 0.
  For these detectors the network after the CAM layer is GAP + MLP and the layer enters the pooled vector
  additively, so ablating channel k only subtracts mean(A_k) from one coordinate of the pooled vector: all K
  ablations are one batched MLP pass, exact, with no extra backbone pass.

Every function returns relu'd CAMs of shape (N, h, w), not normalised (pytorch-grad-cam's conventions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from gcage_fast.cam.registry import ALL_METHODS, IN_GRAPH_METHODS, PatchInputs
from gcage_fast.cam.registry import EXPLAIN_ONLY_METHODS as EXTRA_METHODS
from gcage_fast.cam.targets import CamTarget

__all__ = ["EXTRA_METHODS", "ALL_METHODS", "forward_family", "eigencam", "scorecam", "ablationcam",
           "target_from_probs", "explain_forward", "explain_eigencam", "explain_scorecam", "explain_ablationcam"]


def forward_family(acts: np.ndarray, grad: np.ndarray) -> dict[str, np.ndarray]:
    """All in-graph methods from activations A (N, K, h, w) and the uniform gradient G (N, K)."""
    from gcage_fast.cam.weights import cam_weights

    a = torch.from_numpy(np.asarray(acts, np.float32))
    g = torch.from_numpy(np.asarray(grad, np.float32))
    hw = a.shape[2] * a.shape[3]
    out = {}
    for method in IN_GRAPH_METHODS:
        alpha = cam_weights(method, g, a.sum(dim=(2, 3)), hw)
        out[method] = torch.relu(torch.einsum("nk,nkhw->nhw", alpha, a)).numpy()
    return out


def eigencam(acts: np.ndarray) -> np.ndarray:
    """First principal component of the (h*w, K) activations, per sample, relu'd."""
    n, k, h, w = acts.shape
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(n):
        m = acts[i].reshape(k, -1).T.astype(np.float64)
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=False)
        out[i] = (m @ vt[0]).reshape(h, w)
    return np.maximum(out, 0)


def target_from_probs(target: CamTarget, probs: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Target scores (N,) from probabilities. ``pred`` uses the class predicted on ``reference`` (the unperturbed
    patch). Logit targets are scored by the probability of their class (perturbation methods see probabilities)."""
    if target.kind == "fake":
        return 1.0 - probs[:, target.index]
    if target.kind in ("pred", "logit_pred"):
        cls = int(np.argmax(reference if reference is not None else probs[0]))
        return probs[:, cls]
    return probs[:, target.index]


def _normalised_masks(acts: np.ndarray, size: int) -> np.ndarray:
    """(K, size, size) channel maps, bilinearly upsampled and min-max normalised (eps 1e-8, pytorch-grad-cam)."""
    up = F.interpolate(torch.from_numpy(acts[None].astype(np.float32)), size=(size, size), mode="bilinear",
                       align_corners=False)[0]
    flat = up.reshape(up.shape[0], -1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    return ((up - lo[:, None, None]) / (hi - lo + 1e-8)[:, None, None]).numpy()


def scorecam(patch: np.ndarray, acts: np.ndarray, target: CamTarget, probs_fn: Callable[[np.ndarray], np.ndarray],
             reference: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """ScoreCAM of one patch (3, P, P) from its activations (K, h, w); ``probs_fn`` runs the base engine."""
    masks = _normalised_masks(acts, patch.shape[-1])
    scores = np.empty(len(masks), dtype=np.float64)
    for start in range(0, len(masks), batch_size):
        batch = (patch[None] * masks[start:start + batch_size, None]).astype(np.float32)
        scores[start:start + len(batch)] = target_from_probs(target, probs_fn(batch), reference)
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    return np.maximum(np.einsum("k,khw->hw", weights, acts), 0)[None].astype(np.float32)


def ablationcam(base: torch.nn.Module, patch: np.ndarray, acts: np.ndarray, target: CamTarget) -> np.ndarray:
    """AblationCAM of one patch: all channel ablations as one batched pass of the MLP on the pooled vector.

    ``acts`` (K, h, w) are the CAM layer's activations (relu'd, so pytorch-grad-cam's ablation value is 0).
    """
    x = torch.from_numpy(np.ascontiguousarray(patch[None], dtype=np.float32))
    with torch.no_grad():
        _, fmap = base.feature_extractor.features(x)
        v = fmap.mean(dim=(2, 3))[0]  # pooled vector (K,)
        a = torch.from_numpy(acts.astype(np.float32))
        ablated = v[None].repeat(a.shape[0], 1)
        ablated[torch.arange(a.shape[0]), torch.arange(a.shape[0])] -= a.mean(dim=(1, 2))
        probs = torch.softmax(base.mlp(torch.cat([v[None], ablated])), dim=1).numpy()
    y = target_from_probs(target, probs, probs[0])
    weights = (y[0] - y[1:]) / (y[0] if y[0] != 0 else 1e-12)
    return np.maximum(np.einsum("k,khw->hw", weights, acts), 0)[None].astype(np.float32)


# The ``explain`` entries of gcage_fast.cam.registry: one patch of an explanation -> (raw map (h, w), None).


def explain_forward(p: PatchInputs) -> tuple[np.ndarray, None]:
    """An in-graph method: its map from the forward family, computed once for all patches."""
    return p.family[p.method][p.index], None


def explain_eigencam(p: PatchInputs) -> tuple[np.ndarray, None]:
    return eigencam(p.acts[None])[0], None


def explain_scorecam(p: PatchInputs) -> tuple[np.ndarray, None]:
    return scorecam(p.patch, p.acts, p.target, p.probs_fn, p.probs, p.batch_size)[0], None


def explain_ablationcam(p: PatchInputs) -> tuple[np.ndarray, None]:
    return ablationcam(p.base, p.patch, p.acts, p.target)[0], None
