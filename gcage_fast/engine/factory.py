"""Choose a backend and build the base and head runners for a model."""

from __future__ import annotations

from dataclasses import dataclass

from gcage_fast.engine.base import Runner
from gcage_fast.errors import ConfigError
from gcage_fast.export.graphs import BASE_INPUT, HEAD_INPUT, HEAD_OUTPUTS, base_graph, base_output_names, head_graph
from gcage_fast.export.to_onnx import ExportOptions
from gcage_fast.log import logger
from gcage_fast.models.registry import LoadedModel
from gcage_fast.optional import available

__all__ = ["RunnerPair", "resolve_backend", "create_runners"]


@dataclass
class RunnerPair:
    """The base runner, the head runner (None for a base-only model) and the export options they compute."""

    base: Runner
    head: Runner | None
    options: ExportOptions


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` -> ``ort`` when onnxruntime is installed, else ``torch`` (logged)."""
    if backend != "auto":
        return backend
    if available("onnxruntime"):
        return "ort"
    logger.warning("onnxruntime is not installed; using the eager torch backend "
                   "(install 'gcage-fast[cpu]' for ONNX Runtime, about 2x faster on CPU)")
    return "torch"


def create_runners(model: LoadedModel, options: ExportOptions, backend: str = "auto", device: str = "cpu",
                   threads: int | None = None) -> RunnerPair:
    """Runners for ``model``; for ORT the graphs come from the export cache (exported on first use)."""
    backend = resolve_backend(backend, device)
    if backend == "torch":
        from gcage_fast.engine.torch_runner import TorchRunner

        base = TorchRunner(base_graph(model, options.cam_method, options.cam_target, options.cam_layer,
                                      options.with_activations),
                           BASE_INPUT, base_output_names(options.with_activations), device, threads)
        hg = head_graph(model)
        head = None if hg is None else TorchRunner(hg, HEAD_INPUT, HEAD_OUTPUTS, device, threads)
        return RunnerPair(base, head, options)
    if backend == "ort":
        from gcage_fast.engine.ort_runner import OrtRunner
        from gcage_fast.export.cache import cached_export
        from gcage_fast.export.to_onnx import read_export

        entry = cached_export(model, options)
        files = read_export(entry)["files"]
        base = OrtRunner(entry / "base.onnx", BASE_INPUT, base_output_names(options.with_activations), device,
                         threads, files["base.onnx"])
        head = None
        if model.head is not None:
            head = OrtRunner(entry / "head.onnx", HEAD_INPUT, HEAD_OUTPUTS, device, threads, files["head.onnx"])
        return RunnerPair(base, head, options)
    raise ConfigError(f"unknown backend {backend!r}; choose auto, ort or torch")
