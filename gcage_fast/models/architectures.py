"""Base detector architectures by name: the one table that model specs, ``init-model``, training and the
importers read. Adding an architecture is one :class:`BaseArchitecture` entry in :data:`ARCHITECTURES`.

Pure Python: the module classes are named ``"module:Class"`` and imported on first use, so the model spec (and
anything that validates one) does not need torch.

Every architecture has SuSy's interface (``feature_extractor.features``, ``feature_extractor.cam_module``, an
``mlp`` with ``fc1`` .. ``fc3``), which is what lets the in-graph CAM, the export and the scan treat them alike.
The state-dict key names below are what the importers and :func:`gcage_fast.models.registry.base_arch` read the
sizes of a trunk from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from gcage_fast.errors import ModelError

__all__ = ["BaseArchitecture", "ARCHITECTURES", "BASE_ARCHS", "architecture"]


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(import_module(module), attr)


@dataclass(frozen=True)
class BaseArchitecture:
    """One base detector architecture.

    Attributes:
        name: ``BaseSpec.arch`` in ``model.json`` and ``--arch``.
        module: ``"module:Class"``; the class takes ``num_classes`` and ``hidden`` (and ``width`` when
            ``width_key`` is set).
        width_key: the state-dict key whose first dimension is the trunk width; None for a fixed trunk (its
            ``BaseSpec.width`` is recorded as 0 and ignored).
        hidden_key: the state-dict key whose first dimension is the MLP's hidden size.
        classes_key: the state-dict key whose first dimension is the number of classes.
        pretrained: ``"module:function"`` loading offline ImageNet weights into a built detector, if any exist.
        random_name: the name ``init-model`` gives an untrained model (``{arch}``, ``{width}``, ``{seed}``).
    """

    name: str
    module: str
    width_key: str | None = None
    hidden_key: str = "mlp.fc1.weight"
    classes_key: str = "mlp.fc3.weight"
    pretrained: str | None = None
    random_name: str = "random-{arch}-s{seed}"

    def module_class(self) -> type:
        return _resolve(self.module)

    def build(self, num_classes: int, width: int = 64, hidden: int = 256) -> Any:
        """An untrained detector (a torch ``nn.Module``)."""
        sizes = {"width": width} if self.width_key is not None else {}
        return self.module_class()(num_classes=num_classes, hidden=hidden, **sizes)

    def sizes(self, state: Mapping[str, Any]) -> tuple[int, int]:
        """(width, hidden) of a detector from its state dict (width 0 for a fixed trunk)."""
        width = int(state[self.width_key].shape[0]) if self.width_key is not None else 0
        return width, int(state[self.hidden_key].shape[0])

    def load_pretrained(self, detector: Any) -> Any:
        """Load the offline ImageNet weights into ``detector``'s trunk (None when the architecture has none)."""
        return None if self.pretrained is None else _resolve(self.pretrained)(detector)


#: Every base architecture, the default (``susy``) first.
ARCHITECTURES: dict[str, BaseArchitecture] = {a.name: a for a in (
    BaseArchitecture("susy", "gcage_fast.models.susy:SuSy", width_key="feature_extractor.resnet_model.conv1.weight",
                     random_name="random-w{width}-s{seed}"),
    BaseArchitecture("effnet-lite0", "gcage_fast.models.effnet:EffNetDetector",
                     pretrained="gcage_fast.models.effnet:load_imagenet_detector"),
)}
#: Their names (``model.json``'s ``base.arch``).
BASE_ARCHS: tuple[str, ...] = tuple(ARCHITECTURES)


def architecture(name: str) -> BaseArchitecture:
    """The architecture called ``name``.

    Raises:
        ModelError: an unknown name, listing the known ones.
    """
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown base architecture {name!r} (known: {', '.join(BASE_ARCHS)})") from None
