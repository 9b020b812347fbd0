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

from gcage_fast.cam.registry import IN_GRAPH_METHODS as METHODS
from gcage_fast.errors import ConfigError, ExportError
from gcage_fast.export.graphs import (
    BASE_INPUT,
    HEAD_INPUT,
    HEAD_OUTPUTS,
    base_graph,
    base_output_names,
    head_graph,
)
from gcage_fast.export.precision import (
    INT8_TARGETS,
    HalfBase,
    HalfHead,
    load_calibration,
    quantize_int8,
)
from gcage_fast.fsutil import atomic_write_json
from gcage_fast.hashing import sha256_file
from gcage_fast.models.registry import LoadedModel
from gcage_fast.optional import require
from gcage_fast.precision import GRAPH_PRECISIONS, check_precision

__all__ = ["ExportOptions", "ExportReport", "export_model", "GRAPH_VERSION", "PARITY_TOL", "PARITY_BATCHES",
           "REDUCED_TOL", "parity_bound"]

#: Bumped whenever the graphs' contract or computation changes (invalidates cached exports).
GRAPH_VERSION = 1
PARITY_TOL = 1e-4
PARITY_BATCHES = (1, 7)
PROB_OUTPUTS = frozenset({"probs", "p_fake"})
#: Bounds of the reduced-precision graphs against the float32 torch graph (see :func:`parity_bound`), checked
#: on real patches (the calibration images) and, for fp16, seeded random inputs. Measured on the bundled model:
#: fp16: max |dP| 5.2e-3 for the base's probabilities (one borderline patch of a non-face sample image), 1.2e-7
#:   for the head's P(fake), CAM 1.3% of its largest value (2.6% on a small random-weight test model, where the
#:   CAM is a sum of cancelling terms);
#: int8: mean |dP| 0.029 (base) and 0.001 (head) on the sample images, 0.0003 on held-out faces; CAM 0.3% of
#:   its largest value (11% on the random-weight test model, whose activations have no structure to keep).
#: int8 is bounded on the mean: post-training quantisation moves a few borderline patches far (max 0.45 on the
#: sample images). These bounds catch a broken graph (a wrong scale moves everything); what int8 does to
#: verdicts is measured by `gcage-fast eval --precision int8` (docs/PRECISION.md).
REDUCED_TOL: dict[str, dict[str, float]] = {
    "fp16": {"probs": 1e-2, "p_fake": 2e-3, "cam": 5e-2, "activations": 5e-2, "cam_weights": 5e-2},
    "int8": {"probs": 0.05, "p_fake": 0.05, "cam": 0.15, "activations": 0.15, "cam_weights": 0.15},
}
EXPORT_FILE = "export.json"


@dataclass(frozen=True)
class ExportOptions:
    """What goes into the base graph. Defaults come from the model spec when built by :meth:`for_model`."""

    cam_method: str = "gradcam"
    cam_target: str = "fake"
    cam_layer: str = "layer4"
    with_activations: bool = False
    opset: int = 18
    precision: str = "fp32"  # fp32, fp16 or int8 (export/precision.py)
    calibration: str | None = None  # int8 only: directory of calibration images (None = the bundled samples)
    int8_target: str = "cpu"  # int8 only: "cpu" (uint8 activations) or "tensorrt" (symmetric int8), see precision.py

    @classmethod
    def for_model(cls, model: LoadedModel, cam_method: str | None = None, cam_target: str | None = None,
                  cam_layer: str | None = None, with_activations: bool = False, precision: str = "fp32",
                  calibration: str | None = None, int8_target: str = "cpu") -> ExportOptions:
        opts = cls(
            cam_method=cam_method or model.spec.cam.method,
            cam_target=cam_target or model.spec.cam.target,
            cam_layer=cam_layer or model.spec.cam.layer,
            with_activations=with_activations,
            precision=precision,
            calibration=(str(Path(calibration).resolve()) if calibration is not None and precision == "int8"
                         else None),
            int8_target=int8_target if precision == "int8" else "cpu",
        )
        opts.validate(model)
        return opts

    def validate(self, model: LoadedModel) -> None:
        check_precision(self.precision, GRAPH_PRECISIONS)
        if self.calibration is not None and self.precision != "int8":
            raise ConfigError("a calibration directory only applies to --precision int8")
        if self.int8_target not in INT8_TARGETS:
            raise ConfigError(f"unknown int8 target {self.int8_target!r}; choose {', '.join(INT8_TARGETS)}")
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


def _parity(reference: torch.nn.Module, path: Path, input_name: str, output_names: tuple[str, ...],
            inputs: list[torch.Tensor]) -> dict[str, Any]:
    """Max abs difference and max abs value of every output, ONNX Runtime (CPU) on ``path`` vs ``reference``."""
    ort = require("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    result: dict[str, Any] = {}
    for x in inputs:
        with torch.no_grad():
            ref = reference(x)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = sess.run(list(output_names), {input_name: x.numpy()})
        for name, r, g in zip(output_names, ref, got):
            r = r.numpy()
            if g.shape != r.shape:
                raise ExportError(f"{path.name}: output {name} has shape {g.shape} in ONNX Runtime, {r.shape} in torch")
            d = np.abs(g.astype(np.float64) - r)
            entry = result.setdefault(name, {"max_abs_diff": 0.0, "mean_abs_diff": 0.0, "max_abs_value": 0.0,
                                             "batches": [], "_sum": 0.0, "_n": 0})
            entry["max_abs_diff"] = max(entry["max_abs_diff"], float(d.max()))
            entry["max_abs_value"] = max(entry["max_abs_value"], float(np.abs(r).max()))
            entry["_sum"] += float(d.sum())
            entry["_n"] += d.size
            entry["batches"].append(len(x))
    for entry in result.values():
        entry["mean_abs_diff"] = entry.pop("_sum") / max(1, entry.pop("_n"))
    return result


def parity_bound(precision: str, output: str, max_abs_value: float, tol: float = PARITY_TOL) -> float:
    """The largest allowed difference of ``output`` against the float32 torch graph (see REDUCED_TOL): of the max
    abs difference for fp32 and fp16, of the mean abs difference for int8."""
    if precision == "fp32":
        return tol * max(1.0, max_abs_value)
    bound = REDUCED_TOL[precision][output]
    return bound if output in PROB_OUTPUTS else bound * max_abs_value + 1e-6


def parity_statistic(precision: str) -> str:
    """Which difference :func:`parity_bound` bounds: ``mean_abs_diff`` for int8, else ``max_abs_diff``."""
    return "mean_abs_diff" if precision == "int8" else "max_abs_diff"


def _head_calibration(base: torch.nn.Module, patches: np.ndarray) -> np.ndarray:
    """The head's real input for calibration patches: the patches with the float32 base graph's CAM."""
    from gcage_fast.kernels.cpu import fuse_cam_from_patches as fuse_cam_from_patches_fast

    with torch.no_grad():
        cams = np.concatenate([base(torch.from_numpy(patches[i:i + 16]))[1].numpy()
                               for i in range(0, len(patches), 16)])
    return fuse_cam_from_patches_fast(patches, cams)


def export_model(model: LoadedModel, out_dir: str | Path, options: ExportOptions | None = None,
                 tol: float = PARITY_TOL, batches: tuple[int, ...] = PARITY_BATCHES, seed: int = 0) -> ExportReport:
    """Export ``model`` into ``out_dir`` (base.onnx, head.onnx when the model has a head, parity.json, export.json).

    Every graph is compared with the float32 torch graph before it is published: fp32 and fp16 graphs on seeded
    random inputs at the batch sizes ``batches``, int8 graphs on their calibration inputs (real patches; random
    noise lies outside the calibrated ranges).

    Raises:
        ExportError: the exporter or the quantisation failed, or an output differs by more than its bound
            (:func:`parity_bound`: ``tol`` for fp32 graphs, relative to the largest value for outputs larger
            than 1; REDUCED_TOL for fp16 and int8).
    """
    t0 = time.perf_counter()
    options = options or ExportOptions.for_model(model)
    options.validate(model)
    precision = options.precision
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = base_graph(model, options.cam_method, options.cam_target, options.cam_layer, options.with_activations)
    graphs: list[tuple[str, torch.nn.Module, str, tuple[str, ...], int]] = [
        ("base.onnx", base, BASE_INPUT, base_output_names(options.with_activations), 3)]
    head = head_graph(model)
    if head is not None:
        graphs.append(("head.onnx", head, HEAD_INPUT, HEAD_OUTPUTS, 4))

    calib = None if precision == "fp32" else load_calibration(options.calibration, model.spec.top_k)
    real: dict[str, np.ndarray] | None = None  # real inputs of each graph (calibration patches)
    if calib is not None:
        real = {"base.onnx": calib.patches}
        if head is not None:
            real["head.onnx"] = _head_calibration(base, calib.patches)

    files: dict[str, str] = {}
    parity: dict[str, Any] = {"precision": precision, "seed": seed, "graphs": {},
                              "rule": ("max_abs_diff <= tolerance * max(1, max_abs_value)" if precision == "fp32" else
                                       f"probabilities: {parity_statistic(precision)} <= bound; maps: "
                                       f"{parity_statistic(precision)} <= bound * max_abs_value; against the "
                                       "float32 torch graph")}
    parity["tolerance"] = tol if precision == "fp32" else REDUCED_TOL[precision]
    failures = []
    for fname, module, in_name, out_names, channels in graphs:
        tmp = out / f".{fname}.tmp"
        exported = module
        if precision == "fp16":
            exported = HalfBase(module) if fname == "base.onnx" else HalfHead(module)
        _export_one(exported, torch.rand(2, channels, 224, 224), tmp, in_name, out_names, options.opset)
        if precision == "int8":
            quantized = out / f".{fname}.int8.tmp"
            try:
                quantize_int8(tmp, quantized, in_name, real[fname], symmetric=options.int8_target == "tensorrt")
                quantized.replace(tmp)
            finally:
                quantized.unlink(missing_ok=True)
            x = real[fname]
            inputs = [torch.from_numpy(x[i:i + 16]) for i in range(0, len(x), 16)]
        else:
            gen = torch.Generator().manual_seed(seed)
            inputs = [torch.rand(n, channels, 224, 224, generator=gen) for n in batches]
            if real is not None:  # fp16: real patches as well (random noise gives an all-zero CAM)
                inputs += [torch.from_numpy(real[fname][i:i + 16]) for i in range(0, len(real[fname]), 16)]
        report = _parity(module, tmp, in_name, out_names, inputs)
        parity["graphs"][fname] = report
        stat = parity_statistic(precision)
        for name, entry in report.items():
            bound = parity_bound(precision, name, entry["max_abs_value"], tol)
            entry["bound"] = bound
            entry["bounded"] = stat
            if entry[stat] > bound:
                failures.append(f"{fname}:{name} {stat} {entry[stat]:.3g} exceeds {bound:.3g}")
        if failures:
            tmp.unlink(missing_ok=True)
            break
        tmp.replace(out / fname)
        files[fname] = sha256_file(out / fname)
    parity["passed"] = not failures
    atomic_write_json(out / "parity.json", parity)
    if failures:
        raise ExportError(f"ONNX Runtime output of the {precision} graphs does not match torch: {'; '.join(failures)}; "
                          f"details in {out / 'parity.json'}")
    report = ExportReport(out, files, parity, options, model.spec.sha256, time.perf_counter() - t0)
    meta: dict[str, Any] = {
        "graph_version": GRAPH_VERSION,
        "model_id": model.spec.model_id,
        "model_sha256": model.spec.sha256,
        "class_names": list(model.spec.class_names),
        "options": asdict(options),
        "precision": precision,
        "files": files,
        "torch": torch.__version__,
        "seconds": round(report.seconds, 3),
    }
    if precision == "int8":
        meta["calibration"] = {"source": calib.source, "images": len(calib.files), "patches": len(calib.patches),
                               "fingerprint": calib.fingerprint, "files": list(calib.files)}
        report.extra["calibration"] = meta["calibration"]
    atomic_write_json(out / EXPORT_FILE, meta)
    return report


def read_export(out_dir: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an export directory (raises ExportError when missing or malformed)."""
    path = Path(out_dir) / EXPORT_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
