"""The Runner protocol shared by every backend.

A runner is opened and closed as a context manager and maps named input arrays to named output arrays::

    with runner:
        outputs = runner.infer({"patches": batch})   # -> {"probs": ..., "cam": ...}

Runners return fresh NumPy arrays (never reused buffers) and record what actually ran in :attr:`Runner.info`.
A runner with ``accepts_torch = True`` also has ``infer_torch(feed)``: torch tensors in, torch tensors out, on the
tensors' device (no host round trip on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from gcage_fast.errors import DeviceFault, OutOfMemory
from gcage_fast.log import logger

__all__ = ["Runner", "RunnerInfo", "infer_chunked", "run_chunked", "is_out_of_memory", "is_device_fault"]


@dataclass(frozen=True)
class RunnerInfo:
    """What ran: backend (``ort``/``tensorrt``/``torch``), device, requested and active providers (ORT), the
    graph file and the precision."""

    backend: str
    device: str
    providers_requested: tuple[str, ...] = ()
    providers_active: tuple[str, ...] = ()
    graph: str | None = None
    precision: str = "fp32"

    @property
    def label(self) -> str:
        """Short form recorded in every output row, e.g. ``ort:CPUExecutionProvider``, ``torch:cuda:bf16`` or
        ``ort:CPUExecutionProvider:int8`` (the precision is appended when it is not fp32)."""
        if self.backend == "ort" and self.providers_active:
            text = f"ort:{self.providers_active[0]}"
        else:
            text = f"{self.backend}:{self.device}"
        return text if self.precision == "fp32" else f"{text}:{self.precision}"


@runtime_checkable
class Runner(Protocol):
    """One graph (base or head) on one backend."""

    input_name: str
    output_names: tuple[str, ...]

    @property
    def info(self) -> RunnerInfo: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


# Substrings of the messages CUDA, cuDNN, ONNX Runtime and TensorRT give for the two kinds of device failure.
_OOM_TEXT = ("out of memory", "cuda_error_out_of_memory", "failed to allocate memory", "cudaerrormemoryallocation",
             "cudnn_status_alloc_failed", "cublas_status_alloc_failed")
_FAULT_TEXT = ("illegal memory access", "illegal address", "illegal instruction", "unspecified launch failure",
               "device-side assert", "misaligned address", "uncorrectable ecc", "cuda_error_illegal_address",
               "cuda_error_launch_failed", "cudaerrorillegaladdress", "cudaerrorlaunchfailure")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a device (or host) allocation failure a smaller batch may avoid."""
    if isinstance(exc, (OutOfMemory, MemoryError)):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
        return True
    text = str(exc).lower()
    return any(t in text for t in _OOM_TEXT)


def is_device_fault(exc: BaseException) -> bool:
    """True for a sticky device error: every later call in this process would fail too."""
    if isinstance(exc, DeviceFault):
        return True
    text = str(exc).lower()
    return any(t in text for t in _FAULT_TEXT)


def _release_cached_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_chunked(call: Callable[[Any], dict[str, Any]], x: Any, batch_size: int,
                concat: Callable[[list[Any]], Any]) -> dict[str, Any]:
    """``call`` on chunks of at most ``batch_size`` rows of ``x``; the outputs joined with ``concat``.

    On out-of-memory the chunk is retried at half the size, down to 1 (the smaller size is kept for the rest of
    ``x``); at size 1 it raises :class:`~gcage_fast.errors.OutOfMemory`. A sticky device error raises
    :class:`~gcage_fast.errors.DeviceFault`: the process's device context is lost, the run must stop.
    """
    parts: list[dict[str, Any]] = []
    start, size = 0, max(1, batch_size)
    while start < len(x):
        chunk = x[start:start + size]
        try:
            out = call(chunk)
        except Exception as exc:  # noqa: BLE001 - classified below; anything else propagates unchanged
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if is_device_fault(exc):
                raise DeviceFault(f"the device failed and cannot be used again in this process ({first}); "
                                  "run the same command with --resume") from exc
            if not is_out_of_memory(exc):
                raise
            _release_cached_memory()
            if size == 1:
                raise OutOfMemory(f"out of memory at batch size 1 ({first})") from exc
            size = max(1, size // 2)
            logger.warning("out of memory at batch size %d; retrying at %d", len(chunk), size)
            continue
        parts.append(out)
        start += len(chunk)
    if len(parts) == 1:
        return parts[0]
    return {k: concat([p[k] for p in parts]) for k in parts[0]}


def infer_chunked(runner: Runner, x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run ``x`` through ``runner`` in chunks of at most ``batch_size`` along axis 0 and concatenate the outputs,
    halving the chunk on out-of-memory (see :func:`run_chunked`)."""
    out = run_chunked(lambda chunk: runner.infer({runner.input_name: chunk}), x, batch_size, np.concatenate)
    return {k: out[k] for k in runner.output_names}
