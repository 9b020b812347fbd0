"""Engine precisions: the one list that the command line, the export, the runners and TensorRT all use.

Pure Python (no torch, no numpy): the configuration and the decode workers may import it.

- ``fp32``: the exported float32 graphs (the default; what every parity check compares against).
- ``fp16``: graphs of their own with float16 convolution trunks (ONNX Runtime, TensorRT), or autocast (torch).
- ``int8``: static Q/DQ graphs calibrated on images (ONNX Runtime, TensorRT); see export/precision.py.
- ``bf16``: torch autocast only.
"""

from __future__ import annotations

from enum import Enum

from gcage_fast.errors import ConfigError

__all__ = ["Precision", "GRAPH_PRECISIONS", "SCAN_PRECISIONS", "PRECISIONS_BY_BACKEND", "check_precision"]


class Precision(str, Enum):
    """A numeric precision of the engines. A ``str`` enum: ``Precision.FP16 == "fp16"``."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    BF16 = "bf16"


#: Precisions an exported ONNX graph (and a TensorRT engine built from it) can have.
GRAPH_PRECISIONS: tuple[str, ...] = (Precision.FP32.value, Precision.FP16.value, Precision.INT8.value)
#: Precisions a scan can ask for: the graph precisions, and bf16 through torch autocast.
SCAN_PRECISIONS: tuple[str, ...] = tuple(p.value for p in Precision)
#: What each backend runs. fp16/int8 for ort and tensorrt are graphs of their own (export/precision.py);
#: fp16/bf16 for torch are autocast (fp16 on CUDA only).
PRECISIONS_BY_BACKEND: dict[str, tuple[str, ...]] = {
    "ort": GRAPH_PRECISIONS,
    "tensorrt": GRAPH_PRECISIONS,
    "torch": (Precision.FP32.value, Precision.FP16.value, Precision.BF16.value),
}


def check_precision(name: str, allowed: tuple[str, ...] = SCAN_PRECISIONS) -> str:
    """``name`` when it is one of ``allowed``.

    Raises:
        ConfigError: an unknown precision, naming the choices.
    """
    if name not in allowed:
        raise ConfigError(f"unknown precision {name!r}; choose {', '.join(allowed)}")
    return name
