"""ONNX Runtime runner: the CPU provider, or on ``--device cuda`` (onnxruntime-gpu) the TensorRT and CUDA
execution providers with their documented options.

ONNX Runtime silently falls back to the CPU when a GPU provider cannot load. This runner compares the providers
it asked for with ``session.get_providers()`` and refuses the fallback unless the device is ``cpu``.

On CUDA, :meth:`OrtRunner.infer_torch` binds torch CUDA tensors directly (IO binding: no host staging); the
NumPy :meth:`OrtRunner.infer` copies through the host as the Runner protocol says.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcage_fast.engine.base import RunnerInfo
from gcage_fast.errors import EngineError, ModelError
from gcage_fast.export.self_contained import refuse_external_data
from gcage_fast.hashing import sha256_file
from gcage_fast.optional import require

__all__ = ["OrtRunner", "GpuOptions", "providers_for", "provider_options", "refuse_external_data"]


@dataclass(frozen=True)
class GpuOptions:
    """Options of the GPU execution providers (ignored on the CPU).

    Attributes:
        tensorrt_ep: put ONNX Runtime's TensorRT provider first (falls back to CUDA for nodes it cannot run).
        device_id: the CUDA device.
        gpu_mem_limit: bytes the CUDA provider's arena may hold (0 = no limit).
        cache_dir: where the TensorRT provider keeps its engine and timing caches (None = no cache).
        min_batch, opt_batch, max_batch: the TensorRT provider's optimisation profile for the batch axis.
    """

    tensorrt_ep: bool = False
    device_id: int = 0
    gpu_mem_limit: int = 0
    cache_dir: str | None = None
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256


def providers_for(device: str, gpu: GpuOptions | None = None) -> tuple[str, ...]:
    if device != "cuda":
        return ("CPUExecutionProvider",)
    first = ("TensorrtExecutionProvider",) if gpu is not None and gpu.tensorrt_ep else ()
    return first + ("CUDAExecutionProvider", "CPUExecutionProvider")


def provider_options(device: str, input_name: str, input_shape: tuple[int, ...],
                     gpu: GpuOptions | None = None) -> list[dict[str, str]]:
    """ONNX Runtime's per-provider options, in the order of :func:`providers_for` (values as strings)."""
    gpu = gpu or GpuOptions()
    opts: list[dict[str, str]] = []
    for name in providers_for(device, gpu):
        if name == "TensorrtExecutionProvider":
            dims = "x".join(str(d) for d in input_shape[1:])
            o = {"device_id": str(gpu.device_id),
                 "trt_profile_min_shapes": f"{input_name}:{gpu.min_batch}x{dims}",
                 "trt_profile_opt_shapes": f"{input_name}:{gpu.opt_batch}x{dims}",
                 "trt_profile_max_shapes": f"{input_name}:{gpu.max_batch}x{dims}",
                 # fp16 and int8 graphs carry their precision (casts, Q/DQ): no builder flag, no calibration table
                 "trt_fp16_enable": "False", "trt_int8_enable": "False"}
            if gpu.cache_dir:
                o.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": gpu.cache_dir,
                          "trt_timing_cache_enable": "True", "trt_timing_cache_path": gpu.cache_dir})
            opts.append(o)
        elif name == "CUDAExecutionProvider":
            o = {"device_id": str(gpu.device_id), "cudnn_conv_algo_search": "HEURISTIC",
                 "do_copy_in_default_stream": "True"}
            if gpu.gpu_mem_limit:
                o["gpu_mem_limit"] = str(gpu.gpu_mem_limit)
            opts.append(o)
        else:
            opts.append({})
    return opts


class OrtRunner:
    """Runs one ONNX graph.

    Args:
        path: the ONNX file.
        input_name, output_names: the graph's tensor names.
        device: ``cpu`` or ``cuda``.
        threads: intra-op threads (None = ONNX Runtime's default, one per core).
        expected_sha256: when given, the file is hashed and compared before it is parsed.
    """

    accepts_torch = True

    def __init__(self, path: str | Path, input_name: str, output_names: tuple[str, ...], device: str = "cpu",
                 threads: int | None = None, expected_sha256: str | None = None, precision: str = "fp32",
                 gpu: GpuOptions | None = None) -> None:
        self.path = Path(path)
        self.precision = precision
        self.gpu = gpu or GpuOptions()
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.device = device
        self.threads = threads
        self.expected_sha256 = expected_sha256
        self._session = None
        self._active: tuple[str, ...] = ()
        self._output_shapes: dict[str, tuple[Any, ...]] = {}

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo("ort", self.device, providers_for(self.device, self.gpu), self._active, str(self.path),
                          self.precision)

    def __enter__(self) -> OrtRunner:
        ort = require("onnxruntime")
        if self.expected_sha256 is not None:
            actual = sha256_file(self.path)
            if actual != self.expected_sha256:
                raise ModelError(f"{self.path} does not match its recorded sha256 ({actual[:16]}… != "
                                 f"{self.expected_sha256[:16]}…); delete it to re-export")
        graph = refuse_external_data(self.path).graph
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        requested = providers_for(self.device, self.gpu)
        inputs = {i.name: i for i in graph.input}
        if self.input_name not in inputs:
            raise ModelError(f"{self.path} has no input {self.input_name!r} (it has {', '.join(inputs)})")
        dims = inputs[self.input_name].type.tensor_type.shape.dim
        shape = tuple(d.dim_value or 1 for d in dims)  # the batch axis is symbolic
        p_opts = provider_options(self.device, self.input_name, shape, self.gpu)
        try:
            with warnings.catch_warnings():  # "provider not available" warnings: checked explicitly below
                warnings.simplefilter("ignore", UserWarning)
                self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=list(requested),
                                                     provider_options=p_opts)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {str(exc).splitlines()[0]}") from exc
        self._active = tuple(self._session.get_providers())
        self._output_shapes = {o.name: tuple(o.shape) for o in self._session.get_outputs()}
        missing = [p for p in requested if p != "CPUExecutionProvider" and p not in self._active]
        if self.device == "cuda" and missing:
            self._session = None
            raise EngineError(
                f"ONNX Runtime could not start the {', '.join(m.replace('ExecutionProvider', '') for m in missing)} "
                f"provider and fell back to the CPU (active: {', '.join(self._active)}); install onnxruntime-gpu "
                "with CUDA/cuDNN (and TensorRT for its provider), or use --device cpu"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._session = None

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise EngineError("OrtRunner.infer called outside its `with` block")
        x = np.ascontiguousarray(feed[self.input_name], dtype=np.float32)
        outs = self._session.run(list(self.output_names), {self.input_name: x})
        return dict(zip(self.output_names, outs))

    def infer_torch(self, feed: dict[str, Any]) -> dict[str, Any]:
        """Run on torch tensors. CUDA tensors are bound in place (IO binding) and the outputs stay on the
        device; CPU tensors go through :meth:`infer`."""
        import torch

        if self._session is None:
            raise EngineError("OrtRunner.infer_torch called outside its `with` block")
        x = feed[self.input_name]
        if x.device.type != "cuda":
            out = self.infer({self.input_name: x.detach().float().contiguous().numpy()})
            return {k: torch.from_numpy(v) for k, v in out.items()}
        x = x.detach().float().contiguous()
        dev = x.device.index or 0
        shapes = self._output_shapes
        binding = self._session.io_binding()
        binding.bind_input(self.input_name, "cuda", dev, np.float32, tuple(x.shape), x.data_ptr())
        result: dict[str, Any] = {}
        for name in self.output_names:
            dims = (len(x),) + tuple(shapes[name][1:])
            if all(isinstance(d, int) for d in dims):  # static beyond the batch axis: bind a torch buffer
                result[name] = torch.empty(dims, dtype=torch.float32, device=x.device)
                binding.bind_output(name, "cuda", dev, np.float32, dims, result[name].data_ptr())
            else:
                binding.bind_output(name, "cuda", dev)
        torch.cuda.current_stream(x.device).synchronize()  # ORT runs on its own stream
        self._session.run_with_iobinding(binding)
        for name, ov in zip(self.output_names, binding.get_outputs()):
            if name not in result:  # dynamic shape: ORT allocated it; one copy through the host
                result[name] = torch.from_numpy(ov.numpy()).to(x.device)
        return result
