"""CAM methods by name: the one table that says, for each method, how the base graph computes it, how an
explanation computes it and what it costs. The scan, the export, the explainer and the command line all read it.

Pure Python (no torch, no numpy): :mod:`gcage_fast.config` derives ``CAM_METHODS`` from it, and the decode
workers import the configuration. Implementations are named ``"module:function"`` and imported on first use.

Two families:

- **In-graph** (forward-only: Grad-CAM, HiResCAM, XGradCAM, Grad-CAM++, LayerCAM). Each is
  ``relu(sum_k alpha_k A_k)`` with alpha a function of the uniform gradient of the CAM layer, so the exported
  base graph computes it in the scan's single pass. ``weights`` gives alpha (:mod:`gcage_fast.cam.weights`),
  ``reference`` pytorch-grad-cam's formula on general gradients (hooks and ``backward()``,
  :mod:`gcage_fast.cam.reference`), the oracle the graph is tested against. Only these can be a scan's ``--cam``.
- **Explain-only**. EigenCAM needs the activations alone; ScoreCAM and LIME send perturbed patches through the
  base engine and AblationCAM runs a batched pass of the MLP (``extra_passes``). ``gcage-fast explain`` and
  ``eval --cam-metrics`` compute them.

Every method has ``explain``: ``f(PatchInputs) -> (raw map (h, w) or None, heatmap (P, P) or None)``; a method
that returns no heatmap gets its raw map upsampled and min-max normalised by the explainer.

Adding a method is one :class:`CamMethod` entry in :data:`METHODS` plus the functions it names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any

__all__ = [
    "CamMethod",
    "PatchInputs",
    "METHODS",
    "IN_GRAPH_METHODS",
    "EXPLAIN_ONLY_METHODS",
    "ALL_METHODS",
    "resolve",
]


@cache
def resolve(ref: str) -> Callable[..., Any]:
    """The function named by ``"package.module:function"`` (imported once, then cached)."""
    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)


@dataclass(frozen=True)
class CamMethod:
    """One CAM method.

    Attributes:
        name: what ``--cam`` and the model spec call it.
        explain: ``"module:function"`` computing it for one patch of an explanation (see the module doc).
        weights: in-graph methods: ``"module:function"`` ``(grad (N, K), act_sum (N, K), hw) -> alpha (N, K)``.
        reference: in-graph methods: ``"module:function"`` ``(acts, grads) -> cam (N, h, w)`` before the relu.
        extra_passes: it needs passes beyond the one base pass that gives the activations (engine or MLP).
        paper: where the method comes from.
    """

    name: str
    explain: str
    weights: str | None = None
    reference: str | None = None
    extra_passes: bool = False
    paper: str = ""

    @property
    def in_graph(self) -> bool:
        """Computed inside the base graph (a scan can use it)."""
        return self.weights is not None

    def explain_fn(self) -> Callable[[PatchInputs], tuple[Any, Any]]:
        return resolve(self.explain)

    def weights_fn(self) -> Callable[..., Any]:
        if self.weights is None:
            raise ValueError(f"CAM method {self.name!r} is not computed in the graph")
        return resolve(self.weights)

    def reference_fn(self) -> Callable[..., Any]:
        if self.reference is None:
            raise ValueError(f"CAM method {self.name!r} has no hook/backward reference")
        return resolve(self.reference)


@dataclass(frozen=True)
class PatchInputs:
    """What an ``explain`` function may use for one patch (arrays are NumPy, typed loosely to stay torch-free).

    Attributes:
        method: the method being computed (the in-graph family shares one function).
        index: the patch's rank among the image's selected patches.
        patch: (3, P, P) float32 in [0, 1].
        acts: (K, h, w) activations of the CAM layer.
        probs: (C,) the base detector's probabilities on the unperturbed patch.
        family: the in-graph maps of every patch, method -> (N, h, w) (``cam.perturbation.forward_family``).
        target: the :class:`~gcage_fast.cam.targets.CamTarget` explained.
        probs_fn: base probabilities of a batch (N, 3, P, P), through the engine.
        base: the base detector's torch module (eval mode).
        batch_size, lime_samples, lime_segmentation, seed: the explanation's options.
    """

    method: str
    index: int
    patch: Any
    acts: Any
    probs: Any
    family: dict[str, Any]
    target: Any
    probs_fn: Callable[[Any], Any]
    base: Any
    batch_size: int = 64
    lime_samples: int = 1000
    lime_segmentation: str = "grid"
    seed: int = 0


_FORWARD = "gcage_fast.cam.perturbation:explain_forward"

#: Every CAM method, in-graph family first (the order of ``--cam`` choices, ``all`` and the forward family).
METHODS: dict[str, CamMethod] = {m.name: m for m in (
    CamMethod("gradcam", _FORWARD, "gcage_fast.cam.weights:uniform_gradient", "gcage_fast.cam.reference:gradcam",
              paper="Selvaraju et al., arXiv 1610.02391"),
    CamMethod("hirescam", _FORWARD, "gcage_fast.cam.weights:uniform_gradient", "gcage_fast.cam.reference:hirescam",
              paper="Draelos & Carin, arXiv 2011.08891"),
    CamMethod("xgradcam", _FORWARD, "gcage_fast.cam.weights:xgradcam", "gcage_fast.cam.reference:xgradcam",
              paper="Fu et al., arXiv 2008.02312"),
    CamMethod("gradcam++", _FORWARD, "gcage_fast.cam.weights:gradcam_pp", "gcage_fast.cam.reference:gradcam_pp",
              paper="Chattopadhyay et al., arXiv 1710.11063"),
    CamMethod("layercam", _FORWARD, "gcage_fast.cam.weights:layercam", "gcage_fast.cam.reference:layercam",
              paper="Jiang et al., IEEE TIP 2021"),
    CamMethod("eigencam", "gcage_fast.cam.perturbation:explain_eigencam",
              paper="Muhammad & Yeasin, arXiv 2008.00299"),
    CamMethod("scorecam", "gcage_fast.cam.perturbation:explain_scorecam", extra_passes=True,
              paper="Wang et al., arXiv 1910.01279"),
    CamMethod("ablationcam", "gcage_fast.cam.perturbation:explain_ablationcam", extra_passes=True,
              paper="Desai & Ramaswamy, WACV 2020"),
    CamMethod("lime", "gcage_fast.cam.lime:explain_lime", extra_passes=True,
              paper="Ribeiro et al., KDD 2016"),
)}

#: The forward-only methods computed inside the base graph (``gcage_fast.config.CAM_METHODS``).
IN_GRAPH_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.in_graph)
#: The methods only an explanation computes.
EXPLAIN_ONLY_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if not m.in_graph)
#: Every method, in-graph first.
ALL_METHODS: tuple[str, ...] = IN_GRAPH_METHODS + EXPLAIN_ONLY_METHODS
