"""gcage_fast: a fast, explainable batch scanner for AI-generated images (G-CAGE on ONNX Runtime / TensorRT).

The package import is light (no torch): heavy modules are imported where they are used. Entry points:
``gcage_fast.scan.local.scan(ScanConfig(...))`` and the ``gcage-fast`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
