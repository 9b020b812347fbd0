"""The torch modules that become ``base.onnx`` and ``head.onnx``. The torch runner runs these same modules, so
every backend computes one function.

Graph contract (names are the ONNX tensor names):
- base: ``patches`` (N, 3, 224, 224) float32 in [0, 1] -> ``probs`` (N, C), ``cam`` (N, 7, 7) (relu'd, not
  normalised) [+ ``activations`` (N, K, 7, 7), ``cam_weights`` (N, K) when exported with activations].
- head: ``head_input`` (N, 4, 224, 224) float32 -> ``p_fake`` (N,).
"""

from __future__ import annotations

import torch
from torch import nn

from gcage_fast.cam.analytic import BaseWithCAM
from gcage_fast.cam.targets import parse_target
from gcage_fast.models.head import GCageHead
from gcage_fast.models.registry import LoadedModel

__all__ = ["BASE_INPUT", "BASE_OUTPUTS", "HEAD_INPUT", "HEAD_OUTPUTS", "HeadGraph", "base_graph", "head_graph",
           "base_output_names"]

BASE_INPUT = "patches"
BASE_OUTPUTS = ("probs", "cam")
ACTIVATION_OUTPUTS = ("activations", "cam_weights")
HEAD_INPUT = "head_input"
HEAD_OUTPUTS = ("p_fake",)


class HeadGraph(nn.Module):
    """The G-CAGE head with its sigmoid: P(fake) per patch."""

    def __init__(self, head: GCageHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(x))


def base_output_names(with_activations: bool) -> tuple[str, ...]:
    return BASE_OUTPUTS + (ACTIVATION_OUTPUTS if with_activations else ())


def base_graph(model: LoadedModel, method: str, target: str, layer: str, with_activations: bool = False) -> BaseWithCAM:
    tgt = parse_target(target, model.spec.class_names, model.spec.authentic_index)
    return BaseWithCAM(model.base, method, tgt, layer, with_activations).eval()


def head_graph(model: LoadedModel) -> HeadGraph | None:
    return None if model.head is None else HeadGraph(model.head).eval()
