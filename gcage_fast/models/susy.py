"""SuSy (HPAI-BSC, arXiv 2409.14128): ResNet-18 stages + linear "staircase" bottlenecks + GAP + MLP + softmax.

Attribute names follow the published module exactly (METHOD.md §1.2-1.5), so the state_dict of the official
TorchScript ``SuSy.pt`` loads with ``strict=True``: ``feature_extractor`` holds ``resnet_model``, ``stages`` (a
ModuleList sharing the ResNet sub-modules), the bottlenecks ``f11 … f44``, ``bottlenecks`` (a ModuleList sharing
them) and ``gap``; ``mlp`` holds ``fc1..fc3`` and ``dropout``; ``softmax`` ends the forward pass.

``forward`` returns softmax probabilities like the TorchScript release. :meth:`SuSy.features` exposes the maps
the CAM needs (``layer4`` output and the summed staircase map F) without any Python loop over the batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gcage_fast.models.resnet import resnet18

__all__ = ["SuSy", "FeatureExtractorStaircase", "MLP", "SUSY_CLASSES"]

SUSY_CLASSES = (
    "authentic",
    "dalle-3-images",
    "diffusiondb",
    "midjourney-images",
    "midjourney_tti",
    "realisticSDXL",
)


def _bottleneck(c: int, down: bool) -> nn.Sequential:
    """Three biased convs, no norm, no activation: C -> C/4 (1x1) -> C/2 (3x3) -> 2C or C (1x1)."""
    stride, out = (2, 2 * c) if down else (1, c)
    return nn.Sequential(
        nn.Conv2d(c, c // 4, kernel_size=1),
        nn.Conv2d(c // 4, c // 2, kernel_size=3, stride=stride, padding=1),
        nn.Conv2d(c // 2, out, kernel_size=1),
    )


class FeatureExtractorStaircase(nn.Module):
    """ResNet-18 stages s0..s4 plus four chains of bottlenecks whose outputs are summed with s4 into F."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.resnet_model = resnet18(width=width)
        r = self.resnet_model
        self.stages = nn.ModuleList(
            [nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool), r.layer1, r.layer2, r.layer3, r.layer4]
        )
        c1 = r.layer1[0].conv1.in_channels
        c2 = r.layer2[0].conv1.in_channels
        c3 = r.layer3[0].conv1.in_channels
        c4 = r.layer4[0].conv1.in_channels
        self.f11 = _bottleneck(c1, down=False)
        self.f12 = _bottleneck(c2, down=True)
        self.f22 = _bottleneck(c2, down=True)
        self.f13 = _bottleneck(c3, down=True)
        self.f23 = _bottleneck(c3, down=True)
        self.f33 = _bottleneck(c3, down=True)
        self.f14 = _bottleneck(c4, down=True)
        self.f24 = _bottleneck(c4, down=True)
        self.f34 = _bottleneck(c4, down=True)
        self.f44 = _bottleneck(c4, down=True)
        self.bottlenecks = nn.ModuleList(
            [self.f11, self.f12, self.f22, self.f13, self.f23, self.f33, self.f14, self.f24, self.f34, self.f44]
        )
        self.gap = nn.AdaptiveAvgPool2d((1, 1))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(s4, F)``: the ``layer4`` output and the summed staircase map, both (N, 8*width, 7, 7)."""
        s0 = self.stages[0](x)
        s1 = self.stages[1](s0)
        s2 = self.stages[2](s1)
        s3 = self.stages[3](s2)
        s4 = self.stages[4](s3)
        f1 = self.f14(self.f13(self.f12(self.f11(s0) + s1) + s2) + s3)
        f2 = self.f24(self.f23(self.f22(s1) + s2) + s3)
        f3 = self.f34(self.f33(s2) + s3)
        f4 = self.f44(s3)
        return s4, f1 + f2 + f3 + f4 + s4

    def cam_module(self, layer: str) -> tuple[nn.Module, str]:
        """The module whose output ("output") or first input ("input") is the CAM layer's activation."""
        if layer == "layer4":
            return self.resnet_model.layer4, "output"
        return self.gap, "input"  # F, the summed staircase map, is what the pooling sees

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The published code pools each sample in a Python loop; one batched pool is numerically identical.
        _, fmap = self.features(x)
        return torch.flatten(self.gap(fmap), 1)


class MLP(nn.Module):
    """fc1 -> ReLU -> dropout -> fc2 -> ReLU -> dropout -> fc3 (logits)."""

    def __init__(self, in_features: int = 512, hidden: int = 256, num_classes: int = 6, p: float = 0.5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.fc1(x)))
        x = self.dropout(F.relu(self.fc2(x)))
        return self.fc3(x)


class SuSy(nn.Module):
    """The SuSy detector; ``forward`` gives class probabilities (N, num_classes), index 0 = authentic.

    Args:
        num_classes: 6 for the released model; 2 for a binary real/synthetic detector.
        width: ResNet base width (64 = published architecture; smaller only for tests and experiments).
        hidden: MLP hidden size (256 published).
    """

    def __init__(self, num_classes: int = 6, width: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.feature_extractor = FeatureExtractorStaircase(width=width)
        self.mlp = MLP(in_features=8 * width, hidden=hidden, num_classes=num_classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.mlp(self.feature_extractor(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-softmax scores (N, num_classes)."""
        return self.mlp(self.feature_extractor(x))
