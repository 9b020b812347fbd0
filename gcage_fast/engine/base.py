"""The Runner protocol shared by every backend.

A runner is opened and closed as a context manager and maps named input arrays to named output arrays::

    with runner:
        outputs = runner.infer({"patches": batch})   # -> {"probs": ..., "cam": ...}

Runners return fresh NumPy arrays (never reused buffers) and record what actually ran in :attr:`Runner.info`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Runner", "RunnerInfo", "infer_chunked"]


@dataclass(frozen=True)
class RunnerInfo:
    """What ran: backend (``ort``/``torch``), device, requested and active providers (ORT) and the graph file."""

    backend: str
    device: str
    providers_requested: tuple[str, ...] = ()
    providers_active: tuple[str, ...] = ()
    graph: str | None = None

    @property
    def label(self) -> str:
        """Short form recorded in every output row, e.g. ``ort:CPUExecutionProvider`` or ``torch:cpu``."""
        if self.backend == "ort" and self.providers_active:
            return f"ort:{self.providers_active[0]}"
        return f"{self.backend}:{self.device}"


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


def infer_chunked(runner: Runner, x: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """Run ``x`` through ``runner`` in chunks of at most ``batch_size`` along axis 0; concatenate the outputs."""
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(x), batch_size):
        parts.append(runner.infer({runner.input_name: x[start:start + batch_size]}))
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in runner.output_names}
