"""Runners: one protocol, several backends (ONNX Runtime, eager torch)."""

from gcage_fast.engine.base import Runner, RunnerInfo, infer_chunked

__all__ = ["Runner", "RunnerInfo", "infer_chunked", "create_runners", "resolve_backend"]


def __getattr__(name: str):  # lazy: keeps `import gcage_fast.engine` free of torch/onnxruntime
    if name in ("create_runners", "resolve_backend"):
        from gcage_fast.engine import factory

        return getattr(factory, name)
    raise AttributeError(name)
