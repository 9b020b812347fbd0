"""A5: `gcage-fast export` writes both graphs with the CAM inside; ORT matches torch (<= 1e-4) at batch 1, 7, 64."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gcage_fast.errors import ExportError
from gcage_fast.export import cache as export_cache
from gcage_fast.export.graphs import base_graph, head_graph
from gcage_fast.export.to_onnx import ExportOptions, export_model
from gcage_fast.models.registry import init_model, load_model
from helpers import run_cli


def _session(path):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _check_dynamic_batch(model, out_dir, cam, target, layer, with_acts):
    base = base_graph(model, cam, target, layer, with_acts)
    head = head_graph(model)
    sb, sh = _session(out_dir / "base.onnx"), _session(out_dir / "head.onnx")
    assert [i.name for i in sb.get_inputs()] == ["patches"]
    names = ["probs", "cam"] + (["activations", "cam_weights"] if with_acts else [])
    assert [o.name for o in sb.get_outputs()] == names
    assert sb.get_inputs()[0].shape[0] == "batch" and sh.get_inputs()[0].shape[0] == "batch"
    gen = torch.Generator().manual_seed(7)
    for n in (1, 7, 64):
        x = torch.rand(n, 3, 224, 224, generator=gen)
        with torch.no_grad():
            ref = base(x)
        got = sb.run(None, {"patches": x.numpy()})
        for name, g, r in zip(names, got, ref):
            assert g.shape == tuple(r.shape)
            assert np.abs(g - r.numpy()).max() <= 1e-4 * max(1.0, float(r.abs().max())), (n, name)
        h = torch.rand(n, 4, 224, 224, generator=gen)
        with torch.no_grad():
            ref_p = head(h).numpy()
        (p,) = sh.run(None, {"head_input": h.numpy()})
        assert p.shape == (n,) and np.abs(p - ref_p).max() <= 1e-4


def test_export_cli_tiny_model(tiny6_model_dir, tmp_path):
    out = tmp_path / "onnx"
    run_cli("export", "--model", tiny6_model_dir, "-o", out, "--cam", "gradcam++", "--cam-target", "pred",
            "--with-activations")
    for f in ("base.onnx", "head.onnx", "parity.json", "export.json"):
        assert (out / f).is_file(), f
    onnx.checker.check_model(str(out / "base.onnx"))
    parity = json.loads((out / "parity.json").read_text())
    assert parity["passed"] is True
    outputs = {**parity["graphs"]["base.onnx"], **parity["graphs"]["head.onnx"]}
    assert set(outputs) == {"probs", "cam", "activations", "cam_weights", "p_fake"}
    for name in ("probs", "cam", "p_fake"):
        assert outputs[name]["max_abs_diff"] <= 1e-4
    meta = json.loads((out / "export.json").read_text())
    assert meta["options"]["cam_method"] == "gradcam++" and meta["options"]["cam_target"] == "pred"
    _check_dynamic_batch(load_model(tiny6_model_dir), out, "gradcam++", "pred", "layer4", True)


def test_export_full_size_susy(tmp_path):
    model_dir = tmp_path / "full"
    init_model(model_dir, seed=1, width=64, name="full")
    out = tmp_path / "onnx"
    res = run_cli("export", "--model", model_dir, "-o", out)
    assert "ORT vs float32 torch: max abs diff" in res.stdout
    parity = json.loads((out / "parity.json").read_text())
    for graph in parity["graphs"].values():
        for entry in graph.values():
            assert entry["max_abs_diff"] <= 1e-4
    _check_dynamic_batch(load_model(model_dir), out, "gradcam", "fake", "layer4", False)


def test_export_fails_loudly_on_parity(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    with pytest.raises(ExportError, match="ONNX Runtime output of the fp32 graphs does not match torch"):
        export_model(model, tmp_path / "x", ExportOptions.for_model(model), tol=0.0)
    assert not (tmp_path / "x" / "base.onnx").exists()
    assert json.loads((tmp_path / "x" / "parity.json").read_text())["passed"] is False


def test_export_cache_reuses_and_repairs(tiny_model_dir, tmp_path, monkeypatch):
    model = load_model(tiny_model_dir)
    options = ExportOptions.for_model(model)
    calls = []
    real = export_cache.export_model

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(export_cache, "export_model", counting)
    first = export_cache.cached_export(model, options, cache_root=tmp_path)
    second = export_cache.cached_export(model, options, cache_root=tmp_path)
    assert first == second and len(calls) == 1
    assert first.parent == tmp_path / "onnx" and first.name.startswith("tiny-")
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]
    (first / "base.onnx").write_bytes(b"corrupted")
    third = export_cache.cached_export(model, options, cache_root=tmp_path)
    assert third == first and len(calls) == 2
    other = export_cache.cached_export(model, ExportOptions.for_model(model, "layercam"), cache_root=tmp_path)
    assert other != first and len(calls) == 3
