"""TensorRT runner: one serialized engine on one CUDA GPU, fed and read as torch CUDA tensors.

The engine is verified against the metadata file beside it (sha256, and the key when one is expected) before
TensorRT deserializes it; see :mod:`gcage_fast.export.engine_cache` for where engines may come from.

Execution follows the TensorRT 10/11 name-based API on PyTorch's current stream, without host staging:
``set_input_shape`` for the batch, ``set_tensor_address`` for every I/O tensor (the input tensor and output
tensors allocated by torch on the same device), then ``execute_async_v3(stream)``. :meth:`TrtRunner.infer_torch`
returns the outputs as device tensors, ready in stream order on the current stream; :meth:`TrtRunner.infer`
is the NumPy form of the Runner protocol (it copies to and from the host). Outputs are fresh tensors on every
call: with CUDA graphs on, the graph's static buffers are copied out, never handed out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from gcage_fast.engine.base import RunnerInfo
from gcage_fast.errors import EngineError

__all__ = ["TrtRunner"]


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8,
             "int32": torch.int32, "int64": torch.int64, "bool": torch.bool, "uint8": torch.uint8}
    for name, tdt in table.items():
        if hasattr(trt, name) and dtype == getattr(trt, name):
            return tdt
    raise EngineError(f"the engine has a tensor of type {dtype}, which the TensorRT runner does not handle")


class TrtRunner:
    """Runs one TensorRT engine.

    Args:
        engine_path: the engine, with ``<engine>.json`` beside it (an engine without metadata is refused).
        input_name, output_names: the graph's tensor names; ``output_names`` are returned in this order (the
            engine may have more outputs: they are computed and dropped).
        expected_key: when given, the metadata's key must equal it (TensorRT version, GPU, profile, ...).
        rebuild: called once to write the engine again when verification or deserialization fails (for engines
            in gcage_fast's cache); None for a user-named engine, which then fails at once.
        cuda_graphs: capture one CUDA graph per batch size on first use and replay it (off by default; it
            costs one static copy of the input and outputs per batch size seen).
        trt: the ``tensorrt`` module (default: imported lazily, with an install hint when absent).
    """

    accepts_torch = True

    def __init__(self, engine_path: str | Path, input_name: str, output_names: tuple[str, ...], *,
                 expected_key: Any = None, rebuild: Callable[[], Any] | None = None, cuda_graphs: bool = False,
                 trt: Any = None, precision: str = "fp32") -> None:
        self.engine_path = Path(engine_path)
        self.precision = precision
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.expected_key = expected_key
        self.rebuild = rebuild
        self.cuda_graphs = cuda_graphs
        self.metadata: dict[str, Any] = {}
        self._trt = trt
        self._log: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._device: Any = None
        self._dtypes: dict[str, Any] = {}
        self._engine_outputs: tuple[str, ...] = ()
        self._batch_range = (1, 1)
        self._graphs: dict[int, tuple[Any, Any, dict[str, Any]]] = {}

    @classmethod
    def from_onnx(cls, onnx_path: str | Path, input_name: str, output_names: tuple[str, ...], *,
                  cuda_graphs: bool = False, trt: Any = None, **build_options: Any) -> TrtRunner:
        """A runner for the engine of ``onnx_path``, built on first use (see
        :func:`gcage_fast.export.tensorrt_build.build_engine` for ``build_options``) and rebuilt once if the
        engine on disk fails verification or deserialization."""
        from gcage_fast.export.tensorrt_build import build_engine

        record = build_engine(onnx_path, trt=trt, **build_options)

        def rebuild() -> None:
            build_engine(onnx_path, trt=trt, force=True, **build_options)

        return cls(record.engine_path, input_name, output_names, expected_key=record.key, rebuild=rebuild,
                   cuda_graphs=cuda_graphs, trt=trt, precision=build_options.get("precision", "fp32"))

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo("tensorrt", "cuda", graph=str(self.engine_path), precision=self.precision)

    def __enter__(self) -> TrtRunner:
        import torch

        from gcage_fast.export.engine_cache import load_engine
        from gcage_fast.export.tensorrt_build import require_tensorrt, tensorrt_logger, tensorrt_major

        trt = self._trt if self._trt is not None else require_tensorrt()
        tensorrt_major(trt)
        if not torch.cuda.is_available():
            raise EngineError("the TensorRT backend needs a CUDA GPU and torch sees none (check the driver and that "
                              "a CUDA build of torch is installed, or use --backend ort/torch)")
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._log = tensorrt_logger(trt)  # the logger and the runtime are kept alive as long as the engine
        self._runtime = trt.Runtime(self._log)
        try:
            self._engine, self.metadata = load_engine(self.engine_path, self._runtime.deserialize_cuda_engine,
                                                      self.expected_key, self.rebuild)
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineError(f"TensorRT could not create an execution context for {self.engine_path} "
                                  "(out of GPU memory?)")
            self._inspect(trt)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _inspect(self, trt: Any) -> None:
        """Check the engine's I/O tensors against the names this runner was given; record dtypes and the
        profile's batch range."""
        engine = self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
            self._dtypes[name] = _torch_dtype(trt, engine.get_tensor_dtype(name))
        if inputs != [self.input_name]:
            raise EngineError(f"engine {self.engine_path} has inputs {inputs}, expected [{self.input_name!r}]")
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise EngineError(f"engine {self.engine_path} lacks outputs {missing} (it has {outputs})")
        self._engine_outputs = tuple(outputs)
        lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
        self._batch_range = (int(lo[0]), int(hi[0]))

    def __exit__(self, *exc: object) -> None:
        self._graphs.clear()
        self._context = None
        self._engine = None
        self._runtime = None

    def _bind(self, x: Any) -> dict[str, Any]:
        """Set the input shape and every I/O address for ``x``; return freshly allocated outputs."""
        import torch

        ctx = self._context
        if not ctx.set_input_shape(self.input_name, tuple(x.shape)):
            raise EngineError(f"TensorRT rejected input shape {tuple(x.shape)} for {self.input_name}")
        ctx.set_tensor_address(self.input_name, x.data_ptr())
        outs = {}
        for name in self._engine_outputs:
            outs[name] = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._dtypes[name], device=x.device)
            ctx.set_tensor_address(name, outs[name].data_ptr())
        return outs

    def _prepare(self, feed: dict[str, Any]) -> Any:
        if self._context is None:
            raise EngineError("TrtRunner used outside its `with` block")
        x = feed[self.input_name]
        if x.device != self._device:
            raise EngineError(f"infer_torch needs tensors on {self._device}, got {x.device}")
        if x.dim() == 0 or not self._batch_range[0] <= x.shape[0] <= self._batch_range[1]:
            n = x.shape[0] if x.dim() else 0
            raise EngineError(f"batch of {n} is outside the engine's profile {self._batch_range[0]}.."
                              f"{self._batch_range[1]}; rebuild it with a larger --max-batch or use smaller batches")
        return x.to(self._dtypes[self.input_name]).contiguous()

    def infer_torch(self, feed: dict[str, Any]) -> dict[str, Any]:
        """Run the engine on a CUDA tensor batch; outputs are new CUDA tensors, ordered on the current stream."""
        import torch

        x = self._prepare(feed)
        if self.cuda_graphs:
            return self._replay(x)
        stream = torch.cuda.current_stream(self._device)
        outs = self._bind(x)
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise EngineError(f"TensorRT execute_async_v3 failed on {self.engine_path}")
        return {name: outs[name] for name in self.output_names}

    def _replay(self, x: Any) -> dict[str, Any]:
        """Run through a CUDA graph captured for this batch size (captured on first use)."""
        import torch

        n = int(x.shape[0])
        if n not in self._graphs:
            static_in = torch.empty_like(x)
            static_in.copy_(x)
            outs = self._bind(static_in)
            stream = torch.cuda.current_stream(self._device)
            # one ordinary run first: TensorRT applies deferred shape/address updates then, not during capture
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT execute_async_v3 failed on {self.engine_path}")
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                if not self._context.execute_async_v3(torch.cuda.current_stream(self._device).cuda_stream):
                    raise EngineError(f"TensorRT execute_async_v3 failed during CUDA graph capture of "
                                      f"{self.engine_path}")
            self._graphs[n] = (graph, static_in, outs)
        graph, static_in, outs = self._graphs[n]
        static_in.copy_(x)
        graph.replay()
        return {name: outs[name].clone() for name in self.output_names}

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The Runner protocol: NumPy in, NumPy (float32) out, through the GPU."""
        import torch

        if self._context is None:
            raise EngineError("TrtRunner.infer called outside its `with` block")
        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name], dtype=np.float32)).to(self._device)
        out = self.infer_torch({self.input_name: x})
        return {name: t.float().cpu().numpy() for name, t in out.items()}
