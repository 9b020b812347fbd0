"""Export: torch -> ONNX graphs with the CAM inside, parity reports, and the per-model export cache."""

__all__ = ["ExportOptions", "export_model", "cached_export"]


def __getattr__(name: str):  # lazy: importing gcage_fast.export must not import torch
    if name in ("ExportOptions", "export_model"):
        from gcage_fast.export import to_onnx

        return getattr(to_onnx, name)
    if name == "cached_export":
        from gcage_fast.export.cache import cached_export

        return cached_export
    raise AttributeError(name)
