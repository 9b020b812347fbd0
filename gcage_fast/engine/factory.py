"""Choose a backend and build the base and head runners for a model.

Backends: ``ort`` (ONNX Runtime: CPU, or the CUDA / TensorRT execution providers of onnxruntime-gpu),
``tensorrt`` (native TensorRT engines built from the exported graphs), ``torch`` (eager PyTorch: the reference,
and the CUDA path with fp16/bf16 autocast). ``auto`` picks, and logs, the first that can run:

- ``--device cpu``: ONNX Runtime, else eager torch;
- ``--device cuda``: TensorRT, then ONNX Runtime with a CUDA provider, then torch on CUDA.

Asking for ``--device cuda`` on a machine where no CUDA GPU is visible is an error, never a CPU run.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcage_fast import env
from gcage_fast.engine.base import Runner
from gcage_fast.engine.ort_runner import GpuOptions
from gcage_fast.errors import ConfigError, EngineError
from gcage_fast.export.graphs import BASE_INPUT, HEAD_INPUT, HEAD_OUTPUTS, base_graph, base_output_names, head_graph
from gcage_fast.export.to_onnx import ExportOptions
from gcage_fast.fsutil import private_dir
from gcage_fast.log import logger
from gcage_fast.models.registry import LoadedModel
from gcage_fast.optional import available
from gcage_fast.precision import PRECISIONS_BY_BACKEND, Precision

__all__ = ["RunnerPair", "resolve_backend", "create_runners", "graph_precision", "check_device", "ort_gpu_options"]


@dataclass
class RunnerPair:
    """The base runner, the head runner (None for a base-only model) and the export options they compute."""

    base: Runner
    head: Runner | None
    options: ExportOptions


def check_device(device: str) -> None:
    """Raise EngineError when ``device`` is ``cuda`` and torch sees no CUDA GPU."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise EngineError("--device cuda was requested but no CUDA GPU is visible (torch.cuda.is_available() is "
                          "False: no GPU, no driver, or a CPU build of torch); use --device cpu")


def _ort_has_cuda() -> bool:
    if not available("onnxruntime"):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve_backend(backend: str, device: str) -> str:
    """The backend ``auto`` stands for on ``device`` (logged); other names are returned as given."""
    if backend != "auto":
        return backend
    if device == "cuda":
        if available("tensorrt"):
            chosen = "tensorrt"
        elif _ort_has_cuda():
            chosen = "ort"
        else:
            chosen = "torch"
        logger.info("--backend auto on cuda: %s", chosen)
        return chosen
    if available("onnxruntime"):
        return "ort"
    logger.warning("onnxruntime is not installed; using the eager torch backend "
                   "(install 'gcage-fast[cpu]' for ONNX Runtime, about 2x faster on CPU)")
    return "torch"


def graph_precision(backend: str, precision: str) -> str:
    """The precision of the exported graphs a backend runs at ``precision`` (torch runs the float32 modules).

    Raises:
        ConfigError: the backend cannot run that precision.
    """
    allowed = PRECISIONS_BY_BACKEND.get(backend)
    if allowed is None:
        raise ConfigError(f"unknown backend {backend!r}; choose auto, ort, tensorrt or torch")
    if precision not in allowed:
        hosts = [b for b, runs in PRECISIONS_BY_BACKEND.items() if precision in runs]
        where = f" ({precision} runs on --backend {' or '.join(hosts)})" if hosts else ""
        raise ConfigError(f"--backend {backend} runs --precision {', '.join(allowed)}, not {precision}{where}")
    return Precision.FP32.value if backend == "torch" else precision


def ort_gpu_options(device: str, batch_size: int) -> GpuOptions | None:
    """ONNX Runtime's GPU provider options for a scan: its TensorRT provider first when onnxruntime-gpu has one
    (engine and timing caches in a private directory of the cache, profile tuned for the scan's batch size),
    else the CUDA provider alone. None on the CPU."""
    if device != "cuda":
        return None
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return GpuOptions(opt_batch=batch_size, max_batch=max(256, batch_size))
    cache = private_dir(env.cache_dir() / "ort-tensorrt", "ONNX Runtime TensorRT cache", EngineError)
    return GpuOptions(tensorrt_ep=True, cache_dir=str(cache), opt_batch=batch_size, max_batch=max(256, batch_size))


def create_runners(model: LoadedModel, options: ExportOptions, backend: str = "auto", device: str = "cpu",
                   threads: int | None = None, precision: str | None = None, batch_size: int = 32) -> RunnerPair:
    """Runners for ``model``; for ORT and TensorRT the graphs come from the export cache (exported on first use).

    ``precision`` defaults to ``options.precision``; for torch it selects autocast (the graphs stay float32).
    """
    backend = resolve_backend(backend, device)
    precision = precision or options.precision
    graph_precision(backend, precision)
    if backend in ("ort", "tensorrt") and options.precision != precision:
        raise ConfigError(f"the export options are for {options.precision} graphs, not {precision}")
    if backend == "torch":
        from gcage_fast.engine.torch_runner import TorchRunner

        base = TorchRunner(base_graph(model, options.cam_method, options.cam_target, options.cam_layer,
                                      options.with_activations),
                           BASE_INPUT, base_output_names(options.with_activations), device, threads, precision)
        hg = head_graph(model)
        head = None if hg is None else TorchRunner(hg, HEAD_INPUT, HEAD_OUTPUTS, device, threads, precision)
        return RunnerPair(base, head, options)
    if backend not in ("ort", "tensorrt"):
        raise ConfigError(f"unknown backend {backend!r}; choose auto, ort, tensorrt or torch")
    from gcage_fast.export.cache import cached_export
    from gcage_fast.export.to_onnx import read_export

    if backend == "tensorrt":
        check_device("cuda")  # TensorRT is CUDA only: fail before a (slow) export
        from gcage_fast.export.tensorrt_build import require_tensorrt

        require_tensorrt()
    entry = cached_export(model, options)
    files = read_export(entry)["files"]
    graphs = [("base.onnx", BASE_INPUT, base_output_names(options.with_activations))]
    if model.head is not None:
        graphs.append(("head.onnx", HEAD_INPUT, HEAD_OUTPUTS))
    runners: list[Runner] = []
    for fname, in_name, out_names in graphs:
        if backend == "ort":
            from gcage_fast.engine.ort_runner import OrtRunner

            runners.append(OrtRunner(entry / fname, in_name, out_names, device, threads, files[fname],
                                     precision=precision, gpu=ort_gpu_options(device, batch_size)))
        else:
            from gcage_fast.engine.trt_runner import TrtRunner

            runners.append(TrtRunner.from_onnx(entry / fname, in_name, out_names, precision=precision,
                                               opt_batch=batch_size, max_batch=max(256, batch_size),
                                               name=f"{model.spec.name}-{fname[:-5]}"))
    return RunnerPair(runners[0], runners[1] if len(runners) > 1 else None, options)
