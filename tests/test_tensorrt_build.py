"""TensorRT engine building and the engine cache, against FakeTensorRT (a recording test double of the
``tensorrt`` module): no TensorRT and no GPU are needed. The real build is in the ``tensorrt``/``gpu`` tests."""

import dataclasses
import json
import os
import sys

import pytest

from fake_tensorrt import MAGIC, FakeTensorRT
from gcage_fast.errors import ConfigError, EngineError, MissingDependencyError
from gcage_fast.export import engine_cache
from gcage_fast.export.engine_cache import EngineKey, GpuIdentity, load_engine, metadata_path, read_metadata
from gcage_fast.export.tensorrt_build import build_engine, plan_precision, require_tensorrt, tensorrt_major
from gcage_fast.hashing import sha256_file
from trt_graphs import make_graph

GPU = GpuIdentity("Fake H200", "9.0")


@pytest.fixture
def base_onnx(tmp_path):
    return make_graph(tmp_path / "onnx" / "base.onnx")


def _build(onnx_path, cache, trt=None, **kw):
    kw.setdefault("min_batch", 1)
    kw.setdefault("opt_batch", 8)
    kw.setdefault("max_batch", 32)
    kw.setdefault("workspace_bytes", 1 << 28)
    return build_engine(onnx_path, cache_root=cache, trt=trt or FakeTensorRT(), gpu=kw.pop("gpu", GPU), **kw)


def _files(d):
    return sorted(p.name for p in d.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------- keys
KEY = EngineKey("a" * 64, "10.13.3.9", "Fake H200", "9.0", "fp16", "patches", (1, 3, 224, 224), (8, 3, 224, 224),
                (32, 3, 224, 224), 1 << 28)


def test_cache_key_is_stable_and_changes_with_each_field():
    same = EngineKey(**dataclasses.asdict(KEY))
    assert same.digest == KEY.digest and EngineKey.from_dict(KEY.to_dict()) == KEY
    changes = {"onnx_sha256": "b" * 64, "tensorrt_version": "11.4.0.106", "gpu_name": "NVIDIA H100 80GB HBM3",
               "compute_capability": "8.9", "precision": "fp32", "input_name": "head_input",
               "min_shape": (2, 3, 224, 224), "opt_shape": (16, 3, 224, 224), "max_shape": (64, 3, 224, 224),
               "workspace_bytes": 1 << 30, "engine_format": 99}
    assert set(changes) == set(EngineKey.__dataclass_fields__)
    digests = {KEY.digest} | {dataclasses.replace(KEY, **{k: v}).digest for k, v in changes.items()}
    assert len(digests) == len(changes) + 1


def test_build_reuses_an_engine_with_the_same_key_and_not_another(tmp_path, base_onnx):
    cache = tmp_path / "cache"
    first = _build(base_onnx, cache)
    assert first.built and first.engine_path.parent == cache / "engines"
    trt = FakeTensorRT()
    again = _build(base_onnx, cache, trt)
    assert not again.built and again.engine_path == first.engine_path and "Builder" not in trt.names()
    others = [_build(base_onnx, cache, precision="fp16"), _build(base_onnx, cache, max_batch=64),
              _build(base_onnx, cache, workspace_bytes=1 << 29), _build(base_onnx, cache, gpu=GpuIdentity("B", "10.0")),
              _build(base_onnx, cache, trt=FakeTensorRT("10.14.1")),
              _build(make_graph(tmp_path / "o2" / "base.onnx", seed=1), cache)]
    paths = {first.engine_path} | {r.engine_path for r in others}
    assert len(paths) == 7 and all(r.built for r in others)


def test_metadata_is_written_beside_the_engine(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache", precision="fp16")
    meta = read_metadata(rec.engine_path)
    assert meta == rec.metadata == json.loads(metadata_path(rec.engine_path).read_text())
    assert meta["engine_sha256"] == sha256_file(rec.engine_path)
    assert meta["engine_bytes"] == rec.engine_path.stat().st_size
    assert meta["tensorrt_version"] == "10.13.3.9" and meta["build_seconds"] >= 0 and meta["built_at"]
    assert EngineKey.from_dict(meta["key"]) == rec.key and meta["key_digest"] == rec.key.digest
    assert rec.key.onnx_sha256 == sha256_file(base_onnx)
    assert (rec.key.gpu_name, rec.key.compute_capability, rec.key.precision) == ("Fake H200", "9.0", "fp16")
    assert meta["output_names"] == ["probs", "cam"] and "BuilderFlag.FP16" in meta["precision_mode"]


def test_explicit_output_dir(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache", name="tiny-base", out_dir=tmp_path / "engines")
    assert _files(tmp_path / "engines") == ["tiny-base-fp32.engine", "tiny-base-fp32.engine.json"]
    assert not _build(base_onnx, tmp_path / "cache", name="tiny-base", out_dir=tmp_path / "engines").built
    assert rec.engine_path.read_bytes().startswith(MAGIC)


# ------------------------------------------------------------------------------------------------- build calls
def test_trt10_call_sequence_fp16_by_builder_flag(tmp_path, base_onnx):
    trt = FakeTensorRT("10.13.3.9")
    tc = tmp_path / "timing.cache"
    _build(base_onnx, tmp_path / "cache", trt, precision="fp16", timing_cache_path=tc)
    names = trt.names()
    order = ["Builder", "create_network", "OnnxParser", "parse", "create_builder_config", "set_memory_pool_limit",
             "set_flag", "create_optimization_profile", "set_shape", "add_optimization_profile",
             "create_timing_cache", "set_timing_cache", "build_serialized_network", "get_timing_cache"]
    assert [n for n in names if n in order] == order
    assert trt.find("create_network") == [("create_network", 0)]  # weakly typed: precision from the flag
    assert trt.find("set_flag") == [("set_flag", "FP16")]
    assert trt.find("set_memory_pool_limit") == [("set_memory_pool_limit", "WORKSPACE", 1 << 28)]
    assert trt.find("set_shape") == [("set_shape", "patches", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))]
    assert trt.find("create_timing_cache") == [("create_timing_cache", b"")]  # no file yet
    assert tc.read_bytes() == b"+tuned"  # saved back after the build


def test_trt11_strongly_typed_no_precision_flags_timing_cache_reloaded(tmp_path):
    onnx16 = make_graph(tmp_path / "base16.onnx", precision="fp16")
    tc = tmp_path / "timing.cache"
    tc.write_bytes(b"earlier")
    trt = FakeTensorRT("11.4.0.106")
    rec = _build(onnx16, tmp_path / "cache", trt, precision="fp16", timing_cache_path=tc)
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.find("create_network") == [("create_network", strongly)]
    assert trt.find("set_flag") == []  # 11.x has no FP16/INT8 builder flags
    assert trt.find("create_timing_cache") == [("create_timing_cache", b"earlier")]
    assert tc.read_bytes() == b"earlier+tuned"
    assert rec.metadata["precision_mode"].startswith("strongly typed")


def test_trt10_graph_that_states_its_precision_is_strongly_typed(tmp_path):
    trt = FakeTensorRT("10.13.3.9")
    _build(make_graph(tmp_path / "q.onnx", precision="int8"), tmp_path / "cache", trt, precision="int8")
    strongly = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.find("create_network") == [("create_network", strongly)]
    assert trt.find("set_flag") == []


def test_asymmetric_uint8_quantization_is_refused_before_tensorrt_sees_it(tmp_path):
    trt = FakeTensorRT("11.4.0.106")
    with pytest.raises(EngineError, match=r"2 of 2 QuantizeLinear/DequantizeLinear nodes use unsigned \(uint8\) "
                                          r"zero points; TensorRT supports only symmetric int8"):
        _build(make_graph(tmp_path / "u8.onnx", precision="uint8"), tmp_path / "cache", trt, precision="int8")
    assert "Builder" not in trt.names()


def test_head_graph_profile_reads_channels_from_onnx(tmp_path):
    trt = FakeTensorRT()
    _build(make_graph(tmp_path / "head.onnx", kind="head"), tmp_path / "cache", trt, min_batch=2, opt_batch=4,
           max_batch=4)
    assert trt.find("set_shape") == [("set_shape", "head_input", (2, 4, 224, 224), (4, 4, 224, 224),
                                      (4, 4, 224, 224))]


@pytest.mark.parametrize("major,requested,graph,ok", [
    (10, "fp32", "fp32", True), (10, "fp16", "fp32", True), (10, "int8", "fp32", False),
    (10, "fp16", "fp16", True), (10, "int8", "int8", True), (10, "fp32", "fp16", False),
    (11, "fp32", "fp32", True), (11, "fp16", "fp32", False), (11, "int8", "fp32", False),
    (11, "fp16", "fp16", True), (11, "int8", "int8", True), (11, "fp16", "int8", False),
])
def test_precision_plan(major, requested, graph, ok):
    if ok:
        plan = plan_precision(major, requested, graph)
        assert plan.strongly_typed == (requested == graph)
        assert plan.builder_flags == (() if requested == graph else ("FP16",))
    else:
        with pytest.raises(EngineError, match="requested"):
            plan_precision(major, requested, graph)


def test_trt11_refuses_fp16_label_on_an_fp32_graph(tmp_path, base_onnx):
    trt = FakeTensorRT("11.4.0.106")
    with pytest.raises(EngineError, match="TensorRT 11 takes the precision from the graph"):
        _build(base_onnx, tmp_path / "cache", trt, precision="fp16")
    assert "Builder" not in trt.names()


def test_parse_errors_are_reported_with_their_messages(tmp_path, base_onnx):
    trt = FakeTensorRT(parse_errors=("In node 3 (importFoo): UNSUPPORTED_NODE: Foo", "second problem"))
    with pytest.raises(EngineError, match=r"cannot parse base.onnx: In node 3 \(importFoo\): UNSUPPORTED_NODE: "
                                          r"Foo; second problem"):
        _build(base_onnx, tmp_path / "cache", trt)
    assert "build_serialized_network" not in trt.names()


def test_null_build_is_a_clear_error_and_leaves_no_files(tmp_path, base_onnx):
    trt = FakeTensorRT(build_result=None)
    with pytest.raises(EngineError, match=r"could not build an engine from base.onnx \(fake: out of workspace"):
        _build(base_onnx, tmp_path / "cache", trt, timing_cache_path=tmp_path / "tc")
    assert _files(tmp_path / "cache") == [] and not (tmp_path / "tc").exists()


def test_builder_exception_leaves_no_partial_files(tmp_path, base_onnx):
    trt = FakeTensorRT(build_result=RuntimeError("CUDA error 2: out of memory"))
    with pytest.raises(RuntimeError):
        _build(base_onnx, tmp_path / "cache", trt, out_dir=tmp_path / "out")
    assert _files(tmp_path / "cache") == [] and _files(tmp_path / "out") == []


def test_failed_write_removes_temporary_files(tmp_path, monkeypatch, base_onnx):
    real = os.replace

    def flaky(src, dst):
        if str(dst).endswith(".engine.json"):  # the metadata rename, after the engine's
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(engine_cache.os, "replace", flaky)
    with pytest.raises(OSError):
        _build(base_onnx, tmp_path / "cache", out_dir=tmp_path / "out", timing_cache_path=tmp_path / "tc")
    assert not any(".tmp-" in n for n in _files(tmp_path / "out"))
    assert _files(tmp_path / "out") == ["base-fp32.engine"]  # without metadata: never loaded, rebuilt next time
    monkeypatch.setattr(engine_cache.os, "replace", real)
    assert _build(base_onnx, tmp_path / "cache", out_dir=tmp_path / "out").built


def test_batch_and_precision_validation(tmp_path, base_onnx):
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        _build(base_onnx, tmp_path, opt_batch=64, max_batch=32)
    with pytest.raises(ConfigError, match="unknown precision"):
        _build(base_onnx, tmp_path, precision="fp8")


def test_version_detection():
    assert tensorrt_major(FakeTensorRT("10.0.1")) == 10 and tensorrt_major(FakeTensorRT("11.5.0")) == 11
    with pytest.raises(EngineError, match="too old"):
        tensorrt_major(FakeTensorRT("8.6.1"))


def test_missing_tensorrt_names_nvidia_index(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"pypi\.nvidia\.com") as info:
        require_tensorrt()
    assert "pip install 'gcage-fast[tensorrt]'" in str(info.value)


# ------------------------------------------------------------------------------------------------- loading
class Deserializer:
    """Counts deserialize calls; returns None for the first ``nulls`` calls, then a token."""

    def __init__(self, nulls=0):
        self.calls, self.nulls = 0, nulls

    def __call__(self, data):
        self.calls += 1
        return None if self.calls <= self.nulls else ("engine", data)


def test_sha256_mismatch_rebuilds_once_then_loads(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache")
    rec.engine_path.write_bytes(b"tampered")
    rebuilds = []

    def rebuild():
        rebuilds.append(1)
        _build(base_onnx, tmp_path / "cache", force=True)

    engine, meta = load_engine(rec.engine_path, Deserializer(), rec.key, rebuild)
    assert rebuilds == [1] and engine[1].startswith(MAGIC) and meta["engine_sha256"] == sha256_file(rec.engine_path)


def test_sha256_mismatch_after_rebuild_fails_clearly(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache")
    rec.engine_path.write_bytes(b"tampered")
    rebuilds = []
    with pytest.raises(EngineError, match=r"does not match the sha256 in its metadata.*rebuilt once"):
        load_engine(rec.engine_path, Deserializer(), rec.key, lambda: rebuilds.append(1))
    assert rebuilds == [1]


def test_null_deserialisation_rebuilds_once_then_fails(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache")
    de, rebuilds = Deserializer(nulls=99), []
    with pytest.raises(EngineError, match=r"could not deserialize .*TensorRT 10\.13\.3\.9 on Fake H200.*rebuilt once"):
        load_engine(rec.engine_path, de, rec.key, lambda: rebuilds.append(_build(base_onnx, tmp_path / "cache",
                                                                                 force=True)))
    assert len(rebuilds) == 1 and de.calls == 2


def test_null_deserialisation_recovers_after_one_rebuild(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache")
    engine, _ = load_engine(rec.engine_path, Deserializer(nulls=1), rec.key, lambda: None)
    assert engine is not None


def test_user_named_engine_without_rebuild_fails_at_once(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache", out_dir=tmp_path / "out")
    de = Deserializer(nulls=99)
    with pytest.raises(EngineError, match="rebuild it with `gcage-fast build-engine`"):
        load_engine(rec.engine_path, de)
    assert de.calls == 1


def test_engine_without_metadata_is_never_deserialised(tmp_path):
    stray = tmp_path / "model.engine"
    stray.write_bytes(MAGIC + b"{}")
    de = Deserializer()
    with pytest.raises(EngineError, match="has no metadata file model.engine.json"):
        load_engine(stray, de)
    assert de.calls == 0


def test_engine_for_another_gpu_or_version_is_refused(tmp_path, base_onnx):
    rec = _build(base_onnx, tmp_path / "cache", out_dir=tmp_path / "out")
    here = dataclasses.replace(rec.key, tensorrt_version="11.4.0.106", compute_capability="10.0")
    with pytest.raises(EngineError, match=r"built for other settings: tensorrt_version '10\.13\.3\.9' "
                                          r"\(here '11\.4\.0\.106'\); compute_capability '9\.0' \(here '10\.0'\)"):
        load_engine(rec.engine_path, Deserializer(), here)


def test_engine_cache_dir_must_be_private(tmp_path, base_onnx):
    cache = tmp_path / "cache"
    (cache / "engines").mkdir(parents=True)
    (cache / "engines").chmod(0o777)
    with pytest.raises(EngineError, match="writable by others"):
        _build(base_onnx, cache)
    (cache / "engines").chmod(0o700)
    assert _build(base_onnx, cache).built
