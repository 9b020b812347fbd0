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

__all__ = ["Runner", "RunnerInfo", "DeviceErrors", "infer_chunked", "run_chunked", "is_out_of_memory",
           "is_device_fault"]


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


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _device_fault(exc: BaseException) -> DeviceFault:
    """The run-stopping error for a sticky device failure (the process's device context is lost)."""
    return DeviceFault(f"the device failed and cannot be used again in this process ({_first_line(exc)}); "
                       "run the same command with --resume")


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
            if is_device_fault(exc):
                raise _device_fault(exc) from exc
            if not is_out_of_memory(exc):
                raise
            _release_cached_memory()
            if size == 1:
                raise OutOfMemory(f"out of memory at batch size 1 ({_first_line(exc)})") from exc
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


class DeviceErrors:
    """``with DeviceErrors("what"):`` around device work outside the engine calls (uploads, kernels, copies back):
    an error that :func:`is_device_fault` calls sticky leaves it as
    :class:`~gcage_fast.errors.DeviceFault` (the run stops; --resume continues), one that
    :func:`is_out_of_memory` recognises (torch.cuda.OutOfMemoryError, CuPy's, a CUDA or
    host allocation failure) as :class:`~gcage_fast.errors.OutOfMemory`, which the scorer
    answers by scoring the images one at a time (:func:`gcage_fast.scoring.base.score_one_by_one_on_oom`). ``OutOfMemory`` and ``DeviceFault`` raised inside (by
    :func:`run_chunked`) and every other error pass unchanged.

    A class rather than a generator context manager, and no local holds the new exception: no reference cycle
    keeps the failed batch's tensors (in the traceback's frames) alive while the images are retried one by one.
    """

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> DeviceErrors:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if not isinstance(exc, Exception) or isinstance(exc, (OutOfMemory, DeviceFault)):
            return False
        if is_device_fault(exc):
            raise _device_fault(exc) from exc
        if is_out_of_memory(exc):
            _release_cached_memory()
            raise OutOfMemory(f"out of memory in {self.what} ({_first_line(exc)})") from exc
        return False
