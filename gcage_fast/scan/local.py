"""``scan``: the only module that knows every stage.

    sources -> plan -> decode workers (read, decode, patch selection) -> base engine -> fused step -> head engine
            -> aggregate -> Parquet shard (atomic commit) [+ heatmap PNGs]

Decoding runs in spawned worker processes with a bounded window of tasks in flight; results come back in plan
order. Patches of several images are batched for the engines, but a batch never spans two shards, so a resumed
scan scores every shard with exactly the batches of an uninterrupted one (bit-identical scores).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from gcage_fast import __version__, env
from gcage_fast.config import ScanConfig, default_workers
from gcage_fast.scoring.base import ImageScore, Scorer
from gcage_fast.scoring.factory import make_scorer, uses_device_path
from gcage_fast.errors import CircuitBreakerError, ConfigError, Interrupted, OutputError
from gcage_fast.ingest.feed import InputFeed
from gcage_fast.log import logger
from gcage_fast.output.outdir import OutputDir, PlanEntry
from gcage_fast.ingest.perturb import parse_perturbations
from gcage_fast.ingest.prefetch import Prefetch
from gcage_fast.ingest.prepare import Prepared, prepare, prepare_failure
from gcage_fast.output.schema import SCHEMA_VERSION
from gcage_fast.output.heatmaps import PREVIEW_MAX, render_overlay, write_png_atomic
from gcage_fast.output.parquet import commit_shard
from gcage_fast.ingest.sources import display_path, enumerate_inputs
from gcage_fast.ingest.workers import PoolLimits, SupervisedPool

__all__ = ["scan", "ScanProgress", "ScanSummary"]


@dataclass
class ScanProgress:
    """Progress of the current attempt (``done`` counts inputs processed now, out of ``todo``)."""

    done: int
    todo: int
    total: int
    errors: int
    patches: int
    elapsed: float


@dataclass
class ScanSummary:
    """What a scan produced. Counts cover the whole output (committed earlier or now); rates cover this attempt."""

    output: str
    run_id: str
    resumed: bool
    n_inputs: int
    status: dict[str, int]
    error_codes: dict[str, int]
    verdicts: dict[str, int]
    processed: int
    patches: int
    wall_s: float  # the whole command, model loading and first-use export included
    scan_s: float  # decoding and scoring only (the basis of the rates)
    shards_total: int
    shards_written: int
    shards_skipped: int
    model_id: str
    backend: str
    cam_method: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.scan_s if self.scan_s > 0 else 0.0

    @property
    def patches_per_s(self) -> float:
        return self.patches / self.scan_s if self.scan_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images_per_s"] = round(self.images_per_s, 3)
        d["patches_per_s"] = round(self.patches_per_s, 3)
        return d


class _Fault:
    """The GCAGE_FAULT_AT test hook: SIGKILL ourselves at a chosen point (see gcage_fast.env)."""

    def __init__(self) -> None:
        self.point = env.fault_point()

    def __call__(self, phase: str, n: int) -> None:
        if self.point is None:
            return
        if self.point == (phase, n):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.point == ("enospc", n) and phase == "in_write":
            raise OSError(errno.ENOSPC, "No space left on device (GCAGE_FAULT_AT)")


def _versions() -> dict[str, str]:
    import PIL
    import pyarrow
    import torch

    v = {"gcage_fast": __version__, "torch": torch.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
         "pyarrow": pyarrow.__version__}
    try:
        import onnxruntime

        v["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return v


def _fingerprint(config: ScanConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes rows; a resume must match it exactly."""
    return {
        "inputs": list(config.inputs),
        "from_list": config.from_list,
        "follow_symlinks": config.follow_symlinks,
        "shard_size": config.shard_size,
        "small_images": config.small_images,
        "perturb": config.perturb,
        "limits": asdict(config.limits) | {"formats": list(config.limits.formats)},
        **resolved,
    }


def _refuse_output_inside_inputs(output: Path, inputs: tuple[str, ...]) -> None:
    """A scan must not ingest its own parts and heatmaps (or a later scan's)."""
    out = os.path.realpath(output)
    for raw in inputs:
        root = os.path.realpath(raw)
        if os.path.isdir(root) and (out == root or out.startswith(root.rstrip(os.sep) + os.sep)):
            raise OutputError(f"the output directory {display_path(os.fsencode(output))} is inside the scanned "
                              f"input {display_path(os.fsencode(raw))}; choose an output outside it")


def _check_resume(previous: dict[str, Any], current: dict[str, Any]) -> None:
    diffs = [k for k in sorted(set(previous) | set(current)) if previous.get(k) != current.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: was {previous.get(k)!r}, now {current.get(k)!r}" for k in diffs[:4])
        raise ConfigError(f"cannot resume with different settings ({detail}); use the original options, "
                          "or --overwrite to start again")


def _row(entry: PlanEntry, prep: Prepared, score: ImageScore | None, ctx: dict[str, Any]) -> dict[str, Any]:
    member = entry.member_bytes
    row: dict[str, Any] = {
        "input_id": entry.input_id,
        "path": entry.path,
        "path_bytes": entry.path_bytes,
        "member": None if member is None else display_path(member),
        "member_bytes": member,
        "member_index": entry.member_index,
        "size_bytes": prep.size_bytes,
        "sha256": prep.sha256,
        "format": prep.format,
        "width": prep.width,
        "height": prep.height,
        "mode": prep.mode,
        "n_frames": prep.n_frames,
        "frames_scanned": prep.frames_scanned if prep.status == "ok" else 0 if prep.n_frames else None,
        "status": prep.status,
        "error_code": prep.error_code,
        "error_detail": prep.error_detail,
        "flags": list(entry.flags) + prep.flags,
        "trailing_bytes": prep.trailing_bytes,
        "exif_orientation": prep.exif_orientation,
        "n_patches_total": prep.n_patches_total,
        "n_patches_scanned": None,
        "padded": prep.padded,
        **{k: ctx[k] for k in ("model_id", "model_sha256", "backend", "cam_method", "cam_target", "run_id", "shard")},
        "scanned_at": datetime.now(timezone.utc),
    }
    if score is not None:
        row.update({
            "n_patches_scanned": len(score.patch_p_fake),
            "p_fake": score.p_fake,
            "verdict": score.verdict,
            "threshold": ctx["threshold"],
            "base_p_fake": score.base_p_fake,
            "base_probs": score.base_probs.tolist(),
            "attribution": score.attribution,
            "patches": [
                {"x": int(x), "y": int(y), "contrast": float(c), "p_fake": float(p), "probs": pr.tolist(),
                 "cam": cam.tolist()}
                for (x, y), c, p, pr, cam in zip(prep.boxes, prep.contrast, score.patch_p_fake, score.patch_probs,
                                                score.patch_cams)
            ],
        })
    return row


def _totals(out: OutputDir, n_shards: int) -> tuple[Counter, Counter, Counter]:
    status, codes, verdicts = Counter(), Counter(), Counter()
    for shard in range(n_shards):
        part = out.part_path(shard)
        if not part.is_file():
            continue
        t = pq.read_table(part, columns=["status", "error_code", "verdict"]).to_pydict()
        status.update(t["status"])
        codes.update(c for c in t["error_code"] if c)
        verdicts.update(v for v in t["verdict"] if v)
    return status, codes, verdicts


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM (and SIGINT) stop the scan promptly: the exception unwinds through the worker pool, which kills
    its workers, and leaves the shard in flight unmarked for --resume. Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def scan(config: ScanConfig, progress: Callable[[ScanProgress], None] | None = None) -> ScanSummary:
    """Run (or resume) a scan; returns its summary.

    Raises:
        GcageError: for problems of the run (bad options, missing inputs or model, unwritable output, a broken
            environment, an interrupting signal). Problems of single files never raise: they are rows.
    """
    with _stop_on_signals():
        return _scan(config, progress)


def _scan(config: ScanConfig, progress: Callable[[ScanProgress], None] | None) -> ScanSummary:
    from gcage_fast.engine.factory import check_device, create_runners, graph_precision, resolve_backend
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    t_start = time.perf_counter()
    config.validate()
    model = load_model(config.model)
    spec = model.spec
    check_device(config.device)
    backend = resolve_backend(config.backend, config.device)
    options = ExportOptions.for_model(model, config.cam, config.cam_target,
                                      precision=graph_precision(backend, config.precision),
                                      calibration=config.calibration,
                                      int8_target="tensorrt" if config.device == "cuda" else "cpu")
    resolved = {
        "model_sha256": spec.sha256,
        "top_k": config.top_k or spec.top_k,
        "cam_method": options.cam_method,
        "cam_target": options.cam_target,
        "cam_layer": options.cam_layer,
        "threshold": spec.threshold if config.threshold is None else config.threshold,
        "backend": backend,
        "device": config.device,
        "precision": config.precision,
    }
    fingerprint = _fingerprint(config, resolved)

    out = OutputDir(config.output)
    out.precheck(config.mode)
    _refuse_output_inside_inputs(out.path, config.inputs)
    will_resume = config.mode == "resume" and out.run_json.is_file()
    refs = None if will_resume else enumerate_inputs(config.inputs, config.from_list, config.follow_symlinks,
                                                     config.limits)
    if refs is not None and not refs:
        logger.warning("no inputs found in %s", ", ".join(config.inputs) or str(config.from_list))
    # Engines first (the export may take a while on first use): a failure here leaves no output behind.
    pair = create_runners(model, options, backend, config.device, config.threads, config.precision,
                          config.batch_size)
    workers = default_workers() if config.workers is None else config.workers
    with pair.base, (pair.head or contextlib.nullcontext()), out:
        resumed = out.open_for_scan(config.mode)
        backend_label = pair.base.info.label
        if resumed:
            previous = out.read_run()
            _check_resume(previous.get("fingerprint", {}), fingerprint)
            run_id = previous["run_id"]
            attempts = int(previous.get("attempts", 0)) + 1
        else:
            run_id, attempts = uuid.uuid4().hex, 1
        info = {
            "run_id": run_id,
            "tool": "gcage_fast",
            "schema_version": SCHEMA_VERSION,
            "versions": _versions(),
            "model": {"id": spec.model_id, "sha256": spec.sha256, "path": str(model.path),
                      "class_names": list(spec.class_names), "has_head": model.head is not None},
            "engine": {"backend": backend_label, "base": asdict(pair.base.info),
                       "head": asdict(pair.head.info) if pair.head else None},
            "config": config.to_dict(),
            "fingerprint": fingerprint,
            "workers": workers,
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "attempts": attempts,
            "state": "planning",
        }
        out.write_run(info)  # first: a run killed while planning can still be resumed
        if (out.plan_dir / "plan.json").is_file():
            plan = out.read_plan_info()
        else:  # a new run, or one killed before its plan was complete: planning is deterministic
            if refs is None:
                refs = enumerate_inputs(config.inputs, config.from_list, config.follow_symlinks, config.limits)
            plan = out.write_plan(refs, config.shard_size, tag=run_id[:12])
            _Fault()("after_plan", 0)
        out.make_dirs()
        committed = out.committed_shards(plan["n_shards"])
        out.remove_uncommitted(set(committed))
        pending = [s for s in plan["shards"] if s["shard"] not in committed]
        info.update(state="running", plan={k: plan[k] for k in ("n_inputs", "shard_size", "n_shards")})
        out.write_run(info)
        if model.head is None:
            logger.warning("model %s has no G-CAGE head: verdicts come from the base detector alone", spec.model_id)
        ctx = {"model_id": spec.model_id, "model_sha256": spec.sha256, "backend": backend_label,
               "cam_method": options.cam_method, "cam_target": options.cam_target, "run_id": run_id,
               "threshold": resolved["threshold"]}
        scorer = make_scorer(config, spec, pair, resolved["threshold"], resolved["top_k"])
        if scorer.kernel_info is not None:
            info["kernels"] = scorer.kernel_info
            logger.info("patch kernels: %s", scorer.kernel_info["detail"])
            out.write_run(info)
        t_scan = time.perf_counter()
        limits = PoolLimits(timeout_s=config.limits.timeout_s, memory_bytes=config.limits.worker_memory_mb * 2**20,
                            recycle_rss_bytes=config.limits.worker_memory_mb * 2**20 // 2)
        with SupervisedPool(workers, prepare, prepare_failure, limits) as pool:
            stats = _run_shards(config, out, plan, pending, pool, scorer, ctx, resolved["top_k"], workers,
                                progress, t_scan)
        scan_s = time.perf_counter() - t_scan

        status, codes, verdicts = _totals(out, plan["n_shards"])
        wall = time.perf_counter() - t_start
        info.update(state="finished", finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    counts={"status": dict(status), "error_codes": dict(codes), "verdicts": dict(verdicts)},
                    last_attempt={"processed": stats["processed"], "patches": stats["patches"],
                                  "wall_s": round(wall, 3), "scan_s": round(scan_s, 3)})
        out.write_run(info)
    return ScanSummary(
        output=str(out.path), run_id=run_id, resumed=resumed, n_inputs=plan["n_inputs"], status=dict(status),
        error_codes=dict(codes), verdicts=dict(verdicts), processed=stats["processed"], patches=stats["patches"],
        wall_s=wall, scan_s=scan_s, shards_total=plan["n_shards"], shards_written=len(pending),
        shards_skipped=len(committed),
        model_id=spec.model_id, backend=backend_label, cam_method=options.cam_method,
    )


#: Failures that do not depend on what a file contains; a long run of one of them trips the circuit breaker.
_ENVIRONMENT_ERRORS = frozenset({"worker.crash", "worker.error"})


def _run_shards(config: ScanConfig, out: OutputDir, plan: dict[str, Any], pending: list[dict[str, Any]],
                pool: SupervisedPool, scorer: Scorer, ctx: dict[str, Any], top_k: int, workers: int,
                progress: Callable[[ScanProgress], None] | None, t_start: float) -> dict[str, int]:
    fault = _Fault()
    todo = sum(s["rows"] for s in pending)
    preview_max = PREVIEW_MAX if config.heatmaps == "png" else 0
    perturb = parse_perturbations(config.perturb)[0] if config.perturb else None

    stats = {"processed": 0, "patches": 0, "errors": 0}
    shard_rows: dict[int, list[tuple[PlanEntry, Prepared]]] = {}
    expected = {s["shard"]: s["rows"] for s in pending}
    batch: list[tuple[PlanEntry, Prepared]] = []  # scored together; never spans two shards
    scores: dict[int, ImageScore] = {}
    heatmaps_written: Counter = Counter()

    def flush(shard: int) -> None:
        if not batch:
            return
        for (entry, prep), score in zip(batch, scorer.score([p for _, p in batch])):
            if score is None:  # out of device memory even alone, at batch size 1
                prep.fail("engine.out_of_memory", "the engine ran out of device memory on this image's patches "
                          "at batch size 1")
                stats["errors"] += 1
                continue
            if score.heat is not None and prep.preview is not None:
                _write_heatmap(out, entry, prep, score, ctx["run_id"])
                heatmaps_written[shard] += 1
            # Decoded pixels are released as soon as they are scored: memory does not grow with the shard size.
            score.heat = prep.patches = prep.image = prep.preview = None
            scores[prep.index] = score
        batch.clear()

    window = max(2, 4 * workers)  # files in flight in the pool; as many again may wait, decoded, for the engine
    streak_code, streak = None, 0
    feed = InputFeed(out, pending, config, top_k, preview_max, perturb, full_image=uses_device_path(config))
    with Prefetch(pool.imap(feed, window), window) as results:
        for (shard, entry), prep in results:
            rows = shard_rows.setdefault(shard, [])
            rows.append((entry, prep))
            if prep.error_code in _ENVIRONMENT_ERRORS:
                streak = streak + 1 if prep.error_code == streak_code else 1
                streak_code = prep.error_code
                if streak >= config.max_consecutive_failures:
                    raise CircuitBreakerError(
                        f"{streak} consecutive files failed with {streak_code} ({prep.error_detail}); this points "
                        "at the environment rather than the inputs, so the scan stops here (fix it, then --resume)")
            else:
                streak_code, streak = None, 0
            if prep.status == "ok":
                batch.append((entry, prep))
                stats["patches"] += prep.n_patches
                if sum(p.n_patches for _, p in batch) >= config.batch_size:
                    flush(shard)
            elif prep.status == "error":
                stats["errors"] += 1
            stats["processed"] += 1
            fault("image", stats["processed"])
            if len(rows) == expected[shard]:
                flush(shard)
                _finish_shard(out, shard, shard_rows.pop(shard), scores, ctx, heatmaps_written.pop(shard, 0), fault)
            if progress is not None:
                progress(ScanProgress(stats["processed"], todo, plan["n_inputs"], stats["errors"], stats["patches"],
                                      time.perf_counter() - t_start))
    return stats


def _write_heatmap(out: OutputDir, entry: PlanEntry, prep: Prepared, score: ImageScore, run_id: str) -> None:
    label = f"{score.verdict} p_fake={score.p_fake:.3f}"
    img = render_overlay(prep.preview, prep.preview_scale, prep.boxes, score.heat, label=label)
    try:
        write_png_atomic(img, out.heatmap_path(entry.input_id), tag=run_id[:12])
    except OSError as exc:  # like a part that cannot be written: the run stops, --resume redoes the shard
        raise OutputError(f"cannot write a heatmap to {out.heatmaps_dir}: {exc.strerror or exc}") from None


def _finish_shard(out: OutputDir, shard: int, items: list[tuple[PlanEntry, Prepared]], scores: dict[int, ImageScore],
                  ctx: dict[str, Any], n_heat: int, fault: _Fault) -> None:
    shard_ctx = dict(ctx, shard=shard)
    rows = [_row(entry, prep, scores.pop(prep.index, None), shard_ctx) for entry, prep in items]
    commit_shard(out, shard, rows, run_id=ctx["run_id"], model_sha256=ctx["model_sha256"], heatmaps=n_heat,
                 fault=fault)
