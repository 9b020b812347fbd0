"""The G-CAGE head: a light CNN over the 4-channel input (RGB patch + upsampled CAM) giving P(fake).

The original project leaves the head open (METHOD.md §2.3). Our choice, documented in the model card:
four blocks of ``3x3 conv (stride 2) -> BatchNorm -> ReLU`` with widths 16, 32, 64, 128 (224 -> 112 -> 56 ->
28 -> 14), global average pooling, and one linear unit (a logit; P(fake) = sigmoid). Stride-2 convolutions keep
the cost at about 2.8% of SuSy's (see :func:`count_macs`), while the first block still sees full-resolution
pixels next to the heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GCageHead", "count_macs"]


class GCageHead(nn.Module):
    """Four conv blocks + GAP + linear -> one logit per patch.

    Args:
        widths: output channels of the four blocks.
        in_channels: 4 (RGB + CAM).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), in_channels: int = 4) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = in_channels
        for cout in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                )
            )
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N,)."""
        return self.fc(torch.flatten(self.pool(self.blocks(x)), 1)).squeeze(1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(fake) per patch (N,)."""
        return torch.sigmoid(self.forward(x))


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass (Conv2d and Linear layers), for one input of ``input_shape``."""
    total = 0

    def conv_hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    seen: set[int] = set()
    for m in model.modules():
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            was_training = model.training
            model.eval()
            model(torch.zeros(1, *input_shape))
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total
