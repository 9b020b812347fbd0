"""Eager PyTorch runner: the reference backend, and the GPU path that needs neither TensorRT nor onnxruntime-gpu.

It runs the very modules that are exported to ONNX. ``precision`` selects autocast: ``fp32`` (none), ``bf16``
(CPU or CUDA) or ``fp16`` (CUDA only; the CPU has no fast fp16 convolutions). On CUDA the modules run in
channels-last memory format, which is what cuDNN's tensor-core convolutions want.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from gcage_fast.engine.base import RunnerInfo
from gcage_fast.errors import ConfigError, EngineError
from gcage_fast.precision import PRECISIONS_BY_BACKEND

__all__ = ["TorchRunner", "AUTOCAST_DTYPES"]

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner:
    """Runs ``module`` under ``torch.inference_mode`` on ``device``.

    Args:
        module: returns one tensor or a tuple of tensors, in the order of ``output_names``.
        input_name: the key :meth:`infer` reads.
        output_names: names of the outputs.
        device: ``cpu`` or ``cuda``; ``cuda`` without a GPU raises EngineError when the runner is opened.
        threads: intra-op threads (CPU).
        precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA only): autocast of the module's convolutions and linear
            layers; outputs are returned as float32.
    """

    accepts_torch = True

    def __init__(self, module: nn.Module, input_name: str, output_names: tuple[str, ...], device: str = "cpu",
                 threads: int | None = None, precision: str = "fp32") -> None:
        if precision not in PRECISIONS_BY_BACKEND["torch"]:
            raise ConfigError(f"the torch backend runs fp32, bf16 or fp16, not {precision!r}")
        if precision == "fp16" and device != "cuda":
            raise ConfigError("--precision fp16 on the torch backend needs --device cuda (use bf16 on the CPU, or "
                              "--backend ort --precision fp16)")
        self.module = module.eval()
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.device = device
        self.threads = threads
        self.precision = precision
        self._open = False

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo("torch", self.device, precision=self.precision)

    def __enter__(self) -> TorchRunner:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise EngineError("--device cuda was requested but torch sees no CUDA GPU "
                              "(use --device cpu, or install a CUDA build of torch)")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module.to(self.device)
        if self.device == "cuda":
            self.module.to(memory_format=torch.channels_last)
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._open = False

    def _autocast(self) -> Any:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=AUTOCAST_DTYPES[self.precision])

    def infer_torch(self, feed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run on a tensor (moved to the runner's device if needed); outputs are float32 tensors on the device."""
        if not self._open:
            raise EngineError("TorchRunner.infer_torch called outside its `with` block")
        x = feed[self.input_name].to(self.device, torch.float32)
        if self.device == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()  # NCHW-contiguous: some CPU kernels mis-handle other layouts
        with torch.inference_mode(), self._autocast():
            out = self.module(x)
        out = out if isinstance(out, tuple) else (out,)
        return {name: t.detach().float() for name, t in zip(self.output_names, out)}

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._open:
            raise EngineError("TorchRunner.infer called outside its `with` block")
        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name]))
        out = self.infer_torch({self.input_name: x})
        return {name: t.cpu().numpy() for name, t in out.items()}
