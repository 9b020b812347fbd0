"""TensorRT engines on disk: cache keys, the metadata file beside each engine, and verified loading.

An engine is compiled GPU code. TensorRT's documentation says never to deserialize an engine from an untrusted
source, so an engine is only ever read from two places: gcage_fast's own cache directory (``<cache
dir>/engines``, which must be a plain directory of the current user that nobody else can write), or a file the
user named together with its metadata file. Each ``X.engine`` has ``X.engine.json`` beside it, holding the cache
key fields, the sha256 of the engine bytes, the build time and the TensorRT version. The bytes are hashed and
compared with that sha256 before TensorRT sees them.

An engine runs only on the TensorRT version and the GPU architecture that built it, so the cache key covers the
ONNX file's sha256, the TensorRT version, the GPU name and compute capability, the precision, the optimisation
profile shapes and the workspace limit. Writes go to a temporary name and are renamed into place, engine first
and metadata last: a reader that finds the metadata finds the complete engine it describes.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from gcage_fast import env
from gcage_fast.errors import EngineError
from gcage_fast.fsutil import fsync_dir, private_dir
from gcage_fast.hashing import sha256_bytes, sha256_json
from gcage_fast.log import logger

__all__ = [
    "ENGINE_FORMAT",
    "GpuIdentity",
    "EngineKey",
    "current_gpu",
    "engines_dir",
    "metadata_path",
    "write_engine",
    "read_metadata",
    "read_verified",
    "load_engine",
]

#: Bumped whenever the build code changes what goes into an engine (invalidates cached engines).
ENGINE_FORMAT = 1
REBUILD_HINT = "rebuild it with `gcage-fast build-engine`"


@dataclass(frozen=True)
class GpuIdentity:
    """The GPU an engine is built for: its name and compute capability (``"9.0"`` for an H100/H200)."""

    name: str
    capability: str


def current_gpu(device: int | None = None) -> GpuIdentity:
    """The CUDA device torch uses (``device`` or the current one); EngineError when there is none."""
    import torch

    if not torch.cuda.is_available():
        raise EngineError("TensorRT needs a CUDA GPU and torch sees none (check the driver and that a CUDA build "
                          "of torch is installed)")
    index = torch.cuda.current_device() if device is None else device
    props = torch.cuda.get_device_properties(index)
    return GpuIdentity(props.name, f"{props.major}.{props.minor}")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine's content depends on. Equal keys mean the cached engine can be reused."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    workspace_bytes: int
    engine_format: int = ENGINE_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("min_shape", "opt_shape", "max_shape"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EngineKey:
        try:
            fields = {k: d[k] for k in cls.__dataclass_fields__}
            for k in ("min_shape", "opt_shape", "max_shape"):
                fields[k] = tuple(int(v) for v in fields[k])
            return cls(**fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"engine metadata has no valid key ({type(exc).__name__}: {exc})") from exc

    @property
    def digest(self) -> str:
        """20 hex digits of the sha256 of the key: the cache file name part."""
        return sha256_json(self.to_dict())[:20]

    def describe(self) -> str:
        return (f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute {self.compute_capability}), "
                f"{self.precision}, batch {self.min_shape[0]}/{self.opt_shape[0]}/{self.max_shape[0]}")


def engines_dir(cache_root: Path | None = None) -> Path:
    """``<cache dir>/engines``, created private (0700) or checked to be private."""
    root = Path(cache_root) if cache_root is not None else env.cache_dir()
    return private_dir(root / "engines", "engine cache", EngineError)


def metadata_path(engine_path: str | Path) -> Path:
    """The metadata file of an engine: ``X.engine`` -> ``X.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def _write_tmp(final: Path, data: bytes, tag: str) -> Path:
    tmp = final.with_name(f".{final.name}.tmp-{tag}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_engine(engine_path: str | Path, data: bytes, key: EngineKey, extra: dict[str, Any] | None = None) -> dict:
    """Write ``data`` to ``engine_path`` and its metadata beside it; return the metadata.

    Both files are written under temporary names in the same directory and renamed, engine first, metadata
    last. On any failure the temporary files are removed; a failure between the two renames leaves an older
    metadata file that no longer matches the engine's sha256, so the engine is rebuilt on next use.
    """
    final = Path(engine_path)
    meta = dict(extra or {})
    meta.update({
        "engine_format": ENGINE_FORMAT,
        "key": key.to_dict(),
        "key_digest": key.digest,
        "engine_file": final.name,
        "engine_sha256": sha256_bytes(data),
        "engine_bytes": len(data),
        "tensorrt_version": key.tensorrt_version,
    })
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmps: list[Path] = []
    try:
        tmps.append(_write_tmp(final, data, tag))
        tmps.append(_write_tmp(metadata_path(final),
                               (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode(), tag))
        os.replace(tmps[0], final)
        os.replace(tmps[1], metadata_path(final))
        fsync_dir(final.parent)
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    return meta


def read_metadata(engine_path: str | Path) -> dict[str, Any]:
    """The metadata of an engine (EngineError when it is missing or malformed: no metadata, no loading)."""
    path = metadata_path(engine_path)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise EngineError(f"{engine_path} has no metadata file {path.name}; gcage_fast only loads engines it "
                          f"built (with their metadata); {REBUILD_HINT}") from exc
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read engine metadata {path}: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("engine_sha256"), str):
        raise EngineError(f"engine metadata {path} has no engine_sha256; {REBUILD_HINT}")
    return meta


def read_verified(engine_path: str | Path, expected: EngineKey | None = None) -> tuple[bytes, dict[str, Any]]:
    """The engine's bytes and metadata, after checking the bytes against the metadata's sha256 and, when
    ``expected`` is given, the metadata's key against it (the TensorRT version and GPU above all)."""
    path = Path(engine_path)
    meta = read_metadata(path)
    recorded = EngineKey.from_dict(meta.get("key", {}))
    if expected is not None and recorded != expected:
        diffs = [f"{k} {getattr(recorded, k)!r} (here {getattr(expected, k)!r})"
                 for k in expected.__dataclass_fields__ if getattr(recorded, k) != getattr(expected, k)]
        raise EngineError(f"engine {path} was built for other settings: {'; '.join(diffs)}; {REBUILD_HINT}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise EngineError(f"cannot open engine {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise EngineError(f"engine {path} is not a regular file")
        data = fh.read()
    actual = sha256_bytes(data)
    if actual != meta["engine_sha256"]:
        raise EngineError(f"engine {path} does not match the sha256 in its metadata ({actual[:16]}… != "
                          f"{meta['engine_sha256'][:16]}…): it is corrupt or was replaced; {REBUILD_HINT}")
    return data, meta


def load_engine(engine_path: str | Path, deserialize: Callable[[bytes], Any], expected: EngineKey | None = None,
                rebuild: Callable[[], Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Verify and deserialize an engine: ``(engine, metadata)``.

    ``deserialize`` turns verified bytes into an engine (``runtime.deserialize_cuda_engine``) and may return
    None, as TensorRT does for an engine of another version or GPU. When the bytes fail verification or
    deserialize to None, ``rebuild`` (if given) is called once to write the engine again, then loading is
    retried; a second failure raises EngineError. Without ``rebuild`` (a user-named engine) the first failure
    raises.
    """
    attempts = 2 if rebuild is not None else 1
    problem = ""
    for attempt in range(attempts):
        try:
            data, meta = read_verified(engine_path, expected)
        except EngineError as exc:
            problem = str(exc)
        else:
            engine = deserialize(data)
            if engine is not None:
                return engine, meta
            key = EngineKey.from_dict(meta["key"])
            problem = (f"TensorRT could not deserialize {engine_path} (built with {key.describe()}; an engine only "
                       f"runs on the TensorRT version and GPU architecture that built it)")
        if attempt + 1 < attempts:
            logger.warning("%s; building the engine again", problem)
            assert rebuild is not None
            rebuild()
    if rebuild is not None:
        raise EngineError(f"{problem} (it was rebuilt once and still failed; see the TensorRT messages above)")
    raise EngineError(problem if REBUILD_HINT in problem else f"{problem}; {REBUILD_HINT}")
