"""The benchmark suites: engine, pipeline (with the baseline measured in the same run), stages, scaling, and
precision (speed of each precision beside its AP on the faces test split)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PeakRss, Row, image_set, repeat

__all__ = ["engine_suite", "pipeline_suite", "stages_suite", "scaling_suite", "precision_suite", "evidence_suite",
           "combos"]


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def _runners(model, backend: str, threads: int | None, precision: str = "fp32", calibration: str | None = None):
    from gcage_fast.engine.factory import create_runners, graph_precision
    from gcage_fast.export.to_onnx import ExportOptions

    opts = ExportOptions.for_model(model, precision=graph_precision(backend, precision), calibration=calibration)
    return create_runners(model, opts, backend, "cpu", threads, precision)


def combos(backends: list[str], precisions: list[str]) -> list[tuple[str, str]]:
    """The (backend, precision) pairs that run on the CPU, in the given orders."""
    from gcage_fast.precision import PRECISIONS_BY_BACKEND, Precision

    # on the CPU: ONNX Runtime and torch (TensorRT needs a GPU), and torch's fp16 autocast runs on CUDA only
    return [(b, p) for b in backends for p in precisions
            if b in ("ort", "torch") and p in PRECISIONS_BY_BACKEND[b] and (b, p) != ("torch", Precision.FP16)]


def engine_suite(model_ref: str | None, backends: list[str], batches: list[int], repeats: int, quick: bool,
                 threads: int | None, precisions: list[str] = ("fp32",), calibration: str | None = None) -> list[Row]:
    """Base and head graphs alone on pre-made patch batches; and the chain base -> fused step -> head."""
    from gcage_fast.engine.base import infer_chunked
    from gcage_fast.kernels.cpu import fuse_cam_from_patches
    from gcage_fast.models.registry import load_model

    model = load_model(model_ref)
    rng = np.random.default_rng(0)
    rows = []
    n_batches = 2 if quick else 4
    for backend, precision in combos(backends, list(precisions)):
        pair = _runners(model, backend, threads, precision, calibration)
        with pair.base, (pair.head or pair.base):
            for b in batches:
                n = b * n_batches
                x = rng.random((n, 3, 224, 224), dtype=np.float32)
                fused = fuse_cam_from_patches(x, infer_chunked(pair.base, x[:b], b)["cam"].repeat(n_batches, 0))

                def run_base() -> tuple[int, int, float]:
                    t = time.perf_counter()
                    infer_chunked(pair.base, x, b)
                    return 0, n, time.perf_counter() - t

                def run_head() -> tuple[int, int, float]:
                    t = time.perf_counter()
                    infer_chunked(pair.head, fused, b)
                    return 0, n, time.perf_counter() - t

                def run_chain() -> tuple[int, int, float]:
                    t = time.perf_counter()
                    out = infer_chunked(pair.base, x, b)
                    if pair.head is not None:
                        infer_chunked(pair.head, fuse_cam_from_patches(x, out["cam"]), b)
                    return 0, n, time.perf_counter() - t

                label = pair.base.info.label
                common = dict(precision=precision, batch=b, threads=threads or os.cpu_count())
                rows.append(Row("engine", model.spec.model_id, label, variant="base graph",
                                runs=repeat(run_base, repeats), **common))
                if pair.head is not None:
                    rows.append(Row("engine", model.spec.model_id, label, variant="head graph",
                                    runs=repeat(run_head, repeats), **common))
                rows.append(Row("engine", model.spec.model_id, label, variant="base + fused step + head",
                                runs=repeat(run_chain, repeats), **common))
    return rows


def baseline_run(model, files: list[Path]) -> tuple[int, int, float]:
    """The original way, one image at a time: decode, SuSy patches, eager torch with autograd Grad-CAM, eager
    head. Same decode and patch selection as the product."""
    from gcage_fast.evaluation.baseline import baseline_score
    from gcage_fast.config import Limits
    from gcage_fast.ingest.decode import decode_rgb
    from gcage_fast.ingest.prepare import read_file

    limits = Limits()
    t = time.perf_counter()
    patches = 0
    for f in files:
        rgb = decode_rgb(read_file(os.fsencode(f), limits.max_bytes), limits).rgb
        patches += len(baseline_score(model, rgb).patch_p_fake)
    return len(files), patches, time.perf_counter() - t


def scan_run(src: Path, model_ref: str | None, backend: str, heatmaps: str = "none", workers: int | None = None,
             threads: int | None = None, batch: int = 32, from_list: str | None = None, precision: str = "fp32",
             calibration: str | None = None, evidence: bool = True) -> tuple[int, int, float]:
    from gcage_fast.config import ScanConfig
    from gcage_fast.scanning.local import scan

    with tempfile.TemporaryDirectory(prefix="gcage-bench-") as tmp:
        s = scan(ScanConfig(inputs=() if from_list else (str(src),), from_list=from_list, output=str(Path(tmp) / "o"),
                            model=model_ref, backend=backend, heatmaps=heatmaps, workers=workers, threads=threads,
                            batch_size=batch, shard_size=5000, precision=precision,
                            calibration=calibration if precision == "int8" else None, evidence=evidence))
    return s.processed, s.patches, s.scan_s


def replicated(src: Path, dest: Path, times: int) -> Path:
    """``times`` hard-linked copies of the image set in one folder: enough inputs for a steady state (worker
    start-up and the first batches amortised, as in a real scan of many files)."""
    dest.mkdir(parents=True, exist_ok=True)
    for k in range(times):
        for f in _files(src):
            os.link(f, dest / f"{k}-{f.name}")
    return dest


def pipeline_suite(model_ref: str | None, backends: list[str], repeats: int, quick: bool, threads: int | None,
                   baseline: bool = True, replicate: int = 4, precisions: list[str] = ("fp32",),
                   calibration: str | None = None) -> list[Row]:
    """End-to-end scan over the image set per backend, precision and heatmap mode, and the baseline in the same
    run."""
    from gcage_fast.models.registry import load_model

    with tempfile.TemporaryDirectory(prefix="gcage-bench-set-") as tmp:
        src = replicated(image_set(quick), Path(tmp) / "set", 1 if quick else replicate)
        return _pipeline(src, model_ref, backends, repeats, quick, threads, baseline, load_model(model_ref),
                         list(precisions), calibration)


def _pipeline(src: Path, model_ref: str | None, backends: list[str], repeats: int, quick: bool,
              threads: int | None, baseline: bool, model, precisions: list[str] = ("fp32",),
              calibration: str | None = None) -> list[Row]:
    files = _files(src)
    rows = []
    base_row = None
    if baseline:
        with PeakRss() as rss:
            runs = repeat(lambda: baseline_run(model, files), repeats)
        base_row = Row("pipeline", model.spec.model_id, "baseline: torch eager + autograd Grad-CAM", batch="per image",
                       workers=0, threads=threads or os.cpu_count(), variant="original G-CAGE way", runs=runs,
                       peak_rss=rss.peak, ratio=1.0)
        rows.append(base_row)
    for backend, precision in combos(backends, list(precisions)):
        first = (backend, precision) == (backends[0], "fp32")
        for heat in ("none", "png") if first and not quick else ("none",):
            with PeakRss() as rss:
                runs = repeat(lambda: scan_run(src, model_ref, backend, heat, threads=threads, precision=precision,
                                               calibration=calibration), repeats)
            row = Row("pipeline", model.spec.model_id, backend, precision=precision, batch=32, workers="auto",
                      threads=threads or "auto", variant=f"scan --heatmaps {heat}", runs=runs, peak_rss=rss.peak)
            if base_row is not None:
                row.ratio = row.rates()["images_per_s"] / base_row.rates()["images_per_s"]
            rows.append(row)
    return rows


def stages_suite(model_ref: str | None, backend: str, quick: bool, threads: int | None,
                 batch: int = 32) -> list[dict[str, Any]]:
    """Seconds per stage over the image set, run one stage after the other in one process (no overlap), so the
    share of each is visible."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gcage_fast.config import Limits, ScanConfig
    from gcage_fast.evidence.collect import options_for, read_evidence
    from gcage_fast.ingest.decode import decode_rgb, sniff_format
    from gcage_fast.engine.base import infer_chunked
    from gcage_fast.kernels.cpu import fuse_cam_from_patches
    from gcage_fast.kernels.reference import gather_patches, quantize_cams
    from gcage_fast.models.registry import load_model
    from gcage_fast.scoring.patches import PATCH, pad_to_patch, select
    from gcage_fast.ingest.prepare import read_file

    model = load_model(model_ref)
    files = _files(image_set(quick))
    limits = Limits()
    pair = _runners(model, backend, threads)
    evidence_opts = options_for(ScanConfig(inputs=("-",), output="-"))
    times = dict.fromkeys(["read", "evidence (C2PA + metadata)", "decode", "contrast + top-k", "base engine",
                           "fused step", "head engine", "write"], 0.0)
    with pair.base, (pair.head or pair.base):
        # warm-up
        infer_chunked(pair.base, np.zeros((1, 3, 224, 224), np.float32), 1)
        t = time.perf_counter()
        blobs = [read_file(os.fsencode(f), limits.max_bytes) for f in files]
        times["read"] = time.perf_counter() - t
        read_evidence(blobs[0], sniff_format(blobs[0]), evidence_opts)  # warm-up: the C2PA library loads once
        t = time.perf_counter()
        for b in blobs:
            read_evidence(b, sniff_format(b), evidence_opts)
        times["evidence (C2PA + metadata)"] = time.perf_counter() - t
        t = time.perf_counter()
        images = [decode_rgb(b, limits).rgb for b in blobs]
        times["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        strips = []
        for rgb in images:
            padded, _ = pad_to_patch(rgb)
            sel = select(padded, model.spec.top_k)
            strips.append(np.stack([padded[y:y + PATCH, x:x + PATCH] for x, y in sel.boxes]))
        times["contrast + top-k"] = time.perf_counter() - t
        strip = np.concatenate(strips).reshape(-1, PATCH, 3)
        n = len(strip) // PATCH
        boxes = np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), np.arange(n) * PATCH], axis=1)
        x = gather_patches([strip], boxes)
        t = time.perf_counter()
        out = infer_chunked(pair.base, x, batch)
        times["base engine"] = time.perf_counter() - t
        t = time.perf_counter()
        fused = fuse_cam_from_patches(x, out["cam"])  # what a scan runs
        times["fused step"] = time.perf_counter() - t
        t = time.perf_counter()
        p = infer_chunked(pair.head, fused, batch)["p_fake"] if pair.head is not None else out["probs"][:, 0]
        times["head engine"] = time.perf_counter() - t
        t = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            table = pa.table({"p_fake": p.astype(np.float32),
                              "cam": pa.array(list(quantize_cams(out["cam"])), type=pa.list_(pa.uint8()))})
            part = Path(tmp) / "part.parquet"
            pq.write_table(table, part, compression="zstd")
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        times["write"] = time.perf_counter() - t
    total = sum(times.values())
    return [{"stage": k, "seconds": v, "share": v / total, "images": len(files), "patches": n,
             "backend": pair.base.info.label} for k, v in times.items()]


def scaling_suite(model_ref: str | None, backend: str, quick: bool, threads: int | None) -> list[Row]:
    """images/s and peak RSS versus image size, number of decode workers, and number of inputs."""
    from gcage_fast.models.registry import init_model, load_model

    src = image_set(quick)
    model = load_model(model_ref)
    rows = []
    labels = sorted({f.name.split("-")[0] for f in _files(src)}, key=lambda s: float(s.rstrip("MP")))
    with tempfile.TemporaryDirectory(prefix="gcage-bench-scaling-") as tmp:
        for label in labels:
            d = Path(tmp) / label
            d.mkdir()
            for f in _files(src):
                if f.name.startswith(label + "-"):
                    os.link(f, d / f.name)
            with PeakRss() as rss:
                runs = repeat(lambda: scan_run(d, model_ref, backend, threads=threads), 1 if quick else 2)
            rows.append(Row("scaling", model.spec.model_id, backend, batch=32, workers="auto", threads=threads or "auto",
                            variant=f"image size {label}", runs=runs, peak_rss=rss.peak))
        for workers in (0, 1, 2):
            with PeakRss() as rss:
                runs = repeat(lambda: scan_run(src, model_ref, backend, workers=workers, threads=threads),
                              1 if quick else 2)
            rows.append(Row("scaling", model.spec.model_id, backend, batch=32, workers=workers,
                            threads=threads or "auto", variant="decode workers", runs=runs, peak_rss=rss.peak))
        # Peak RSS against the number of inputs: a small model over hard links of one 0.3 MP photograph, so
        # the count, not the content, changes.
        tiny = Path(tmp) / "tiny-model"
        init_model(tiny, seed=0, width=8, hidden=32, name="bench-tiny")
        one = next(f for f in _files(src) if f.suffix == ".jpg")
        counts = (200, 1000) if quick else (1000, 5000, 20000)
        for count in counts:
            d = Path(tmp) / f"n{count}"
            d.mkdir()
            for i in range(count):
                os.link(one, d / f"{i:06d}.jpg")
            with PeakRss() as rss:
                runs = [scan_run(d, str(tiny), backend, threads=threads)]
            rows.append(Row("scaling", "bench-tiny (width 8)", backend, batch=32, workers="auto",
                            threads=threads or "auto", variant=f"{count} inputs", runs=runs, peak_rss=rss.peak))
            shutil.rmtree(d)
    return rows


def precision_suite(model_ref: str | None, repeats: int, quick: bool, threads: int | None, precisions: list[str],
                    calibration: str | None, faces: Path | None) -> list[dict[str, Any]]:
    """Per precision (ONNX Runtime fp32/fp16/int8, torch bf16): the engine chain at batch 32, the end-to-end scan
    over the image set, and the AP of ``gcage-fast eval`` on the faces test split (when ``faces`` exists)."""
    from gcage_fast.evaluation.evaluate import EvalOptions, evaluate

    wanted = [("torch" if p == "bf16" else "ort", p) for p in precisions]
    engine = {(r.backend, r.precision): r for r in engine_suite(
        model_ref, sorted({b for b, _ in wanted}), [8 if quick else 32], repeats, quick, threads,
        list(precisions), calibration) if r.variant == "base + fused step + head"}
    out = []
    with tempfile.TemporaryDirectory(prefix="gcage-bench-set-") as tmp:
        src = replicated(image_set(quick), Path(tmp) / "set", 1 if quick else 4)
        for backend, precision in wanted:
            runs = repeat(lambda: scan_run(src, model_ref, backend, threads=threads, precision=precision,
                                           calibration=calibration), repeats)
            scan_row = Row("precision", "", backend, precision=precision, runs=runs)
            eng = next(r for (b, p), r in engine.items() if p == precision and b.startswith(backend))
            ap = None
            if faces is not None and faces.is_dir() and not quick:
                rep = evaluate(EvalOptions(data=str(faces), model=model_ref, split="test", backend=backend,
                                           precision=precision, threads=threads,
                                           calibration=calibration if precision == "int8" else None))
                ap = {v: rep["results"][v]["none"][str(rep["top_k"][0])]["all"]["ap"]
                      for v in rep["results"]}
            out.append({"backend": eng.backend, "precision": precision, "engine": eng.rates(), "scan": scan_row.rates(),
                        "engine_runs": len(eng.runs), "ap": ap, "images": runs[0][0], "patches": runs[0][1]})
    ref = next((r for r in out if r["precision"] == "fp32"), None)
    for r in out:
        r["engine_ratio"] = r["engine"]["patches_per_s"] / ref["engine"]["patches_per_s"] if ref else None
        r["scan_ratio"] = r["scan"]["images_per_s"] / ref["scan"]["images_per_s"] if ref else None
    return out


_BROAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"


def evidence_suite(model_ref: str | None, backend: str, repeats: int, quick: bool, threads: int | None,
                   replicate: int = 4) -> list[Row]:
    """The cost of reading provenance: the same end-to-end scan with and without the evidence stage, interleaved
    run by run so that machine load hits both alike; on the benchmark set (no provenance: the pre-check path)
    and, when ../shared/data/broad is present, on its DALL·E 3 files (a C2PA manifest in every file)."""
    from gcage_fast.models.registry import load_model

    model = load_model(model_ref)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gcage-bench-evidence-") as tmp:
        sets = [("benchmark set", replicated(image_set(quick), Path(tmp) / "set", 1 if quick else replicate))]
        if (_BROAD / "ai" / "dall-e-3").is_dir():
            sets.append(("broad ai/dall-e-3 (C2PA in every file)", _BROAD / "ai" / "dall-e-3"))
        for label, src in sets:
            runs: dict[bool, list[tuple[int, int, float]]] = {True: [], False: []}
            scan_run(src, model_ref, backend, threads=threads)  # warm-up (exports, caches)
            for _ in range(max(1, repeats)):
                for evidence in (False, True):
                    runs[evidence].append(scan_run(src, model_ref, backend, threads=threads, evidence=evidence))
            pair = [Row("evidence", model.spec.model_id, backend, batch=32, workers="auto",
                        threads=threads or "auto", variant=f"{label}: evidence {'on' if on else 'off'}",
                        runs=runs[on]) for on in (False, True)]
            off, on = (r.rates()["images_per_s"] for r in pair)
            pair[1].ratio = on / off if off else None
            pair[1].note = f"scan time {off / on - 1:+.1%} with C2PA + metadata reading" if on else ""
            rows += pair
    return rows
