"""Model specs: the JSON file (``model.json``) that names a model's architecture, classes, CAM defaults,
thresholds and the sha256 of every weight file. A model directory is ``model.json`` plus its safetensors files.

The verdict thresholds: ``p_fake >= threshold`` is ``fake``; with an ``uncertain_threshold`` (optional, below
``threshold``), ``uncertain_threshold <= p_fake < threshold`` is ``uncertain``; the rest is ``real``
(:func:`gcage_fast.scoring.aggregate.model_verdict`). A spec without a band has no ``uncertain_threshold`` key, so
its JSON and sha256 are those it had before the band existed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gcage_fast.errors import ModelError
from gcage_fast.hashing import sha256_json
from gcage_fast.models.architectures import BASE_ARCHS

__all__ = ["BASE_ARCHS", "SPEC_FILE", "SPEC_VERSION", "BaseSpec", "HeadSpec", "CamSpec", "ModelSpec", "read_spec", "write_spec"]

SPEC_FILE = "model.json"
SPEC_VERSION = 1
_SAFE_FILE = re.compile(r"^[A-Za-z0-9._-]+\.safetensors$")


@dataclass(frozen=True)
class BaseSpec:
    """The base detector. ``arch`` names an entry of :data:`gcage_fast.models.architectures.ARCHITECTURES`: ``susy``
    (``width``/``hidden`` 64/256 for the published model) or ``effnet-lite0`` (EfficientNet-Lite0 trunk with SuSy's
    MLP head; ``width`` is unused)."""

    weights: str
    sha256: str
    arch: str = "susy"
    width: int = 64
    hidden: int = 256


@dataclass(frozen=True)
class HeadSpec:
    """The G-CAGE head (``gcage-head``: four conv blocks of the given widths)."""

    weights: str
    sha256: str
    arch: str = "gcage-head"
    widths: tuple[int, ...] = (16, 32, 64, 128)


@dataclass(frozen=True)
class CamSpec:
    """Default CAM: method, target (``fake``, ``pred``, ``class:NAME``, ``logit:NAME``) and layer (``layer4``/``F``)."""

    method: str = "gradcam"
    target: str = "fake"
    layer: str = "layer4"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild and verify a model. ``head`` is None for a base-only model (for example
    imported SuSy weights): the scan then takes its verdict from the base detector. ``uncertain_threshold`` is the
    lower edge of the optional uncertain band (None: no band; module docstring)."""

    name: str
    version: str
    class_names: tuple[str, ...]
    base: BaseSpec
    head: HeadSpec | None
    threshold: float = 0.5
    base_threshold: float = 0.5  # for the base detector's own view (base_p_fake); equals threshold without a head
    patch_size: int = 224
    top_k: int = 5
    authentic_index: int = 0
    cam: CamSpec = field(default_factory=CamSpec)
    description: str = ""
    spec_version: int = SPEC_VERSION
    uncertain_threshold: float | None = None

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def sha256(self) -> str:
        """Hash of the canonical spec; it covers the weights through their recorded sha256."""
        return sha256_json(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        if self.head is not None:
            d["head"]["widths"] = list(self.head.widths)
        if self.uncertain_threshold is None:  # absent, so that a spec without a band keeps its sha256
            del d["uncertain_threshold"]
        return d

    def with_threshold(self, threshold: float) -> ModelSpec:
        return replace(self, threshold=float(threshold))

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "model spec") -> ModelSpec:
        try:
            if int(d.get("spec_version", 0)) != SPEC_VERSION:
                raise ModelError(f"{origin}: spec_version {d.get('spec_version')!r} is not supported "
                                 f"(this gcage_fast reads version {SPEC_VERSION})")
            head = d.get("head")
            spec = cls(
                name=str(d["name"]),
                version=str(d["version"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                base=BaseSpec(**d["base"]),
                head=None if head is None else HeadSpec(**{**head, "widths": tuple(head.get("widths", ()))}),
                threshold=float(d.get("threshold", 0.5)),
                base_threshold=float(d.get("base_threshold", d.get("threshold", 0.5))),
                patch_size=int(d.get("patch_size", 224)),
                top_k=int(d.get("top_k", 5)),
                authentic_index=int(d.get("authentic_index", 0)),
                cam=CamSpec(**d.get("cam", {})),
                description=str(d.get("description", "")),
                uncertain_threshold=None if d.get("uncertain_threshold") is None else float(d["uncertain_threshold"]),
            )
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{origin} is malformed: {type(exc).__name__}: {exc}") from exc
        spec.validate(origin)
        return spec

    def validate(self, origin: str = "model spec") -> None:
        if len(self.class_names) < 2:
            raise ModelError(f"{origin}: needs at least 2 class names, got {list(self.class_names)}")
        if not 0 <= self.authentic_index < len(self.class_names):
            raise ModelError(f"{origin}: authentic_index {self.authentic_index} is out of range")
        if self.patch_size != 224:
            raise ModelError(f"{origin}: patch_size must be 224 (got {self.patch_size})")
        if self.base.arch not in BASE_ARCHS:
            raise ModelError(f"{origin}: unknown base architecture {self.base.arch!r} "
                             f"(known: {', '.join(BASE_ARCHS)})")
        if self.head is not None and self.head.arch != "gcage-head":
            raise ModelError(f"{origin}: unknown head architecture {self.head.arch!r} (known: gcage-head)")
        for part in (self.base, self.head):
            if part is not None and not _SAFE_FILE.match(part.weights):
                raise ModelError(f"{origin}: weight file name {part.weights!r} must be a plain *.safetensors name "
                                 "inside the model directory")
        for name in ("threshold", "base_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ModelError(f"{origin}: {name} {getattr(self, name)} is not in [0, 1]")
        if self.top_k < 1:
            raise ModelError(f"{origin}: top_k must be >= 1")
        u = self.uncertain_threshold
        if u is not None and not 0.0 <= u < self.threshold:
            raise ModelError(f"{origin}: uncertain_threshold {u} must be at least 0 and below the threshold "
                             f"{self.threshold} (the band is uncertain_threshold <= p_fake < threshold)")


def read_spec(model_dir: str | Path) -> ModelSpec:
    """Read and validate ``model_dir/model.json`` (weights are not touched here)."""
    path = Path(model_dir) / SPEC_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"no {SPEC_FILE} in {model_dir}: not a model directory") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path} is malformed: expected a JSON object")
    return ModelSpec.from_dict(raw, origin=str(path))


def write_spec(model_dir: str | Path, spec: ModelSpec) -> Path:
    from gcage_fast.fsutil import atomic_write_json

    path = Path(model_dir) / SPEC_FILE
    atomic_write_json(path, spec.to_dict())
    return path
