"""Build a TensorRT engine from an exported ONNX graph (TensorRT 10.x and 11.x Python API).

The documented build path: ``Builder`` -> ``create_network`` -> ``OnnxParser.parse`` (every parser error is
reported) -> ``create_builder_config`` with the workspace pool limit, one optimisation profile (min / opt / max
batch on the graph's input, by name; the other dimensions are read from the ONNX input, e.g. (B, 3, 224, 224)),
and the timing cache, which is loaded from its file before the build and saved back after it ->
``build_serialized_network``. Only explicit-batch, name-based I/O is used (implicit batch and the binding API
were removed in TensorRT 10.0).

Precision. On TensorRT 11 networks are strongly typed and the FP16/INT8 builder flags are gone, so the
precision is whatever the ONNX graph states: a graph with float16 tensors builds an fp16 engine, a graph with
QuantizeLinear/DequantizeLinear nodes an int8 one. The requested precision must match the graph, otherwise the
build is refused (a label "fp16" on an fp32 graph would silently give an fp32 engine on 11). On TensorRT 10 a
graph that states its precision is built the same way (strongly typed); an fp32 graph asked for fp16 is built
weakly typed with ``BuilderFlag.FP16`` (deprecated since 10.12 but supported through 10.x). An fp32 graph is
never built as int8: that would need an INT8 calibrator (deprecated since 10.1, removed in 11); int8 needs the
Q/DQ graph from the export step.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from gcage_fast.errors import ConfigError, EngineError, MissingDependencyError
from gcage_fast.export.engine_cache import (
    EngineKey,
    GpuIdentity,
    current_gpu,
    engines_dir,
    read_verified,
    write_engine,
)
from gcage_fast.export.self_contained import refuse_external_data
from gcage_fast.fsutil import atomic_write_bytes
from gcage_fast.hashing import sha256_bytes, sha256_json
from gcage_fast.log import logger
from gcage_fast.precision import GRAPH_PRECISIONS, check_precision

__all__ = [
    "DEFAULT_WORKSPACE_BYTES",
    "INSTALL_HINT",
    "OnnxGraphInfo",
    "PrecisionPlan",
    "EngineRecord",
    "require_tensorrt",
    "tensorrt_logger",
    "tensorrt_major",
    "inspect_onnx",
    "plan_precision",
    "build_serialized_engine",
    "build_engine",
    "default_timing_cache",
]

DEFAULT_WORKSPACE_BYTES = 4 << 30
INSTALL_HINT = ("install it from NVIDIA's package index: pip install 'gcage-fast[tensorrt]' (the tensorrt package "
                "fetches its libraries from https://pypi.nvidia.com, which must be reachable), or "
                "pip install --extra-index-url https://pypi.nvidia.com tensorrt; it needs a CUDA GPU and driver")

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def require_tensorrt() -> ModuleType:
    """``import tensorrt``, or MissingDependencyError saying how to install it."""
    from gcage_fast.optional import require

    try:
        return require("tensorrt")
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"TensorRT is not installed (needed to build and run TensorRT engines); "
                                     f"{INSTALL_HINT}") from exc


def tensorrt_major(trt: Any) -> int:
    """The major version of the ``tensorrt`` module (10 or 11 are supported)."""
    version = str(getattr(trt, "__version__", ""))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise EngineError(f"cannot read the TensorRT version from {version!r}") from None
    if major < 10:
        raise EngineError(f"TensorRT {version} is too old: gcage_fast needs TensorRT 10 or 11 "
                          "(name-based I/O and execute_async_v3)")
    return major


@dataclass(frozen=True)
class OnnxGraphInfo:
    """What the build needs from an ONNX graph: its single input (name and shape, batch first) and outputs, and
    the precision the graph states (``int8`` with Q/DQ nodes, ``fp16`` with float16 tensors, else ``fp32``)."""

    input_name: str
    input_shape: tuple[int | None, ...]
    output_names: tuple[str, ...]
    precision: str
    qdq_problem: str | None = None  # why TensorRT cannot run the graph's Q/DQ nodes, if it cannot

    def profile_shapes(self, min_batch: int, opt_batch: int, max_batch: int) -> tuple[tuple[int, ...], ...]:
        """The (min, opt, max) input shapes of the optimisation profile: the batch varies, the rest is fixed."""
        rest = self.input_shape[1:]
        if any(d is None for d in rest):
            raise EngineError(f"input {self.input_name} has dynamic non-batch dimensions {self.input_shape}; "
                              "only the batch dimension may vary")
        return tuple((b, *rest) for b in (min_batch, opt_batch, max_batch))  # type: ignore[misc]


def inspect_onnx(data: bytes, name: str = "graph") -> OnnxGraphInfo:
    """Read the input, outputs and stated precision of a serialized ONNX model (refusing external data)."""
    import onnx

    graph = refuse_external_data(data, name, EngineError, "builds").graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise EngineError(f"{name} has {len(inputs)} inputs; gcage_fast graphs have exactly one")
    dims = tuple((d.dim_value if d.HasField("dim_value") else None) for d in inputs[0].type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise EngineError(f"{name}: input {inputs[0].name} has rank {len(dims)}, expected (batch, C, H, W)")
    fp16 = onnx.TensorProto.FLOAT16
    if any(n.op_type in _QDQ_OPS for n in graph.node):
        precision = "int8"
    elif (any(t.data_type == fp16 for t in graph.initializer)
          or any(v.type.tensor_type.elem_type == fp16 for v in (*graph.value_info, *graph.input, *graph.output))
          or any(n.op_type == "Cast" and a.name == "to" and a.i == fp16 for n in graph.node for a in n.attribute)):
        precision = "fp16"
    else:
        precision = "fp32"
    return OnnxGraphInfo(inputs[0].name, dims, tuple(o.name for o in graph.output), precision,
                         _qdq_problem(graph) if precision == "int8" else None)


def _qdq_problem(graph: Any) -> str | None:
    """TensorRT runs only symmetric signed quantization: every Q/DQ zero point int8 (or fp8) and all zero. An
    absent zero point means uint8. Returns what breaks that rule, or None (also when it cannot be told)."""
    import onnx
    from onnx import numpy_helper

    consts = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    consts[node.output[0]] = a.t
    allowed = {onnx.TensorProto.INT8} | {getattr(onnx.TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E5M2")
                                         if hasattr(onnx.TensorProto, n)}
    bad_type = nonzero = total = 0
    for node in graph.node:
        if node.op_type not in _QDQ_OPS:
            continue
        total += 1
        zp_name = node.input[2] if len(node.input) > 2 else ""
        if not zp_name:
            declared = [a.i for a in node.attribute if a.name == "output_dtype" and a.i]
            bad_type += not declared or declared[0] not in allowed
            continue
        zp = consts.get(zp_name)
        if zp is None:
            continue
        if zp.data_type not in allowed:
            bad_type += 1
        elif zp.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(zp).any():
            nonzero += 1
    if not bad_type and not nonzero:
        return None
    return (f"{bad_type + nonzero} of {total} QuantizeLinear/DequantizeLinear nodes use "
            f"{'unsigned (uint8) ' if bad_type else ''}{'or ' if bad_type and nonzero else ''}"
            f"{'non-zero ' if nonzero else ''}zero points; TensorRT supports only symmetric int8 quantization "
            "(int8 zero points, all 0): quantize with signed int8 activations and weights, symmetric")


@dataclass(frozen=True)
class PrecisionPlan:
    """How a precision is obtained: a strongly typed network (precision from the graph) or a weakly typed one
    with builder flags (TensorRT 10 only)."""

    strongly_typed: bool
    builder_flags: tuple[str, ...]
    mode: str  # recorded in the engine metadata


def plan_precision(major: int, requested: str, graph_precision: str) -> PrecisionPlan:
    """The build mode for ``requested`` on TensorRT ``major`` given what the graph states (see the module doc)."""
    check_precision(requested, GRAPH_PRECISIONS)
    if requested == graph_precision:
        return PrecisionPlan(True, (), f"strongly typed ({graph_precision} graph)")
    if major == 10 and requested == "fp16" and graph_precision == "fp32":
        return PrecisionPlan(False, ("FP16",), "weakly typed fp32 graph with BuilderFlag.FP16 (TensorRT 10)")
    if graph_precision != "fp32":
        raise EngineError(f"the ONNX graph is {graph_precision} but {requested} was requested; build it with "
                          f"--precision {graph_precision} or export the graph for {requested}")
    why = ("TensorRT 11 takes the precision from the graph (strongly typed; the FP16/INT8 builder flags were "
           "removed)" if major >= 11 else "int8 needs explicit quantization (Q/DQ nodes); INT8 calibration is "
           "deprecated in TensorRT 10 and removed in 11")
    raise EngineError(f"the ONNX graph is fp32 and {requested} was requested: {why}; export the graph with "
                      f"precision {requested} first (build-engine --precision {requested} does this)")


def tensorrt_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to gcage_fast's logger and keeps the error messages for EngineError."""

    class _Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                self.errors.append(msg)
                logger.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                logger.warning("TensorRT: %s", msg)
            else:
                logger.debug("TensorRT: %s", msg)

    return _Log()


def _network_flags(trt: Any, strongly_typed: bool) -> int:
    """``create_network`` flags: STRONGLY_TYPED when wanted and the enum has it (accepted and ignored on 11,
    where strong typing is the default); never EXPLICIT_BATCH, which 10 ignores and 11 removed."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None) if strongly_typed else None
    return 0 if flag is None else 1 << int(flag)


def _attach_timing_cache(trt: Any, config: Any, path: Path | None) -> None:
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False) and data:
        logger.warning("timing cache %s does not match this GPU or TensorRT version; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, bytes(cache.serialize()), tag=f"{os.getpid()}-{uuid.uuid4().hex[:8]}")


def build_serialized_engine(trt: Any, onnx_data: bytes, info: OnnxGraphInfo, plan: PrecisionPlan,
                            shapes: tuple[tuple[int, ...], ...], workspace_bytes: int,
                            timing_cache_path: Path | None = None, name: str = "graph") -> bytes:
    """Parse ``onnx_data`` and build a serialized engine for one optimisation profile ``shapes`` (min, opt,
    max) on ``info.input_name``. Raises EngineError with the parser's or builder's messages."""
    log = tensorrt_logger(trt)  # TensorRT keeps a reference: it must outlive the builder
    builder = trt.Builder(log)
    network = builder.create_network(_network_flags(trt, plan.strongly_typed))
    parser = trt.OnnxParser(network, log)
    if not parser.parse(onnx_data) or parser.num_errors:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or log.errors[-3:]
        raise EngineError(f"TensorRT cannot parse {name}: " + ("; ".join(errors) or "no parser message"))
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    if inputs != [info.input_name]:
        raise EngineError(f"TensorRT sees inputs {inputs} in {name}, expected [{info.input_name!r}]")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    profile.set_shape(info.input_name, *shapes)
    if config.add_optimization_profile(profile) < 0:
        raise EngineError(f"TensorRT refused the optimisation profile {shapes} for {info.input_name}")
    _attach_timing_cache(trt, config, timing_cache_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        detail = "; ".join(log.errors[-3:]) or "no message from TensorRT"
        raise EngineError(f"TensorRT could not build an engine from {name} ({detail}); a larger --workspace or a "
                          "smaller --max-batch may help")
    if timing_cache_path is not None:
        _save_timing_cache(config, timing_cache_path)
    return bytes(serialized)


def default_timing_cache(trt_version: str, gpu: GpuIdentity, cache_root: Path | None = None) -> Path:
    """The timing cache in gcage_fast's cache dir: one per TensorRT version and GPU (it is valid for no other)."""
    tag = sha256_json([trt_version, gpu.name, gpu.capability])[:12]
    return engines_dir(cache_root) / f"timing-{tag}.cache"


@dataclass
class EngineRecord:
    """A built (or reused) engine: its path, metadata (as written beside it) and key."""

    engine_path: Path
    metadata: dict[str, Any]
    key: EngineKey
    built: bool  # False when a verified engine with the same key was reused


def _validate(precision: str, min_batch: int, opt_batch: int, max_batch: int, workspace_bytes: int) -> None:
    check_precision(precision, GRAPH_PRECISIONS)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"batch sizes must satisfy 1 <= min <= opt <= max (got {min_batch}/{opt_batch}/"
                          f"{max_batch})")
    if workspace_bytes < 1:
        raise ConfigError("the workspace limit must be positive")


def build_engine(onnx_path: str | Path, out_dir: str | Path | None = None, *, precision: str = "fp32",
                 min_batch: int = 1, opt_batch: int = 32, max_batch: int = 256,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, timing_cache_path: str | Path | None = None,
                 name: str | None = None, cache_root: str | Path | None = None, force: bool = False,
                 trt: Any = None, gpu: GpuIdentity | None = None) -> EngineRecord:
    """Build (or reuse) the engine of ``onnx_path`` for one precision and batch profile.

    Args:
        onnx_path: an exported graph (self-contained; its input shape gives the profile's non-batch dims).
        out_dir: write ``<name>-<precision>.engine`` (+ ``.json``) here; None = gcage_fast's engine cache,
            ``<cache dir>/engines/<name>-<precision>-<key>.engine``.
        precision: ``fp32``, ``fp16`` or ``int8``; must match the graph except fp16 from fp32 on TensorRT 10.
        min_batch, opt_batch, max_batch: the optimisation profile; TensorRT tunes kernels for ``opt_batch``.
        workspace_bytes: the builder's workspace memory pool limit.
        timing_cache_path: loaded before and saved after the build; None = one per TensorRT version and GPU in
            the cache dir.
        name: file name stem (default: the ONNX file's stem).
        force: build even when a verified engine with the same key exists.
        trt: the ``tensorrt`` module (default: imported, MissingDependencyError when absent).
        gpu: the target GPU (default: torch's current CUDA device; EngineError without one).

    Returns:
        EngineRecord; ``built`` is False when an existing engine with the same key passed verification.
    """
    _validate(precision, min_batch, opt_batch, max_batch, workspace_bytes)
    trt = trt if trt is not None else require_tensorrt()
    major = tensorrt_major(trt)
    onnx_path = Path(onnx_path)
    try:
        onnx_data = onnx_path.read_bytes()
    except OSError as exc:
        raise EngineError(f"cannot read {onnx_path}: {exc.strerror or exc}") from exc
    info = inspect_onnx(onnx_data, onnx_path.name)
    plan = plan_precision(major, precision, info.precision)
    if info.qdq_problem:
        raise EngineError(f"{onnx_path.name} cannot be built by TensorRT: {info.qdq_problem}")
    shapes = info.profile_shapes(min_batch, opt_batch, max_batch)
    gpu = gpu if gpu is not None else current_gpu()
    key = EngineKey(
        onnx_sha256=sha256_bytes(onnx_data), tensorrt_version=str(trt.__version__), gpu_name=gpu.name,
        compute_capability=gpu.capability, precision=precision, input_name=info.input_name,
        min_shape=shapes[0], opt_shape=shapes[1], max_shape=shapes[2], workspace_bytes=int(workspace_bytes),
    )
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name or onnx_path.stem)
    cache = Path(cache_root) if cache_root is not None else None
    if out_dir is None:
        engine_path = engines_dir(cache) / f"{stem}-{precision}-{key.digest}.engine"
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        engine_path = Path(out_dir) / f"{stem}-{precision}.engine"
    if not force and engine_path.exists():
        try:
            _, meta = read_verified(engine_path, key)
            return EngineRecord(engine_path, meta, key, built=False)
        except EngineError as exc:
            logger.warning("existing engine not reused: %s", exc)
    tc_path = Path(timing_cache_path) if timing_cache_path is not None else default_timing_cache(key.tensorrt_version,
                                                                                                 gpu, cache)
    logger.info("building TensorRT %s engine for %s (%s, batch %d/%d/%d; this takes a while)", precision,
                onnx_path.name, plan.mode, min_batch, opt_batch, max_batch)
    t0 = time.perf_counter()
    data = build_serialized_engine(trt, onnx_data, info, plan, shapes, workspace_bytes, tc_path, onnx_path.name)
    seconds = time.perf_counter() - t0
    meta = write_engine(engine_path, data, key, extra={
        "onnx_file": str(onnx_path),
        "output_names": list(info.output_names),
        "precision_mode": plan.mode,
        "build_seconds": round(seconds, 3),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timing_cache": str(tc_path),
    })
    return EngineRecord(engine_path, meta, key, built=True)
