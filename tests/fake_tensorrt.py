"""FakeTensorRT: a test double of the ``tensorrt`` module, for tests on machines without TensorRT or a GPU.

It implements the small part of the TensorRT 10/11 Python API that gcage_fast uses and records every call, in
order, in ``calls`` as ``(name, args...)`` tuples, so tests can assert the documented build and run sequences.
It is not TensorRT: nothing is compiled. A "built engine" is a short JSON document (behind a magic prefix) of the
network's I/O and the build settings; the fake runtime deserializes exactly that, and the fake execution context
"runs" by writing, through the addresses it was given, ``mean(input sample) + output index`` into every element
of every output (so buffers must be host memory, e.g. CPU torch tensors, when a test executes it).

Version differences modelled: 11.x has no ``BuilderFlag.FP16``/``INT8`` and no ``EXPLICIT_BATCH`` creation flag.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import json
import types
from typing import Any

import numpy as np
import onnx

MAGIC = b"FAKE-TRT-ENGINE\n"


class FakeTensorRT(types.ModuleType):
    """A fake ``tensorrt`` module object; inject it with ``monkeypatch.setitem(sys.modules, "tensorrt", fake)`` or
    pass it as ``trt=`` where the library accepts one.

    Args:
        version: ``__version__`` (its major selects the 10.x or 11.x API surface).
        parse_errors: messages the ONNX parser reports (parse then fails).
        build_result: ``"engine"`` (normal), ``None`` (build_serialized_network returns None) or an exception
            instance to raise from build_serialized_network.
        deserialize_none: the runtime's deserialize_cuda_engine returns None (as for a foreign engine).
        timing_cache_accepts: what config.set_timing_cache returns for a non-empty cache.
    """

    def __init__(self, version: str = "10.13.3.9", *, parse_errors: tuple[str, ...] = (),
                 build_result: Any = "engine", deserialize_none: bool = False,
                 timing_cache_accepts: bool = True) -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # importlib.util.find_spec needs one
        self.__version__ = version
        self.calls: list[tuple] = []
        self.parse_errors = tuple(parse_errors)
        self.build_result = build_result
        self.deserialize_none = deserialize_none
        self.timing_cache_accepts = timing_cache_accepts
        major = int(version.split(".")[0])
        fake = self

        class ILogger:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self) -> None:
                pass

            def log(self, severity: int, msg: str) -> None:  # overridden by real loggers
                pass

        class Logger(ILogger):
            def __init__(self, min_severity: int = ILogger.WARNING) -> None:
                super().__init__()
                self.min_severity = min_severity

        self.ILogger, self.Logger = ILogger, Logger
        flags = {"STRONGLY_TYPED": 1} if major >= 11 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
        self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags)
        builder_flags = {"TF32": 7, "REFIT": 3, "VERSION_COMPATIBLE": 12}
        if major < 11:
            builder_flags.update({"FP16": 0, "INT8": 1, "BF16": 17})
        self.BuilderFlag = enum.IntEnum("BuilderFlag", builder_flags)
        self.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1})
        self.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
        self.DataType = enum.IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4})
        self.float32, self.float16, self.int8 = self.DataType.FLOAT, self.DataType.HALF, self.DataType.INT8
        self.int32, self.bool = self.DataType.INT32, self.DataType.BOOL

        class Tensor:
            def __init__(self, name: str, shape: tuple) -> None:
                self.name, self.shape = name, shape

        class Network:
            def __init__(self, flags: int) -> None:
                self.flags = flags
                self.inputs: list[Tensor] = []
                self.outputs: list[Tensor] = []

            @property
            def num_inputs(self) -> int:
                return len(self.inputs)

            def get_input(self, i: int) -> Tensor:
                return self.inputs[i]

        class ParserError:
            def __init__(self, msg: str) -> None:
                self.msg = msg

            def __str__(self) -> str:
                return self.msg

        class OnnxParser:
            def __init__(self, network: Network, logger: ILogger) -> None:
                fake.calls.append(("OnnxParser",))
                self.network = network
                self.errors: list[ParserError] = []

            def parse(self, model: bytes, path: str | None = None) -> bool:
                fake.calls.append(("parse", len(model)))
                if fake.parse_errors:
                    self.errors = [ParserError(m) for m in fake.parse_errors]
                    return False
                graph = onnx.load_model_from_string(bytes(model)).graph
                inits = {t.name for t in graph.initializer}

                def shape(v: Any) -> tuple:
                    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)

                self.network.inputs = [Tensor(i.name, shape(i)) for i in graph.input if i.name not in inits]
                self.network.outputs = [Tensor(o.name, shape(o)) for o in graph.output]
                return True

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, i: int) -> ParserError:
                return self.errors[i]

        class TimingCache:
            def __init__(self, data: bytes) -> None:
                self.data = bytes(data)

            def serialize(self) -> bytes:
                return self.data + b"+tuned"

        class Profile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple] = {}

            def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:  # noqa: A002
                fake.calls.append(("set_shape", name, tuple(min), tuple(opt), tuple(max)))
                self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

        class Config:
            def __init__(self) -> None:
                self.flags: list[str] = []
                self.pools: dict[int, int] = {}
                self.profiles: list[Profile] = []
                self.timing_cache: TimingCache | None = None

            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                fake.calls.append(("set_memory_pool_limit", pool.name, size))
                self.pools[pool] = size

            def set_flag(self, flag: Any) -> None:
                fake.calls.append(("set_flag", flag.name))
                self.flags.append(flag.name)

            def add_optimization_profile(self, profile: Profile) -> int:
                fake.calls.append(("add_optimization_profile",))
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def create_timing_cache(self, data: bytes) -> TimingCache:
                fake.calls.append(("create_timing_cache", bytes(data)))
                return TimingCache(data)

            def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
                fake.calls.append(("set_timing_cache", cache.data, ignore_mismatch))
                if cache.data and not fake.timing_cache_accepts:
                    return False
                self.timing_cache = cache
                return True

            def get_timing_cache(self) -> TimingCache | None:
                fake.calls.append(("get_timing_cache",))
                return self.timing_cache

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                fake.calls.append(("Builder",))
                self.logger = logger

            def create_network(self, flags: int = 0) -> Network:
                fake.calls.append(("create_network", flags))
                return Network(flags)

            def create_builder_config(self) -> Config:
                fake.calls.append(("create_builder_config",))
                return Config()

            def create_optimization_profile(self) -> Profile:
                fake.calls.append(("create_optimization_profile",))
                return Profile()

            def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
                fake.calls.append(("build_serialized_network",))
                if isinstance(fake.build_result, BaseException):
                    raise fake.build_result
                if fake.build_result is None:
                    self.logger.log(ILogger.ERROR, "fake: out of workspace memory")
                    return None
                (name, (lo, opt, hi)), = config.profiles[0].shapes.items()
                doc = {"version": fake.__version__, "network_flags": network.flags, "builder_flags": config.flags,
                       "workspace": config.pools.get(fake.MemoryPoolType.WORKSPACE),
                       "inputs": [[name, list(lo), list(opt), list(hi)]],
                       "outputs": [[o.name, list(o.shape)] for o in network.outputs]}
                return MAGIC + json.dumps(doc, sort_keys=True).encode()

        class Context:
            def __init__(self, engine: Engine) -> None:
                self.engine = engine
                self.shapes: dict[str, tuple] = {}
                self.addresses: dict[str, int] = {}

            def set_input_shape(self, name: str, shape: tuple) -> bool:
                fake.calls.append(("set_input_shape", name, tuple(shape)))
                lo, _, hi = self.engine.profile[name]
                if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
                    return False
                self.shapes[name] = tuple(shape)
                return True

            def get_tensor_shape(self, name: str) -> tuple:
                batch = next(iter(self.shapes.values()))[0]
                shape = self.engine.shapes[name]
                return (batch, *shape[1:])

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                fake.calls.append(("set_tensor_address", name))
                self.addresses[name] = ptr
                return True

            def execute_async_v3(self, stream_handle: int) -> bool:
                fake.calls.append(("execute_async_v3", stream_handle))
                names = [n for n in self.engine.names]
                if set(self.addresses) != set(names):
                    return False  # TensorRT refuses to run with an unbound I/O tensor
                (in_name, in_shape), = self.shapes.items()
                x = _view(self.addresses[in_name], in_shape)
                means = x.reshape(in_shape[0], -1).mean(axis=1)
                for k, name in enumerate(self.engine.outputs):
                    out = _view(self.addresses[name], self.get_tensor_shape(name))
                    out[...] = (means + k).reshape((-1,) + (1,) * (out.ndim - 1))
                return True

        class Engine:
            def __init__(self, doc: dict) -> None:
                self.doc = doc
                self.inputs = [i[0] for i in doc["inputs"]]
                self.outputs = [o[0] for o in doc["outputs"]]
                self.names = self.inputs + self.outputs
                self.profile = {i[0]: (tuple(i[1]), tuple(i[2]), tuple(i[3])) for i in doc["inputs"]}
                self.shapes = {i[0]: tuple(i[2]) for i in doc["inputs"]} | {o[0]: tuple(o[1]) for o in doc["outputs"]}

            @property
            def num_io_tensors(self) -> int:
                return len(self.names)

            def get_tensor_name(self, i: int) -> str:
                return self.names[i]

            def get_tensor_mode(self, name: str) -> Any:
                return fake.TensorIOMode.INPUT if name in self.inputs else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name: str) -> Any:
                return fake.float32

            def get_tensor_profile_shape(self, name: str, profile_index: int) -> tuple:
                return self.profile[name]

            def create_execution_context(self) -> Context:
                fake.calls.append(("create_execution_context",))
                return Context(self)

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                fake.calls.append(("Runtime",))

            def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
                fake.calls.append(("deserialize_cuda_engine", len(data)))
                if fake.deserialize_none or not bytes(data).startswith(MAGIC):
                    return None
                return Engine(json.loads(bytes(data)[len(MAGIC):]))

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime

    def names(self) -> list[str]:
        """The names of the recorded calls, in order."""
        return [c[0] for c in self.calls]

    def find(self, name: str) -> list[tuple]:
        """The recorded calls named ``name``."""
        return [c for c in self.calls if c[0] == name]


def _view(ptr: int, shape: tuple) -> np.ndarray:
    """A float32 NumPy view of host memory at ``ptr`` (the fake's stand-in for a device buffer)."""
    n = int(np.prod(shape))
    return np.ctypeslib.as_array((ctypes.c_float * n).from_address(ptr)).reshape(shape)
