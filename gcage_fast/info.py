"""``gcage-fast info``: versions, backends, providers, CPU features and GPU, as a dict."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from typing import Any

from gcage_fast import env
from gcage_fast.version import __version__

__all__ = ["system_info"]

_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "fma", "f16c")


def _cpu() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", "unknown", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "features": [f for f in _FLAGS if f in flags]}


_DISTS = {
    "torch": ("torch",), "onnx": ("onnx",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnxscript": ("onnxscript",), "numpy": ("numpy",), "pillow": ("pillow",), "pyarrow": ("pyarrow",),
    "click": ("click",), "safetensors": ("safetensors",), "triton": ("triton",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"), "pycuda": ("pycuda",),
}


def _version(name: str) -> str | None:
    """Installed version of a distribution (without importing it), or None."""
    for dist in _DISTS[name]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def system_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "gcage_fast": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "versions": {name: _version(name) for name in _DISTS},
        "cache_dir": str(env.cache_dir()),
    }
    backends = ["torch"]
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
        backends.insert(0, "ort")
    except ImportError:
        info["onnxruntime_providers"] = []
    if importlib.util.find_spec("tensorrt") is not None:
        backends.insert(0, "tensorrt")
    info["backends"] = backends
    gpu: dict[str, Any] | None = None
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                   "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    except ImportError:
        pass
    info["gpu"] = gpu
    return info
