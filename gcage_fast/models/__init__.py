"""Models: SuSy (base detector), the G-CAGE head, model specs, the base architectures and the model registry.

Importing this package does not import torch: :mod:`gcage_fast.models.spec` and
:mod:`gcage_fast.models.architectures` are pure Python (the command line reads their names), and the names below
that need torch load on first use.
"""

from __future__ import annotations

from importlib import import_module

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

_HOMES = {
    "gcage_fast.models.head": ("GCageHead", "count_macs"),
    "gcage_fast.models.registry": ("DEFAULT_MODEL", "LoadedModel", "init_model", "list_models", "load_model",
                                   "resolve_model", "write_model_dir"),
    "gcage_fast.models.spec": ("CamSpec", "ModelSpec", "read_spec"),
    "gcage_fast.models.susy": ("SUSY_CLASSES", "SuSy"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):  # lazy: the torch modules load when one of their names is first used
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(name)
