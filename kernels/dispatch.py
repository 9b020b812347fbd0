"""Choose the implementation of the device kernels: ``auto``, ``reference``, ``triton`` or ``cuda``.

The choice comes from the function argument, else the environment variable ``GCAGE_KERNEL_IMPL``, else ``auto``.

- ``reference``: :mod:`gcage_fast.kernels.torch_ref` (torch operations; any device).
- ``triton``: :mod:`gcage_fast.kernels.triton_kernels`. On CUDA tensors it needs the kernels compiled (imported
  without ``TRITON_INTERPRET=1``); on CPU tensors it needs the interpreter, i.e. ``TRITON_INTERPRET=1`` in the
  environment before that module is first imported (correctness checks only: 10^3-10^4x slower than torch).
- ``cuda``: ``fuse_cam`` from the CUDA C source ``kernels/cuda/fuse_cam.cu`` compiled at run time
  (:mod:`gcage_fast.kernels.cuda_fuse`); ``patch_contrast`` and ``gather_patches`` are the torch ones, run on
  the GPU. CUDA tensors only.
- ``auto``: on CPU tensors ``reference``; on CUDA tensors ``triton``, else ``cuda``, else ``reference``; each
  fallback is logged with the reason.

An explicit choice that cannot load raises: :class:`MissingDependencyError` when the package is not installed,
:class:`EngineError` when it is installed but cannot run on this device, :class:`ConfigError` for an unknown name.
The returned :class:`KernelSet` says what was chosen (``name``, ``detail``) so a scan can record it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import torch

from gcage_fast.errors import ConfigError, EngineError, GcageError
from gcage_fast.log import logger
from gcage_fast.optional import require

__all__ = ["IMPLS", "ENV_VAR", "KernelSet", "resolve_kernels", "requested_impl", "load_triton_interpreted"]

IMPLS = ("auto", "reference", "triton", "cuda")
ENV_VAR = "GCAGE_KERNEL_IMPL"
_TRITON_MODULE = "gcage_fast.kernels.triton_kernels"


@dataclass(frozen=True)
class KernelSet:
    """The three kernels of one implementation, with the same signatures as
    :mod:`gcage_fast.kernels.torch_ref`.

    ``name`` is ``reference``, ``triton`` or ``cuda``; ``detail`` says which code runs each kernel (recorded in
    run.json), e.g. ``triton (compiled)`` or ``cuda: fuse_cam via cupy; patch_contrast, gather_patches via
    torch``.
    """

    name: str
    detail: str
    patch_contrast: Callable
    gather_patches: Callable
    fuse_cam: Callable


def requested_impl(impl: str | None = None) -> str:
    """The implementation asked for: ``impl``, else ``$GCAGE_KERNEL_IMPL``, else ``auto`` (validated)."""
    choice = (impl or os.environ.get(ENV_VAR) or "auto").strip().lower()
    if choice not in IMPLS:
        source = "kernel implementation" if impl else f"{ENV_VAR}"
        raise ConfigError(f"unknown {source} {choice!r}; choose one of {', '.join(IMPLS)}")
    return choice


def _reference() -> KernelSet:
    from gcage_fast.kernels import torch_ref

    return KernelSet("reference", "reference (torch operations)", torch_ref.patch_contrast,
                     torch_ref.gather_patches, torch_ref.fuse_cam)


def _triton_module(device: torch.device) -> ModuleType:
    """The Triton kernels module, checked to be built for ``device`` (interpreted on CPU, compiled on CUDA)."""
    require("triton")
    want_interp = device.type == "cpu"
    if device.type not in ("cpu", "cuda"):
        raise EngineError(f"Triton kernels run on CUDA tensors (or CPU tensors under the interpreter), not on "
                          f"{device.type}")
    loaded = sys.modules.get(_TRITON_MODULE)
    if loaded is None:
        env_interp = os.environ.get("TRITON_INTERPRET", "") == "1"
        if want_interp and not env_interp:
            raise EngineError("Triton kernels on CPU tensors need the interpreter: set TRITON_INTERPRET=1 in the "
                              "environment before gcage_fast starts (correctness checks only; use the reference "
                              "kernels for CPU scans)")
        if not want_interp and env_interp:
            raise EngineError("TRITON_INTERPRET=1 is set, so Triton kernels would run in the CPU interpreter; "
                              "unset it to run them on the GPU")
        if not want_interp and not torch.cuda.is_available():
            raise EngineError("Triton kernels need a CUDA GPU and torch sees none")
        try:
            loaded = importlib.import_module(_TRITON_MODULE)
        except GcageError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken Triton install: report it as an engine problem
            raise EngineError(f"the Triton kernels could not be built: {exc}") from exc
    if loaded.INTERPRETED != want_interp:
        mode = "the interpreter (TRITON_INTERPRET=1)" if loaded.INTERPRETED else "compiled for the GPU"
        raise EngineError(f"the Triton kernels were already loaded in {mode}, which cannot run {device.type} "
                          "tensors; set or unset TRITON_INTERPRET before gcage_fast starts")
    return loaded


def _triton(device: torch.device) -> KernelSet:
    mod = _triton_module(device)
    mode = "interpreter, correctness only" if mod.INTERPRETED else "compiled"
    return KernelSet("triton", f"triton ({mode})", mod.patch_contrast, mod.gather_patches, mod.fuse_cam)


def _cuda(device: torch.device) -> KernelSet:
    if device.type != "cuda":
        raise EngineError(f"the CUDA C kernels need CUDA tensors, not {device.type} "
                          "(use the reference kernels on CPU)")
    if not torch.cuda.is_available():
        raise EngineError("the CUDA C kernels need a CUDA GPU and torch sees none")
    from gcage_fast.kernels import cuda_fuse, torch_ref

    launcher = cuda_fuse.load_launcher()
    return KernelSet("cuda", f"cuda (fuse_cam via {launcher.backend}; patch_contrast, gather_patches via torch)",
                     torch_ref.patch_contrast, torch_ref.gather_patches, launcher.fuse_cam)


def load_triton_interpreted() -> ModuleType:
    """Import the Triton kernels built for the CPU interpreter, setting ``TRITON_INTERPRET=1`` only while they are
    imported (for tests and benchmarks that must leave the environment as they found it).

    Triton imports part of itself lazily at the first launch and checks the interpreter state then, so that part
    is imported here too, under the same setting. Raises EngineError when the kernels were already imported
    compiled for a GPU in this process, MissingDependencyError without triton.
    """
    require("triton")
    loaded = sys.modules.get(_TRITON_MODULE)
    if loaded is not None:
        if not loaded.INTERPRETED:
            raise EngineError("the Triton kernels were already imported compiled for the GPU in this process")
        return loaded
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        module = importlib.import_module(_TRITON_MODULE)
        try:
            importlib.import_module("triton.experimental.gluon")
        except ImportError:
            pass
        return module
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


_LOADERS: dict[str, Callable[[torch.device], KernelSet]] = {
    "reference": lambda device: _reference(),
    "triton": _triton,
    "cuda": _cuda,
}


def resolve_kernels(impl: str | None = None, device: str | torch.device = "cpu") -> KernelSet:
    """The kernels for tensors on ``device``, by ``impl`` (see the module docstring for the rules)."""
    choice = requested_impl(impl)
    device = torch.device(device)
    if choice != "auto":
        kernels = _LOADERS[choice](device)
        logger.info("kernels: %s", kernels.detail)
        return kernels
    if device.type != "cuda":
        logger.info("kernels: auto on %s tensors -> reference", device.type)
        return _reference()
    for name in ("triton", "cuda"):
        try:
            kernels = _LOADERS[name](device)
        except GcageError as exc:
            logger.warning("kernels: %s unavailable (%s); trying the next implementation", name, exc)
            continue
        logger.info("kernels: auto -> %s", kernels.detail)
        return kernels
    logger.warning("kernels: auto -> reference (torch operations) on %s; neither Triton nor the CUDA C kernel "
                   "could be loaded", device)
    return _reference()
