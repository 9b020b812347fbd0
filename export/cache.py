"""Exported graphs cached per model and export options, created on first use.

Cache entries live in ``<cache dir>/onnx/<model name>-<key>/`` where the key hashes the model spec (which covers
the weights' sha256), the export options, the graph version and the torch version. An entry is exported into a
temporary directory and renamed into place, so a killed export never leaves a half-written entry; the sha256 of
each ONNX file (recorded in its export.json) is checked before the file is used.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path

import torch

from gcage_fast import env
from gcage_fast.errors import ExportError
from gcage_fast.export.precision import calibration_fingerprint
from gcage_fast.export.to_onnx import GRAPH_VERSION, ExportOptions, export_model, read_export
from gcage_fast.fsutil import private_dir
from gcage_fast.hashing import sha256_file, sha256_json
from gcage_fast.log import logger
from gcage_fast.models.registry import LoadedModel

__all__ = ["cache_key", "cached_export"]


def cache_key(model: LoadedModel, options: ExportOptions) -> str:
    opts = asdict(options)
    if options.precision == "int8":  # the calibration images' content, not their directory's name
        opts["calibration"] = calibration_fingerprint(options.calibration)
    return sha256_json({
        "model_sha256": model.spec.sha256,
        "options": opts,
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


def cached_export(model: LoadedModel, options: ExportOptions, cache_root: Path | None = None) -> Path:
    """Directory holding verified ``base.onnx`` (+ ``head.onnx``) for ``model`` and ``options``."""
    root = (cache_root or env.cache_dir()) / "onnx"
    private_dir(root, "export cache", ExportError)
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
