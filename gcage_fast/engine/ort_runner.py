"""ONNX Runtime runner (CPU by default; CUDA when onnxruntime-gpu is installed and a GPU is present).

ONNX Runtime silently falls back to the CPU when a GPU provider cannot load. This runner compares the providers
it asked for with ``session.get_providers()`` and refuses the fallback unless the device is ``cpu``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from gcage_fast.engine.base import RunnerInfo
from gcage_fast.errors import EngineError, ModelError
from gcage_fast.hashing import sha256_file
from gcage_fast.optional import require

__all__ = ["OrtRunner", "providers_for", "refuse_external_data"]


def refuse_external_data(path: Path) -> None:
    """Refuse a graph that references external tensor data: gcage_fast writes self-contained graphs, and an
    external-data path is a known way to make a runtime read arbitrary host files into tensors."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a graph onnx cannot parse is refused
        raise ModelError(f"cannot parse {path} as ONNX: {str(exc).splitlines()[0]}") from exc
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise ModelError(f"{path} references external tensor data; gcage_fast only runs self-contained graphs")


def providers_for(device: str) -> tuple[str, ...]:
    return ("CUDAExecutionProvider", "CPUExecutionProvider") if device == "cuda" else ("CPUExecutionProvider",)


class OrtRunner:
    """Runs one ONNX graph.

    Args:
        path: the ONNX file.
        input_name, output_names: the graph's tensor names.
        device: ``cpu`` or ``cuda``.
        threads: intra-op threads (None = ONNX Runtime's default, one per core).
        expected_sha256: when given, the file is hashed and compared before it is parsed.
    """

    def __init__(self, path: str | Path, input_name: str, output_names: tuple[str, ...], device: str = "cpu",
                 threads: int | None = None, expected_sha256: str | None = None) -> None:
        self.path = Path(path)
        self.input_name = input_name
        self.output_names = tuple(output_names)
        self.device = device
        self.threads = threads
        self.expected_sha256 = expected_sha256
        self._session = None
        self._active: tuple[str, ...] = ()

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo("ort", self.device, providers_for(self.device), self._active, str(self.path))

    def __enter__(self) -> OrtRunner:
        ort = require("onnxruntime")
        if self.expected_sha256 is not None:
            actual = sha256_file(self.path)
            if actual != self.expected_sha256:
                raise ModelError(f"{self.path} does not match its recorded sha256 ({actual[:16]}… != "
                                 f"{self.expected_sha256[:16]}…); delete it to re-export")
        refuse_external_data(self.path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        requested = providers_for(self.device)
        try:
            with warnings.catch_warnings():  # "provider not available" warnings: checked explicitly below
                warnings.simplefilter("ignore", UserWarning)
                self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=list(requested))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise EngineError(f"ONNX Runtime cannot load {self.path}: {str(exc).splitlines()[0]}") from exc
        self._active = tuple(self._session.get_providers())
        if self.device == "cuda" and "CUDAExecutionProvider" not in self._active:
            self._session = None
            raise EngineError(
                "ONNX Runtime could not start the CUDA provider and fell back to the CPU "
                f"(active: {', '.join(self._active)}); install onnxruntime-gpu with CUDA/cuDNN, or use --device cpu"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._session = None

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._session is None:
            raise EngineError("OrtRunner.infer called outside its `with` block")
        x = np.ascontiguousarray(feed[self.input_name], dtype=np.float32)
        outs = self._session.run(list(self.output_names), {self.input_name: x})
        return dict(zip(self.output_names, outs))
