"""Models: SuSy (base detector), the G-CAGE head, model specs and the registry."""

from gcage_fast.models.head import GCageHead, count_macs
from gcage_fast.models.registry import (
    DEFAULT_MODEL,
    LoadedModel,
    init_model,
    list_models,
    load_model,
    resolve_model,
    write_model_dir,
)
from gcage_fast.models.spec import CamSpec, ModelSpec, read_spec
from gcage_fast.models.susy import SUSY_CLASSES, SuSy

__all__ = [
    "DEFAULT_MODEL",
    "SUSY_CLASSES",
    "CamSpec",
    "GCageHead",
    "LoadedModel",
    "ModelSpec",
    "SuSy",
    "count_macs",
    "init_model",
    "list_models",
    "load_model",
    "read_spec",
    "resolve_model",
    "write_model_dir",
]
