"""The TensorRT runner against FakeTensorRT (run on the CPU: the fake's "device" buffers are CPU tensors), and
the same runner against real TensorRT on a GPU when both are present (marked ``tensorrt`` and ``gpu``)."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fake_tensorrt import FakeTensorRT
from gcage_fast.engine.base import Runner
from gcage_fast.engine.trt_runner import TrtRunner
from gcage_fast.errors import EngineError, MissingDependencyError
from gcage_fast.export.engine_cache import GpuIdentity
from gcage_fast.optional import available
from trt_graphs import make_graph

GPU = GpuIdentity("Fake H200", "9.0")
STREAM = 0x5EED
BUILD = dict(min_batch=1, opt_batch=4, max_batch=8, workspace_bytes=1 << 28, gpu=GPU)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch reports one CUDA device and a current stream with a recognisable handle."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: SimpleNamespace(cuda_stream=STREAM))


def _runner(tmp_path, trt, **kw):
    onnx_path = make_graph(tmp_path / "onnx" / "base.onnx")
    return TrtRunner.from_onnx(onnx_path, "patches", ("probs", "cam"), trt=trt, cache_root=tmp_path / "cache",
                               **BUILD, **kw)


def _open_on_cpu(runner):
    """Open the runner, then point it at the CPU, where the fake context reads and writes its buffers."""
    runner.__enter__()
    runner._device = torch.device("cpu")
    return runner


def test_runner_protocol_and_info(tmp_path):
    r = TrtRunner(tmp_path / "x.engine", "patches", ("probs", "cam"))
    assert isinstance(r, Runner) and r.accepts_torch
    assert r.info.backend == "tensorrt" and r.info.label == "tensorrt:cuda"


def test_without_tensorrt_the_runner_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"pypi\.nvidia\.com"):
        TrtRunner(tmp_path / "x.engine", "patches", ("probs", "cam")).__enter__()


def test_without_cuda_the_runner_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="needs a CUDA GPU and torch sees none"):
        TrtRunner(tmp_path / "x.engine", "patches", ("probs", "cam"), trt=FakeTensorRT()).__enter__()


def test_infer_binds_every_tensor_by_name_on_the_current_stream(tmp_path, fake_cuda):
    trt = FakeTensorRT()
    runner = _open_on_cpu(_runner(tmp_path, trt))
    x = torch.rand(3, 3, 224, 224)
    del trt.calls[:]
    out = runner.infer_torch({"patches": x})
    assert trt.calls == [("set_input_shape", "patches", (3, 3, 224, 224)), ("set_tensor_address", "patches"),
                         ("set_tensor_address", "probs"), ("set_tensor_address", "cam"),
                         ("execute_async_v3", STREAM)]
    means = x.reshape(3, -1).mean(dim=1)
    assert list(out) == ["probs", "cam"] and out["probs"].shape == (3, 2) and out["cam"].shape == (3, 7, 7)
    torch.testing.assert_close(out["probs"][:, 0], means)
    torch.testing.assert_close(out["cam"][:, 3, 3], means + 1)
    np_out = runner.infer({"patches": x.numpy()})
    assert np_out["probs"].dtype == np.float32 and np.allclose(np_out["cam"], out["cam"].numpy())
    runner.__exit__(None, None, None)
    with pytest.raises(EngineError, match="outside its `with` block"):
        runner.infer({"patches": x.numpy()})


def test_batch_outside_the_profile_is_refused(tmp_path, fake_cuda):
    runner = _open_on_cpu(_runner(tmp_path, FakeTensorRT()))
    with pytest.raises(EngineError, match=r"batch of 9 is outside the engine's profile 1\.\.8"):
        runner.infer_torch({"patches": torch.rand(9, 3, 224, 224)})


def test_tensors_on_another_device_are_refused(tmp_path, fake_cuda):
    runner = _runner(tmp_path, FakeTensorRT()).__enter__()  # expects cuda:0
    with pytest.raises(EngineError, match="needs tensors on cuda:0, got cpu"):
        runner.infer_torch({"patches": torch.rand(1, 3, 224, 224)})


def test_wrong_names_are_refused(tmp_path, fake_cuda):
    runner = _runner(tmp_path, FakeTensorRT())
    runner.output_names = ("probs", "activations")
    with pytest.raises(EngineError, match=r"lacks outputs \['activations'\]"):
        runner.__enter__()
    assert runner._context is None and runner._engine is None  # a failed open releases what it took


def test_tampered_cached_engine_is_rebuilt_once(tmp_path, fake_cuda):
    trt = FakeTensorRT()
    runner = _runner(tmp_path, trt)
    runner.engine_path.write_bytes(b"not the engine that was built")
    del trt.calls[:]
    _open_on_cpu(runner)
    assert trt.names().count("build_serialized_network") == 1
    assert trt.names().count("deserialize_cuda_engine") == 1  # the tampered bytes never reached TensorRT
    assert runner.infer({"patches": np.zeros((1, 3, 224, 224), np.float32)})["probs"].shape == (1, 2)


def test_engine_that_does_not_deserialise_is_rebuilt_once_then_fails(tmp_path, fake_cuda):
    trt = FakeTensorRT(deserialize_none=True)
    runner = _runner(tmp_path, trt)
    del trt.calls[:]
    with pytest.raises(EngineError, match="could not deserialize.*rebuilt once and still failed"):
        runner.__enter__()
    assert trt.names().count("build_serialized_network") == 1
    assert trt.names().count("deserialize_cuda_engine") == 2


# ------------------------------------------------------------------------------------------------- real TensorRT
@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not available("tensorrt"), reason="TensorRT is not installed")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_engine_matches_onnx_runtime(tmp_path, tiny_model_dir):
    import onnxruntime as ort

    from gcage_fast.export.cache import cached_export
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    model = load_model(tiny_model_dir)
    entry = cached_export(model, ExportOptions.for_model(model))
    runner = TrtRunner.from_onnx(entry / "base.onnx", "patches", ("probs", "cam"), cache_root=tmp_path,
                                 min_batch=1, opt_batch=4, max_batch=8, workspace_bytes=1 << 30)
    x = np.random.default_rng(0).random((5, 3, 224, 224), dtype=np.float32)
    sess = ort.InferenceSession(str(entry / "base.onnx"), providers=["CPUExecutionProvider"])
    ref = dict(zip(("probs", "cam"), sess.run(["probs", "cam"], {"patches": x})))
    with runner:
        got = runner.infer({"patches": x})
        dev = runner.infer_torch({"patches": torch.from_numpy(x).cuda()})
    assert dev["probs"].is_cuda
    for name in ("probs", "cam"):
        np.testing.assert_allclose(got[name], ref[name], atol=1e-3, rtol=1e-3)
