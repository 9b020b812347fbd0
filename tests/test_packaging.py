"""Packaging: export/ and kernels/ install under gcage_fast only; light imports; clear messages for missing extras."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gcage_fast.errors import EngineError, MissingDependencyError


def test_no_top_level_export_or_kernels(tmp_path):
    code = ("import importlib.util as u, gcage_fast.kernels as k, gcage_fast.export as e;"
            "print(u.find_spec('kernels'), u.find_spec('export'), k.__name__, e.__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None", "None", "gcage_fast.kernels", "gcage_fast.export"]


def test_light_imports_do_not_load_torch(tmp_path):
    code = ("import sys, gcage_fast, gcage_fast.ingest.prepare, gcage_fast.config, gcage_fast.cli;"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_extra_names_the_extra(monkeypatch):
    from gcage_fast.optional import require

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError) as exc:
        require("onnxruntime")
    assert str(exc.value) == ("onnxruntime is not installed (needed for running ONNX graphs on the CPU "
                              "(or [gpu] for onnxruntime-gpu)); install it with: pip install 'gcage-fast[cpu]'")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'gcage-fast\[tensorrt\]'"):
        require("tensorrt")


def test_auto_backend_falls_back_to_torch_visibly(monkeypatch, caplog):
    from gcage_fast.engine import factory

    monkeypatch.setattr(factory, "available", lambda name: False)
    with caplog.at_level("WARNING", logger="gcage_fast"):
        assert factory.resolve_backend("auto", "cpu") == "torch"
    assert "onnxruntime is not installed; using the eager torch backend" in caplog.text
    assert factory.resolve_backend("ort", "cpu") == "ort"


def test_gpu_requests_never_fall_back_silently(tiny_model_dir):
    import torch

    from gcage_fast.engine.factory import create_runners
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the CPU-fallback refusal cannot be observed")
    model = load_model(tiny_model_dir)
    pair = create_runners(model, ExportOptions.for_model(model), "ort", "cuda")
    with pytest.raises(EngineError, match="could not start the CUDA provider and fell back to the CPU"):
        pair.base.__enter__()
    pair = create_runners(model, ExportOptions.for_model(model), "torch", "cuda")
    with pytest.raises(EngineError, match="--device cuda was requested but torch sees no CUDA GPU"):
        pair.base.__enter__()


def test_runner_records_providers(tiny_model_dir):
    from gcage_fast.engine.factory import create_runners
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    model = load_model(tiny_model_dir)
    pair = create_runners(model, ExportOptions.for_model(model), "ort", "cpu", threads=1)
    with pair.base as runner:
        out = runner.infer({"patches": np.random.rand(2, 3, 224, 224).astype(np.float32)})
        info = runner.info
    assert set(out) == {"probs", "cam"} and out["cam"].shape == (2, 7, 7)
    assert info.providers_requested == ("CPUExecutionProvider",)
    assert info.providers_active == ("CPUExecutionProvider",) and info.label == "ort:CPUExecutionProvider"
    assert Path(info.graph).name == "base.onnx"


def test_corrupt_model_weights_are_refused(tiny_model_dir, tmp_path):
    import shutil

    from gcage_fast.errors import ModelError
    from gcage_fast.models.registry import load_model

    bad = tmp_path / "m"
    shutil.copytree(tiny_model_dir, bad)
    data = bytearray((bad / "base.safetensors").read_bytes())
    data[-1] ^= 1
    (bad / "base.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match its spec: sha256"):
        load_model(bad)
