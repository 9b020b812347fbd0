"""ONNX graphs gcage_fast runs or builds engines from must be self-contained: every tensor inside the file.

An ONNX tensor may instead name an external data file by path. gcage_fast never writes such graphs, and an
external-data path is a known way to make a runtime read arbitrary host files into tensors (``../../etc/...``),
so a graph that references one is refused before ONNX Runtime or TensorRT sees it. The graph is parsed with
external-data loading off, so nothing outside the file is ever opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gcage_fast.errors import GcageError, ModelError

__all__ = ["refuse_external_data"]


def refuse_external_data(source: str | Path | bytes, name: str | None = None,
                         error: type[GcageError] = ModelError, action: str = "runs") -> Any:
    """The parsed ``onnx.ModelProto`` of ``source`` (a path, or serialized bytes), when it is self-contained.

    Args:
        source: the graph file, or its bytes.
        name: how the messages call the graph (default: the path).
        error: the exception raised (ModelError for a runner, EngineError for an engine build).
        action: what gcage_fast would do with it, for the message (``runs``, ``builds``).

    Raises:
        error: the graph cannot be parsed, or an initializer or constant references external data.
    """
    import onnx

    label = name if name is not None else str(source)
    try:
        if isinstance(source, bytes):
            model = onnx.load_model_from_string(source)
        else:
            model = onnx.load(str(source), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a graph onnx cannot parse is refused
        raise error(f"cannot parse {label} as ONNX: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise error(f"{label} references external tensor data; gcage_fast only {action} self-contained graphs")
    return model
