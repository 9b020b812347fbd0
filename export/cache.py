"""Exported graphs cached per model and export options, created on first use.

Cache entries live in ``<cache dir>/onnx/<model name>-<key>/`` where the key hashes the model spec (which covers
the weights' sha256), the export options, the graph version and the torch version. An entry is exported into a
temporary directory and renamed into place, so a killed export never leaves a half-written entry; the sha256 of
each ONNX file (recorded in its export.json) is checked before the file is used.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from dataclasses import asdict
from pathlib import Path

import torch

from gcage_fast import env
from gcage_fast.errors import ExportError
from gcage_fast.export.to_onnx import GRAPH_VERSION, ExportOptions, export_model, read_export
from gcage_fast.hashing import sha256_file, sha256_json
from gcage_fast.log import logger
from gcage_fast.models.registry import LoadedModel

__all__ = ["cache_key", "cached_export"]


def cache_key(model: LoadedModel, options: ExportOptions) -> str:
    return sha256_json({
        "model_sha256": model.spec.sha256,
        "options": asdict(options),
        "graph_version": GRAPH_VERSION,
        "torch": torch.__version__,
    })[:20]


def _valid(entry: Path, model: LoadedModel) -> bool:
    try:
        meta = read_export(entry)
    except ExportError:
        return False
    if meta.get("model_sha256") != model.spec.sha256:
        return False
    expected = {"base.onnx"} | ({"head.onnx"} if model.head is not None else set())
    files = meta.get("files", {})
    if set(files) != expected:
        return False
    return all((entry / f).is_file() and sha256_file(entry / f) == h for f, h in files.items())


def _private_dir(path: Path) -> None:
    """Create ``path`` (0700) or check that an existing one is ours and not writable by others: a graph in the
    cache is code the runtime will execute, so nobody else may be able to put one there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ExportError(f"export cache {path} is not a plain directory; remove it or set GCAGE_CACHE_DIR")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ExportError(f"export cache {path} is owned by another user or writable by others; "
                          "fix its permissions (chmod go-w) or set GCAGE_CACHE_DIR")


def cached_export(model: LoadedModel, options: ExportOptions, cache_root: Path | None = None) -> Path:
    """Directory holding verified ``base.onnx`` (+ ``head.onnx``) for ``model`` and ``options``."""
    root = (cache_root or env.cache_dir()) / "onnx"
    _private_dir(root)
    entry = root / f"{model.spec.name}-{cache_key(model, options)}"
    if entry.is_dir():
        if _valid(entry, model):
            return entry
        logger.warning("cached export %s failed verification; exporting again", entry)
        shutil.rmtree(entry, ignore_errors=True)
    logger.info("exporting ONNX graphs for %s (first use; cached in %s)", model.spec.model_id, entry)
    tmp = root / f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        export_model(model, tmp, options)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not _valid(entry, model):  # another process won the race with a broken entry
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry
