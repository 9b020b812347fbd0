"""Reduced-precision graphs (fp16, int8 Q/DQ), torch autocast, backend/precision selection and the scan with them.

Bounds: fp16 P(fake) within 2e-3 of the float32 graph; int8 within a mean |dP| of 0.05 on the calibration
patches (export/to_onnx.py REDUCED_TOL says what was measured on the bundled model and why the mean).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from genimages import save_image
from helpers import read_rows, run_cli

from gcage_fast.config import ScanConfig
from gcage_fast.errors import ConfigError, ExportError
from gcage_fast.export.cache import cache_key, cached_export
from gcage_fast.export.precision import calibration_fingerprint, float_convs, load_calibration
from gcage_fast.export.to_onnx import REDUCED_TOL, ExportOptions, export_model, read_export
from gcage_fast.models.registry import load_model
from gcage_fast.scanning.local import scan


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("calib")
    for i, (w, h) in enumerate([(300, 260), (480, 320), (230, 230), (700, 500)]):
        save_image(d / f"img{i}.jpg", w, h, seed=100 + i)
    (d / "notes.md").write_text("not an image: skipped by extension")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return d


@pytest.fixture(scope="module")
def exports(tiny_model_dir, calib_dir, tmp_path_factory):
    model = load_model(tiny_model_dir)
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        d = tmp_path_factory.mktemp(precision)
        opts = ExportOptions.for_model(model, precision=precision,
                                       calibration=str(calib_dir) if precision == "int8" else None)
        out[precision] = (export_model(model, d, opts), d)
    return model, out


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _elem_types(model_proto):
    inferred = onnx.shape_inference.infer_shapes(model_proto)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.input})
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.output})
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return inferred, types


def test_fp16_graphs_are_valid_mixed_and_within_bounds(exports, calib_dir):
    model, out = exports
    report, d = out["fp16"]
    for name in ("base.onnx", "head.onnx"):
        proto = onnx.load(str(d / name))
        onnx.checker.check_model(proto)
        inferred, types = _elem_types(proto)
        # float32 in and out: every runner feeds the same arrays
        assert all(vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for vi in proto.graph.input)
        assert all(vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for vi in proto.graph.output)
        convs = [n for n in inferred.graph.node if n.op_type == "Conv"]
        assert convs and all(types[n.input[1]] == onnx.TensorProto.FLOAT16 for n in convs)  # fp16 convolutions
        for node in inferred.graph.node:
            if node.op_type in ("Softmax", "Sigmoid", "Einsum"):  # probabilities and the CAM stay float32
                assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.op_type
    parity = json.loads((d / "parity.json").read_text())
    assert parity["passed"] and parity["precision"] == "fp16"
    assert parity["graphs"]["head.onnx"]["p_fake"]["max_abs_diff"] <= 2e-3
    assert parity["graphs"]["base.onnx"]["probs"]["max_abs_diff"] <= REDUCED_TOL["fp16"]["probs"]

    # fresh inputs, real patches included: fp16 head P(fake) within 2e-3 of the float32 graph
    fp32_dir = out["fp32"][1]
    patches = load_calibration(calib_dir, 3).patches
    rng = np.random.default_rng(7)
    noise = rng.random((5, 3, 224, 224), dtype=np.float32)
    for x in (patches, noise):
        b32 = _session(fp32_dir / "base.onnx").run(None, {"patches": x})
        b16 = _session(d / "base.onnx").run(None, {"patches": x})
        assert np.abs(b16[0] - b32[0]).max() <= REDUCED_TOL["fp16"]["probs"]
        from gcage_fast.kernels.cpu import fuse_cam_from_patches as fuse_cam_from_patches_fast

        fused = fuse_cam_from_patches_fast(x, b32[1])
        h32 = _session(fp32_dir / "head.onnx").run(None, {"head_input": fused})[0]
        h16 = _session(d / "head.onnx").run(None, {"head_input": fused})[0]
        assert np.abs(h16 - h32).max() <= 2e-3


def test_int8_graph_is_qdq_with_float_first_and_depthwise_convs(exports, calib_dir):
    model, out = exports
    report, d = out["int8"]
    for name in ("base.onnx", "head.onnx"):
        proto = onnx.load(str(d / name))
        onnx.checker.check_model(proto)
        ops = [n.op_type for n in proto.graph.node]
        assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
        produced_by = {o: n for n in proto.graph.node for o in n.output}
        convs = [n for n in proto.graph.node if n.op_type == "Conv"]
        first = convs[0]
        src = produced_by.get(first.input[0])
        assert src is None or src.op_type != "DequantizeLinear"  # the pixel-reading convolution stays float32
        quantized = [n for n in convs[1:] if produced_by.get(n.input[1]) is not None
                     and produced_by[n.input[1]].op_type == "DequantizeLinear"]
        assert quantized, "no convolution was quantised"
    meta = read_export(d)
    assert meta["precision"] == "int8"
    cal = meta["calibration"]
    assert cal["images"] == 4 and cal["files"] == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]  # broken skipped
    assert cal["fingerprint"] == calibration_fingerprint(calib_dir)
    parity = json.loads((d / "parity.json").read_text())
    assert parity["passed"] and parity["graphs"]["base.onnx"]["probs"]["bounded"] == "mean_abs_diff"
    # fresh real patches: the int8 P(fake) stays within the stated mean bound of the float32 graph
    x = load_calibration(calib_dir, 5).patches
    p32 = _session(out["fp32"][1] / "base.onnx").run(["probs"], {"patches": x})[0]
    p8 = _session(d / "base.onnx").run(["probs"], {"patches": x})[0]
    assert np.abs(p8 - p32).mean() <= REDUCED_TOL["int8"]["probs"]


def test_float_convs_keeps_first_and_grouped(tmp_path):
    from onnx import TensorProto, helper

    w = [helper.make_tensor(f"w{i}", TensorProto.FLOAT, dims, np.zeros(int(np.prod(dims))).tolist())
         for i, dims in enumerate([(4, 3, 3, 3), (4, 1, 3, 3), (8, 4, 1, 1)])]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], name="stem"),
             helper.make_node("Conv", ["a", "w1"], ["b"], name="dw", group=4),
             helper.make_node("Conv", ["b", "w2"], ["y"], name="pw")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=w)
    onnx.save(helper.make_model(g), str(tmp_path / "g.onnx"))
    assert float_convs(tmp_path / "g.onnx") == ["stem", "dw"]


def test_int8_for_tensorrt_is_symmetric(tiny_model_dir, calib_dir, tmp_path):
    from gcage_fast.export.tensorrt_build import inspect_onnx

    model = load_model(tiny_model_dir)
    opts = ExportOptions.for_model(model, precision="int8", calibration=str(calib_dir), int8_target="tensorrt")
    export_model(model, tmp_path / "trt", opts)
    proto = onnx.load(str(tmp_path / "trt" / "base.onnx"))
    zero_points = {n.input[2] for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   if len(n.input) > 2}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert zero_points and all(inits[z].dtype == np.int8 and not inits[z].any() for z in zero_points)
    assert inspect_onnx((tmp_path / "trt" / "base.onnx").read_bytes()).qdq_problem is None


def test_cache_key_follows_precision_and_calibration_content(tiny_model_dir, calib_dir, tmp_path):
    model = load_model(tiny_model_dir)
    keys = {p: cache_key(model, ExportOptions.for_model(model, precision=p)) for p in ("fp32", "fp16", "int8")}
    assert len(set(keys.values())) == 3
    copy = tmp_path / "elsewhere"
    shutil.copytree(calib_dir, copy)
    k1 = cache_key(model, ExportOptions.for_model(model, precision="int8", calibration=str(calib_dir)))
    assert k1 == cache_key(model, ExportOptions.for_model(model, precision="int8", calibration=str(copy)))
    save_image(copy / "img0.jpg", 300, 260, seed=999)  # same name, other content
    assert k1 != cache_key(model, ExportOptions.for_model(model, precision="int8", calibration=str(copy)))
    target = ExportOptions.for_model(model, precision="int8", calibration=str(calib_dir), int8_target="tensorrt")
    assert cache_key(model, target) != k1


def test_export_option_errors(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    with pytest.raises(ConfigError, match="unknown precision 'fp8'; choose fp32, fp16, int8"):
        ExportOptions.for_model(model, precision="fp8")
    with pytest.raises(ConfigError, match="calibration directory .* does not exist"):
        cached_export(model, ExportOptions.for_model(model, precision="int8", calibration=str(tmp_path / "none")),
                      cache_root=tmp_path / "cache")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConfigError, match="no decodable image in calibration directory"):
        export_model(model, tmp_path / "x", ExportOptions.for_model(model, precision="int8", calibration=str(empty)))


def test_int8_parity_failure_refuses_to_publish(tiny_model_dir, calib_dir, tmp_path, monkeypatch):
    from gcage_fast.export import to_onnx

    model = load_model(tiny_model_dir)
    monkeypatch.setitem(to_onnx.REDUCED_TOL, "int8", {k: 0.0 for k in to_onnx.REDUCED_TOL["int8"]})
    with pytest.raises(ExportError, match="int8 graphs does not match torch: base.onnx:probs mean_abs_diff"):
        export_model(model, tmp_path / "x", ExportOptions.for_model(model, precision="int8",
                                                                     calibration=str(calib_dir)))
    assert not (tmp_path / "x" / "base.onnx").exists()


# ----------------------------------------------------------------------------------------------- runners

def test_torch_autocast_runner(tiny_model_dir):
    from gcage_fast.engine.factory import create_runners

    model = load_model(tiny_model_dir)
    x = np.random.default_rng(3).random((3, 3, 224, 224), dtype=np.float32)
    opts = ExportOptions.for_model(model)
    with create_runners(model, opts, "torch", "cpu", threads=2).base as r32:
        ref = r32.infer({"patches": x})
    pair = create_runners(model, opts, "torch", "cpu", threads=2, precision="bf16")
    with pair.base as r16:
        got = r16.infer({"patches": x})
        assert r16.info.label == "torch:cpu:bf16"
        t = r16.infer_torch({"patches": torch.from_numpy(x)})
    assert got["probs"].dtype == np.float32 and t["probs"].dtype == torch.float32
    assert np.abs(got["probs"] - ref["probs"]).max() < 0.05  # bf16 keeps 8 bits of mantissa
    with pytest.raises(ConfigError, match="fp16 on the torch backend needs --device cuda"):
        create_runners(model, opts, "torch", "cpu", precision="fp16")


@pytest.mark.parametrize("backend,precision,message", [
    ("torch", "int8", "--backend torch runs --precision fp32, fp16, bf16, not int8 (int8 runs on --backend ort or "
                      "tensorrt)"),
    ("ort", "bf16", "--backend ort runs --precision fp32, fp16, int8, not bf16 (bf16 runs on --backend torch)"),
])
def test_backend_precision_combinations(backend, precision, message):
    from gcage_fast.engine.factory import graph_precision

    with pytest.raises(ConfigError) as err:
        graph_precision(backend, precision)
    assert str(err.value) == message


def test_auto_backend_on_cpu_and_cuda(monkeypatch):
    from gcage_fast.engine import factory

    assert factory.resolve_backend("auto", "cpu") == "ort"
    monkeypatch.setattr(factory, "available", lambda m: m != "tensorrt")
    monkeypatch.setattr(factory, "_ort_has_cuda", lambda: False)
    assert factory.resolve_backend("auto", "cuda") == "torch"
    monkeypatch.setattr(factory, "_ort_has_cuda", lambda: True)
    assert factory.resolve_backend("auto", "cuda") == "ort"
    monkeypatch.setattr(factory, "available", lambda m: True)
    assert factory.resolve_backend("auto", "cuda") == "tensorrt"


def test_ort_gpu_provider_options():
    from gcage_fast.engine.ort_runner import GpuOptions, provider_options, providers_for

    assert providers_for("cpu") == ("CPUExecutionProvider",)
    gpu = GpuOptions(tensorrt_ep=True, gpu_mem_limit=2 << 30, cache_dir="/c", min_batch=1, opt_batch=64,
                     max_batch=128)
    assert providers_for("cuda", gpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                          "CPUExecutionProvider")
    trt, cuda, cpu = provider_options("cuda", "patches", (1, 3, 224, 224), gpu)
    assert trt["trt_profile_opt_shapes"] == "patches:64x3x224x224"
    assert trt["trt_profile_max_shapes"] == "patches:128x3x224x224"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == "/c"
    assert trt["trt_fp16_enable"] == "False"  # the fp16 graph carries its own casts
    assert cuda["gpu_mem_limit"] == str(2 << 30) and cpu == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the refusal cannot be observed")
def test_device_cuda_without_gpu_is_an_error(tiny_model_dir, tmp_path):
    img = save_image(tmp_path / "in" / "a.jpg", 300, 300, seed=1)
    res = run_cli("scan", img.parent, "-o", tmp_path / "out", "--model", tiny_model_dir, "--device", "cuda",
                  check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "Error: --device cuda was requested but no CUDA GPU is visible (torch.cuda.is_available() is False: no GPU, "
        "no driver, or a CPU build of torch); use --device cpu")
    assert "Traceback" not in res.stderr and not (tmp_path / "out" / "results").exists()


# ----------------------------------------------------------------------------------------------- scans

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for i, (w, h) in enumerate([(300, 300), (500, 460), (229, 700)]):
        save_image(d / f"p{i}.jpg", w, h, seed=20 + i)
    return d


def _scan(images, out, model, **kw):
    scan(ScanConfig(inputs=(str(images),), output=str(out), model=str(model), workers=0, threads=2, **kw))
    return {r["path"]: r for r in read_rows(out)}


def test_scan_precisions_record_what_ran(images, tiny_model_dir, calib_dir, tmp_path):
    ref = _scan(images, tmp_path / "fp32", tiny_model_dir)
    assert {r["backend"] for r in ref.values()} == {"ort:CPUExecutionProvider"}
    fp16 = _scan(images, tmp_path / "fp16", tiny_model_dir, precision="fp16")
    int8 = _scan(images, tmp_path / "int8", tiny_model_dir, precision="int8", calibration=str(calib_dir))
    bf16 = _scan(images, tmp_path / "bf16", tiny_model_dir, backend="torch", precision="bf16")
    assert {r["backend"] for r in fp16.values()} == {"ort:CPUExecutionProvider:fp16"}
    assert {r["backend"] for r in int8.values()} == {"ort:CPUExecutionProvider:int8"}
    assert {r["backend"] for r in bf16.values()} == {"torch:cpu:bf16"}
    for path, row in ref.items():
        assert row["status"] == "ok"
        assert abs(fp16[path]["p_fake"] - row["p_fake"]) < 2e-3
        assert abs(int8[path]["p_fake"] - row["p_fake"]) < 0.1
        assert abs(bf16[path]["p_fake"] - row["p_fake"]) < 0.1
    run = json.loads((tmp_path / "int8" / "run.json").read_text())
    assert run["config"]["precision"] == "int8" and run["fingerprint"]["precision"] == "int8"
    assert run["engine"]["base"]["precision"] == "int8"


def test_scan_config_rejects_bad_precision_options():
    with pytest.raises(ConfigError, match="--calibration only applies to --precision int8"):
        ScanConfig(inputs=("x",), output="o", calibration="c").validate()
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        ScanConfig(inputs=("x",), output="o", precision="fp8").validate()
    with pytest.raises(ConfigError, match="--backend tensorrt runs on --device cuda only"):
        ScanConfig(inputs=("x",), output="o", backend="tensorrt").validate()


def test_scan_on_cuda_puts_onnx_runtime_tensorrt_provider_first_when_present(tiny_model_dir, monkeypatch):
    import onnxruntime

    from gcage_fast import env
    from gcage_fast.engine.factory import create_runners, ort_gpu_options

    assert ort_gpu_options("cpu", 32) is None
    model = load_model(tiny_model_dir)
    opts = ExportOptions.for_model(model)
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    gpu = ort_gpu_options("cuda", 48)
    assert not gpu.tensorrt_ep and gpu.cache_dir is None and gpu.opt_batch == 48
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    pair = create_runners(model, opts, "ort", "cuda", batch_size=64)  # built, not opened: no GPU needed
    assert pair.base.info.providers_requested == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                  "CPUExecutionProvider")
    assert pair.head.gpu.opt_batch == 64 and pair.head.gpu.max_batch == 256
    assert pair.base.gpu.cache_dir == str(env.cache_dir() / "ort-tensorrt")
