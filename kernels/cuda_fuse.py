"""Run-time compilation and launch of the CUDA C fused step (``kernels/cuda/fuse_cam.cu``).

Two launchers, tried in this order (or chosen with ``GCAGE_CUDA_LAUNCHER=cupy|pycuda``):

- **cupy** ``RawModule`` (NVRTC): preferred. It shares torch's primary CUDA context through the runtime API,
  takes torch tensors without copies (``__cuda_array_interface__``) and launches on torch's current stream
  (``ExternalStream``), so the kernel is ordered with the surrounding torch work. It is already installed on
  the project's GPU machines and caches compiled modules on disk.
- **pycuda** ``SourceModule`` (nvcc): the package the customer named. It runs in the primary context
  (``pycuda.autoprimaryctx``) so torch's pointers are valid; it cannot launch on torch's stream, so the launch
  waits for torch's current stream first and goes to the legacy default stream. It needs ``nvcc`` at run time
  and a pycuda build against the machine's driver (see ENVIRONMENT.md §5).

cuda-python (NVRTC + driver API) would also work but needs module/context plumbing that cupy already provides.

The source needs no headers (float16 is written as bits through ``cvt.rn.f16.f32``), so NVRTC compiles it without
include paths. :data:`SOURCE_PATH` is the file; CI compile-checks it with ``nvcc -ptx``/``-cubin`` without a GPU.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gcage_fast.errors import ConfigError, EngineError, GcageError
from gcage_fast.kernels.reference import FLAT_RTOL
from gcage_fast.log import logger
from gcage_fast.optional import require

__all__ = ["SOURCE_PATH", "THREADS", "MAX_CAM", "CudaFuseLauncher", "load_launcher", "source"]

SOURCE_PATH = Path(__file__).resolve().parent / "cuda" / "fuse_cam.cu"
THREADS = 256  # GCAGE_THREADS in the source
MAX_CAM = 1024  # GCAGE_MAX_CAM in the source
_NAMES = {torch.float32: "fuse_cam_f32", torch.float16: "fuse_cam_f16"}


def source() -> str:
    """The CUDA C source text."""
    return SOURCE_PATH.read_text()


@dataclass(frozen=True)
class _Args:
    n: int
    tensors: tuple[torch.Tensor, ...]  # img, base, stride, cams, act, weights, out
    k: int
    patch: int
    ch: int
    cw: int
    from_act: int


def _prepare(flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int, cams: torch.Tensor | None,
             activations: torch.Tensor | None, weights: torch.Tensor | None, dtype: torch.dtype,
             out: torch.Tensor | None) -> tuple[_Args, torch.Tensor, torch.Tensor]:
    if dtype not in _NAMES:
        raise ValueError(f"fuse_cam writes float32 or float16, not {dtype}")
    if flat.dtype != torch.uint8 or base.dtype != torch.int64 or stride.dtype != torch.int64:
        raise ValueError("flat must be uint8, base and stride int64")
    n = len(base)
    dev = flat.device
    if cams is None:
        if activations is None or weights is None:
            raise ValueError("fuse_cam needs cams, or activations and weights")
        act = activations.to(torch.float32).contiguous()
        w = weights.to(torch.float32).contiguous()
        k, ch, cw = act.shape[1:]
        cams = torch.empty((n, ch, cw), dtype=torch.float32, device=dev)
        from_act = 1
    else:
        cams = cams.to(torch.float32).contiguous()
        k, (ch, cw) = 0, cams.shape[1:]
        act = w = cams
        from_act = 0
    if ch * cw > MAX_CAM:
        raise ValueError(f"the CUDA C kernel takes CAMs of at most {MAX_CAM} cells, got {ch}x{cw}")
    if out is None:
        out = torch.empty((n, 4, patch, patch), dtype=dtype, device=dev)
    tensors = (flat.contiguous(), base.contiguous(), stride.contiguous(), cams, act, w, out)
    return _Args(n, tensors, int(k), patch, int(ch), int(cw), from_act), out, cams


class CudaFuseLauncher:
    """Compiled ``fuse_cam`` kernels and the launch code of one backend (``cupy`` or ``pycuda``)."""

    def __init__(self, backend: str, launch: Callable[[str, _Args], None]) -> None:
        self.backend = backend
        self._launch = launch

    def fuse_cam(self, flat: torch.Tensor, base: torch.Tensor, stride: torch.Tensor, patch: int,
                 cams: torch.Tensor | None = None, activations: torch.Tensor | None = None,
                 weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                 out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same function as :func:`gcage_fast.kernels.torch_ref.fuse_cam`, on CUDA tensors."""
        args, out, cams = _prepare(flat, base, stride, patch, cams, activations, weights, dtype, out)
        if args.n:
            self._launch(_NAMES[out.dtype], args)
        return out, cams


def _cupy_launcher() -> CudaFuseLauncher:
    cp = require("cupy")
    module = cp.RawModule(code=source(), options=("--std=c++14",))
    functions: dict[str, Any] = {}

    def launch(name: str, a: _Args) -> None:
        dev = a.tensors[0].device
        with cp.cuda.Device(dev.index or 0), cp.cuda.ExternalStream(torch.cuda.current_stream(dev).cuda_stream):
            fn = functions.get(name) or functions.setdefault(name, module.get_function(name))
            arrays = tuple(cp.asarray(t) for t in a.tensors)
            fn((a.n,), (THREADS,), arrays + (np.int32(a.k), np.int32(a.patch), np.int32(a.ch), np.int32(a.cw),
                                             np.int32(a.from_act), np.float32(FLAT_RTOL)))

    return CudaFuseLauncher("cupy", launch)


def _pycuda_launcher() -> CudaFuseLauncher:
    require("pycuda")
    try:
        importlib.import_module("pycuda.autoprimaryctx")  # makes the primary context (torch's) current
        from pycuda.compiler import SourceModule
    except ImportError as exc:  # pycuda is installed but cannot load the driver library
        raise EngineError(f"pycuda is installed but cannot use the CUDA driver: {exc}") from exc
    module = SourceModule(source(), no_extern_c=True, options=["--std=c++14"])

    def launch(name: str, a: _Args) -> None:
        stream = torch.cuda.current_stream(a.tensors[0].device)
        if stream.cuda_stream != 0:
            stream.synchronize()
        fn = module.get_function(name)
        ptrs = tuple(np.uintp(t.data_ptr()) for t in a.tensors)
        fn(*ptrs, np.int32(a.k), np.int32(a.patch), np.int32(a.ch), np.int32(a.cw), np.int32(a.from_act),
           np.float32(FLAT_RTOL), block=(THREADS, 1, 1), grid=(a.n, 1))

    return CudaFuseLauncher("pycuda", launch)


_BACKENDS = {"cupy": _cupy_launcher, "pycuda": _pycuda_launcher}


@lru_cache(maxsize=4)
def _load(choice: str) -> CudaFuseLauncher:
    if choice != "auto":
        return _BACKENDS[choice]()
    errors = []
    for name, make in _BACKENDS.items():
        try:
            return make()
        except GcageError as exc:
            logger.warning("CUDA C kernel: %s launcher unavailable (%s)", name, exc)
            errors.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a compile failure: report it
            errors.append(f"{name}: {exc}")
    raise EngineError("no launcher for the CUDA C kernel could be loaded: " + "; ".join(errors))


def load_launcher(backend: str | None = None) -> CudaFuseLauncher:
    """The launcher of ``backend`` (``cupy``, ``pycuda``), else ``$GCAGE_CUDA_LAUNCHER``, else the first that
    loads. Compiles the source once per process."""
    choice = (backend or os.environ.get("GCAGE_CUDA_LAUNCHER") or "auto").lower()
    if choice not in ("auto", *_BACKENDS):
        raise ConfigError(f"unknown CUDA launcher {choice!r}; choose auto, cupy or pycuda")
    try:
        return _load(choice)
    except GcageError:
        raise
    except Exception as exc:  # noqa: BLE001 - compile errors of the chosen backend
        raise EngineError(f"the CUDA C kernel could not be compiled with {choice}: {exc}") from exc
