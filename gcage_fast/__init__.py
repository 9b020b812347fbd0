"""gcage_fast: a fast, explainable batch scanner for AI-generated images (G-CAGE on ONNX Runtime / TensorRT).

The library API; the ``gcage-fast`` command is a thin layer over it::

    from gcage_fast import EvalConfig, ExplainConfig, Limits, ScanConfig, evaluate, explain_image, scan

    summary = scan(ScanConfig(inputs=("photos/",), output="results/", limits=Limits(timeout_s=30)))
    summary.status, summary.images_per_s  # {"ok": ...}, images per second
    report = evaluate(EvalConfig(data="labelled/", split="test"))
    why = explain_image(ExplainConfig(image="photos/a.jpg", output="why.png"))

Configurations are frozen dataclasses; problems of the run raise :class:`GcageError` subclasses whose message
says what to do, problems of single files are rows of the output. ``import gcage_fast`` is light (no torch, no
numpy): each public name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gcage_fast.version import __version__

#: Public name -> the module that defines it (imported on first access, see __getattr__).
_PUBLIC = {
    # scan
    "ScanConfig": "gcage_fast.config",
    "Limits": "gcage_fast.config",
    "scan": "gcage_fast.scanning",
    "ScanProgress": "gcage_fast.scanning",
    "ScanSummary": "gcage_fast.scanning",
    # eval
    "EvalConfig": "gcage_fast.evaluation.evaluate",
    "evaluate": "gcage_fast.evaluation.evaluate",
    "MetricError": "gcage_fast.evaluation.metrics",
    # explain
    "ExplainConfig": "gcage_fast.explain.image",
    "ExplainOptions": "gcage_fast.explain.explainer",
    "explain_image": "gcage_fast.explain.image",
    "Explanation": "gcage_fast.explain.explainer",
    # errors
    "GcageError": "gcage_fast.errors",
    "ConfigError": "gcage_fast.errors",
    "InputError": "gcage_fast.errors",
    "ModelError": "gcage_fast.errors",
    "ExportError": "gcage_fast.errors",
    "EngineError": "gcage_fast.errors",
    "OutOfMemory": "gcage_fast.errors",
    "DeviceFault": "gcage_fast.errors",
    "OutputError": "gcage_fast.errors",
    "MissingDependencyError": "gcage_fast.errors",
    "Interrupted": "gcage_fast.errors",
    "CircuitBreakerError": "gcage_fast.errors",
}

__all__ = ["__version__", *_PUBLIC]

if TYPE_CHECKING:
    from gcage_fast.config import Limits, ScanConfig
    from gcage_fast.errors import (CircuitBreakerError, ConfigError, DeviceFault, EngineError, ExportError,
                                   GcageError, InputError, Interrupted, MissingDependencyError, ModelError,
                                   OutOfMemory, OutputError)
    from gcage_fast.evaluation.evaluate import EvalConfig, evaluate
    from gcage_fast.evaluation.metrics import MetricError
    from gcage_fast.explain.explainer import ExplainOptions, Explanation
    from gcage_fast.explain.image import ExplainConfig, explain_image
    from gcage_fast.scanning import ScanProgress, ScanSummary, scan


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'gcage_fast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
