"""Export a model to ONNX: ``base.onnx`` (SuSy + in-graph CAM) and ``head.onnx`` (G-CAGE head + sigmoid), with a
dynamic batch axis, followed by a parity check of ONNX Runtime (CPU) against the torch modules.

Uses the dynamo exporter (``torch.onnx.export(dynamo=True)``, needs onnxscript), one self-contained file per
graph. ``parity.json`` records the max abs and max relative difference of every output at several batch sizes;
the export fails (and writes nothing under the final names) when an output differs by more than ``tol``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcage_fast.cam.weights import METHODS
from gcage_fast.errors import ConfigError, ExportError
from gcage_fast.export.graphs import (
    BASE_INPUT,
    HEAD_INPUT,
    HEAD_OUTPUTS,
    base_graph,
    base_output_names,
    head_graph,
)
from gcage_fast.fsutil import atomic_write_json
from gcage_fast.hashing import sha256_file
from gcage_fast.models.registry import LoadedModel
from gcage_fast.optional import require

__all__ = ["ExportOptions", "ExportReport", "export_model", "GRAPH_VERSION", "PARITY_TOL", "PARITY_BATCHES"]

#: Bumped whenever the graphs' contract or computation changes (invalidates cached exports).
GRAPH_VERSION = 1
PARITY_TOL = 1e-4
PARITY_BATCHES = (1, 7)
EXPORT_FILE = "export.json"


@dataclass(frozen=True)
class ExportOptions:
    """What goes into the base graph. Defaults come from the model spec when built by :meth:`for_model`."""

    cam_method: str = "gradcam"
    cam_target: str = "fake"
    cam_layer: str = "layer4"
    with_activations: bool = False
    opset: int = 18

    @classmethod
    def for_model(cls, model: LoadedModel, cam_method: str | None = None, cam_target: str | None = None,
                  cam_layer: str | None = None, with_activations: bool = False) -> ExportOptions:
        opts = cls(
            cam_method=cam_method or model.spec.cam.method,
            cam_target=cam_target or model.spec.cam.target,
            cam_layer=cam_layer or model.spec.cam.layer,
            with_activations=with_activations,
        )
        opts.validate(model)
        return opts

    def validate(self, model: LoadedModel) -> None:
        if self.cam_method not in METHODS:
            raise ConfigError(f"unknown CAM method {self.cam_method!r}; choose from {', '.join(METHODS)}")
        if self.cam_layer not in ("layer4", "F"):
            raise ConfigError(f"unknown CAM layer {self.cam_layer!r}; choose layer4 or F")
        base_graph(model, self.cam_method, self.cam_target, self.cam_layer)  # validates the target


@dataclass
class ExportReport:
    """What :func:`export_model` wrote: file paths and hashes, and the parity numbers."""

    out_dir: Path
    files: dict[str, str]  # file name -> sha256
    parity: dict[str, Any]
    options: ExportOptions
    model_sha256: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints progress and logs torchvision warnings; keep the library silent."""
    names = ("torch.onnx", "torch._export", "torch.export", "onnxscript")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


def _export_one(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: tuple[str, ...], opset: int) -> None:
    require("onnxscript")
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                module, (example,), str(path), input_names=[input_name], output_names=list(output_names),
                dynamic_shapes={"x": {0: batch}}, dynamo=True, external_data=False, opset_version=opset,
                optimize=True, verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; all mean "export failed"
        raise ExportError(f"ONNX export of {path.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") \
            from exc


def _parity(module: torch.nn.Module, path: Path, input_name: str, output_names: tuple[str, ...],
            channels: int, batches: tuple[int, ...], seed: int) -> dict[str, Any]:
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    result: dict[str, Any] = {}
    for n in batches:
        x = torch.rand(n, channels, 224, 224, generator=gen)
        with torch.no_grad():
            ref = module(x)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(list(output_names), {input_name: x.numpy()})
        for name, r, g in zip(output_names, ref, got):
            r = r.numpy()
            if g.shape != r.shape:
                raise ExportError(f"{path.name}: output {name} has shape {g.shape} in ONNX Runtime, {r.shape} in torch")
            diff = float(np.abs(g.astype(np.float64) - r).max())
            scale = float(np.abs(r).max())
            entry = result.setdefault(name, {"max_abs_diff": 0.0, "max_abs_value": 0.0, "batches": []})
            entry["max_abs_diff"] = max(entry["max_abs_diff"], diff)
            entry["max_abs_value"] = max(entry["max_abs_value"], scale)
            entry["batches"].append(n)
    return result


def export_model(model: LoadedModel, out_dir: str | Path, options: ExportOptions | None = None,
                 tol: float = PARITY_TOL, batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 0) -> ExportReport:
    """Export ``model`` into ``out_dir`` (base.onnx, head.onnx when the model has a head, parity.json, export.json).

    Raises:
        ExportError: the exporter failed, or an output's max abs difference (ORT vs torch) exceeds ``tol``.
            For outputs with values larger than 1 (raw activations) the bound is ``tol`` times the largest value.
    """
    t0 = time.perf_counter()
    options = options or ExportOptions.for_model(model)
    options.validate(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    graphs: list[tuple[str, torch.nn.Module, str, tuple[str, ...], int]] = [(
        "base.onnx",
        base_graph(model, options.cam_method, options.cam_target, options.cam_layer, options.with_activations),
        BASE_INPUT, base_output_names(options.with_activations), 3,
    )]
    head = head_graph(model)
    if head is not None:
        graphs.append(("head.onnx", head, HEAD_INPUT, HEAD_OUTPUTS, 4))

    files: dict[str, str] = {}
    parity: dict[str, Any] = {"tolerance": tol, "rule": "max_abs_diff <= tolerance * max(1, max_abs_value)",
                              "seed": seed, "graphs": {}}
    failures = []
    for fname, module, in_name, out_names, channels in graphs:
        tmp = out / f".{fname}.tmp"
        example = torch.rand(2, channels, 224, 224)
        _export_one(module, example, tmp, in_name, out_names, options.opset)
        report = _parity(module, tmp, in_name, out_names, channels, batches, seed)
        parity["graphs"][fname] = report
        for name, entry in report.items():
            if entry["max_abs_diff"] > tol * max(1.0, entry["max_abs_value"]):
                failures.append(f"{fname}:{name} differs by {entry['max_abs_diff']:.3g}")
        if failures:
            tmp.unlink(missing_ok=True)
            break
        tmp.replace(out / fname)
        files[fname] = sha256_file(out / fname)
    parity["passed"] = not failures
    atomic_write_json(out / "parity.json", parity)
    if failures:
        raise ExportError(f"ONNX Runtime output does not match torch (tolerance {tol}): {'; '.join(failures)}; "
                          f"details in {out / 'parity.json'}")
    report = ExportReport(out, files, parity, options, model.spec.sha256, time.perf_counter() - t0)
    atomic_write_json(out / EXPORT_FILE, {
        "graph_version": GRAPH_VERSION,
        "model_id": model.spec.model_id,
        "model_sha256": model.spec.sha256,
        "class_names": list(model.spec.class_names),
        "options": asdict(options),
        "files": files,
        "torch": torch.__version__,
        "seconds": round(report.seconds, 3),
    })
    return report


def read_export(out_dir: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an export directory (raises ExportError when missing or malformed)."""
    path = Path(out_dir) / EXPORT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
