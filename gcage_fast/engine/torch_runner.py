"""Eager PyTorch runner: the reference backend. It runs the very modules that are exported to ONNX."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gcage_fast.engine.base import RunnerInfo
from gcage_fast.errors import EngineError

__all__ = ["TorchRunner"]


class TorchRunner:
    """Runs ``module`` under ``torch.inference_mode`` on ``device``.

    Args:
        module: returns one tensor or a tuple of tensors, in the order of ``output_names``.
        input_name: the key :meth:`infer` reads.
        output_names: names of the outputs.
        device: ``cpu`` or ``cuda``; ``cuda`` without a GPU raises EngineError when the runner is opened.
    """

    def __init__(self, module: nn.Module, input_name: str, output_names: tuple[str, ...], device: str = "cpu",
                 threads: int | None = None) -> None:
        self.module = module.eval()
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.device = device
        self.threads = threads
        self._open = False

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo("torch", self.device)

    def __enter__(self) -> TorchRunner:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise EngineError("--device cuda was requested but torch sees no CUDA GPU "
                              "(use --device cpu, or install a CUDA build of torch)")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module.to(self.device)
        self._open = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._open = False

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._open:
            raise EngineError("TorchRunner.infer called outside its `with` block")
        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name])).to(self.device)
        with torch.inference_mode():
            out = self.module(x)
        out = out if isinstance(out, tuple) else (out,)
        return {name: t.detach().float().cpu().numpy() for name, t in zip(self.output_names, out)}
