"""A scan's setup and its record, around the shard steps: what any runner does once per run, on the machine that
owns the output directory.

    resolve(config)                      validate, load the model, resolve backend, CAM and thresholds
    inputs(config, out)                  check the output, enumerate the inputs (unless resuming)
    open_run(setup, out, refs, pair)     lock, run.json, the frozen plan, the shards still to do, the RunContext
    finish(run, ...)                     totals, run.json "finished" (or "partial"), the ScanSummary

run.json is written first of all (state "planning"), so a run killed while planning can still be resumed; the
fingerprint (everything that changes rows) must match for a resume.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gcage_fast.version import __version__
from gcage_fast.config import ScanConfig
from gcage_fast.errors import ConfigError, OutputError
from gcage_fast.evidence.collect import options_for
from gcage_fast.hashing import sha256_file
from gcage_fast.ingest.filters import PathFilter
from gcage_fast.ingest.sources import Discovery, display_path, discover_inputs, discover_table
from gcage_fast.ingest.tables import check_keep_columns, read_table
from gcage_fast.log import logger
from gcage_fast.output.outdir import OutputDir, committed_rows, marker_stem, shard_rows
from gcage_fast.output.schema import SCHEMA_VERSION
from gcage_fast.scanning import changes, known
from gcage_fast.scanning.context import RunContext, ShardSpec
from gcage_fast.scanning.summary import ScanSummary, totals
from gcage_fast.scoring.factory import uses_device_path

if TYPE_CHECKING:
    from gcage_fast.engine.factory import RunnerPair
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import LoadedModel

__all__ = ["Run", "Setup", "check_evidence", "engines", "finish", "fingerprint", "inputs", "open_run", "resolve",
           "select_shards"]


@dataclass(frozen=True)
class Setup:
    """What a scan resolves before it touches the output: the model, the engine options, the settings."""

    config: ScanConfig
    model: LoadedModel
    backend: str  # resolved: ort, torch or tensorrt
    options: ExportOptions
    resolved: dict[str, Any]  # the settings taken from the model or chosen automatically (run.json's fingerprint)
    fingerprint: dict[str, Any]


def resolve(config: ScanConfig) -> Setup:
    """Validate ``config``, load its model and resolve every setting a row depends on."""
    from gcage_fast.engine.factory import check_device, graph_precision, resolve_backend
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    config.validate()
    check_keep_columns(config.keep_columns)
    check_evidence(config)
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
    return Setup(config, model, backend, options, resolved, fingerprint(config, resolved))


def engines(setup: Setup) -> RunnerPair:
    """The run's base and head runners, from its resolved settings (ONNX Runtime and TensorRT graphs come from the
    export cache, exported on first use)."""
    from gcage_fast.engine.factory import create_runners

    c = setup.config
    return create_runners(setup.model, setup.options, setup.backend, c.device, c.threads, c.precision, c.batch_size)


def fingerprint(config: ScanConfig, resolved: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes rows; a resume must match it exactly."""
    return {
        "inputs": list(config.inputs),
        "from_list": config.from_list,
        "follow_symlinks": config.follow_symlinks,
        "shard_size": config.shard_size,
        "small_images": config.small_images,
        "perturb": config.perturb,
        "limits": asdict(config.limits) | {"formats": list(config.limits.formats)},
        "evidence": _evidence_fingerprint(config),
        # only when not the default, so a run.json written before --grid existed (floor) still resumes
        **({"grid": config.grid} if config.grid != "floor" else {}),
        # likewise only when not the defaults, so run.json files written before these options still resume
        **({"filters": path_filter(config).to_dict()} if not path_filter(config).is_default else {}),
        **({"heatmaps": heatmap_settings(config)} if config.heatmaps != "none" else {}),
        # the known set (--skip-known) by its sha256 and the old outputs' run_ids; only when given, likewise
        **({"skip_known": known.fingerprint(config)} if config.skip_known else {}),
        **({"input_format": config.input_format} if config.input_format != "auto" else {}),
        **({"from_table": {"path": config.from_table, "path_column": config.path_column,
                           "keep_columns": list(config.keep_columns)}} if config.from_table is not None else {}),
        **resolved,
    }


def path_filter(config: ScanConfig) -> PathFilter:
    """What walking directories and archives keeps as inputs (``--include``, ``--exclude``, the junk list)."""
    return PathFilter(config.include, config.exclude, config.default_excludes)


def heatmap_settings(config: ScanConfig) -> dict[str, Any]:
    """The overlay settings a resume must keep: format, quality (jpeg and webp only) and which rows get one."""
    quality = {"quality": config.heatmap_quality} if config.heatmaps in ("jpeg", "webp") else {}
    return {"format": config.heatmaps, **quality, "for": config.heatmaps_for}


def _evidence_fingerprint(config: ScanConfig) -> dict[str, Any] | None:
    """The evidence settings rows depend on; the trust anchors by the sha256 of their content."""
    options = options_for(config)
    if options is None:
        return {"verdict_policy": config.verdict_policy, "read": False}
    anchors = options.trust_anchors
    return {"verdict_policy": config.verdict_policy, "read": True, "watermarks": list(options.watermarks),
            "c2pa_trust_anchors_sha256": None if anchors is None else sha256_file(anchors)}


def check_evidence(config: ScanConfig) -> None:
    """Refuse unreadable trust anchors and missing watermark support before anything is written. Only anchors the
    user names are checked here (that loads the C2PA library in this process); the shipped list is tested."""
    options = options_for(config)
    if options is None:
        return
    if options.c2pa and config.c2pa_trust_anchors is not None:
        from gcage_fast.evidence.c2pa_manifest import check_trust_anchors

        check_trust_anchors(config.c2pa_trust_anchors)
    if options.watermarks:
        from gcage_fast.evidence.watermark import check_watermark_support

        check_watermark_support()


def inputs(config: ScanConfig, out: OutputDir) -> Discovery | None:
    """Check that ``out`` can take this scan (changing nothing on disk), then enumerate the inputs; None when an
    existing run will be resumed (its plan is on disk)."""
    out.precheck(config.mode)
    if not out.remote:
        _refuse_output_inside_inputs(out.path, config.inputs)
    if config.mode == "resume" and out.has_run():
        return None
    found = _discover(config)
    if not found.refs:
        named = ", ".join(config.inputs) or str(config.from_list if config.from_table is None else config.from_table)
        logger.warning("no inputs found in %s", named)
    return found


def _discover(config: ScanConfig) -> Discovery:
    if config.from_table is not None:
        table = read_table(config.from_table, config.path_column or "", config.keep_columns)
        return discover_table(table.paths, table.values, table.kept, config.follow_symlinks, config.limits,
                              path_filter(config), own_output=config.output, input_format=config.input_format)
    return discover_inputs(config.inputs, config.from_list, config.follow_symlinks, config.limits,
                           path_filter(config), own_output=config.output, input_format=config.input_format)


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


@dataclass
class Run:
    """A run open for writing: its run.json (``info``), its plan, which shards are committed and which are not,
    and the :class:`RunContext` the shard steps get."""

    out: OutputDir
    info: dict[str, Any]
    plan: dict[str, Any]
    resumed: bool
    committed: dict[int, list[dict[str, Any]]]  # shards committed completely: their markers
    pending: list[ShardSpec]  # the rest, each from the first input not committed (``start``)
    ctx: RunContext
    setup: Setup = field(repr=False)
    committed_inputs: int = 0  # inputs committed before this attempt (whole shards and pieces)
    redone: int | None = None  # inputs the previous attempt scored and did not commit (None: not known, it was killed)
    left: list[int] = field(default_factory=list)  # shards not committed that a --shard-index selection leaves out

    def record(self, **fields: Any) -> None:
        """Add ``fields`` to run.json and write it."""
        self.info.update(fields)
        self.out.write_run(self.info)


def open_run(setup: Setup, out: OutputDir, found: Discovery | None, pair: RunnerPair, workers: int,
             fault: Callable[[str, int], None] | None = None) -> Run:
    """Lock ``out``, start or resume its run, freeze the plan (once) and clear what no marker covers.
    ``found`` is what :func:`inputs` enumerated (None when resuming). ``fault`` is the GCAGE_FAULT_AT test hook
    (phase ``after_plan``)."""
    config, model = setup.config, setup.model
    spec = model.spec
    resumed = out.open_for_scan(config.mode)
    backend_label = pair.base.info.label
    previous: dict[str, Any] = {}
    if resumed:
        previous = out.read_run()
        if previous.get("schema_version") != SCHEMA_VERSION:
            raise ConfigError(f"cannot resume: {out.where} was written with output schema "
                              f"v{previous.get('schema_version')} and this version writes v{SCHEMA_VERSION}; "
                              "scan into a new directory, or --overwrite")
        _check_resume(previous.get("fingerprint", {}), setup.fingerprint)
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
        "fingerprint": setup.fingerprint,
        "workers": workers,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "attempts": attempts,
        "state": "planning",
        # found files that are not inputs (no rows), by reason; counted when the plan was made
        "filtered": found.filtered if found is not None else previous.get("filtered", {}),
    }
    out.write_run(info)  # first: a run killed while planning can still be resumed
    known.freeze(config, out, setup.fingerprint.get("skip_known"), tag=run_id[:12])  # before the plan
    if out.has_plan():
        plan = out.read_plan_info()
        if resumed:  # the plan is followed as it is: say what was added or removed since
            info["since_plan"] = changes.since_plan(config, out, plan, lambda: _discover(config))
    else:  # a new run, or one killed before its plan was complete: planning is deterministic
        if found is None:
            found = _discover(config)
            info["filtered"] = found.filtered
        plan = out.write_plan(found.refs, config.shard_size, tag=run_id[:12], kept=found.kept)
        if fault is not None:
            fault("after_plan", 0)
    kept = found.kept if found is not None else out.plan_kept(plan)
    if kept:  # verify accepts exactly these columns after the standard ones
        info["kept_columns"] = [{"name": f.name, "type": str(f.type)} for f in kept]
    out.make_dirs()
    rows = shard_rows(plan)
    parts = out.committed_parts(rows)
    out.remove_uncommitted({marker_stem(m) for chain in parts.values() for m in chain})
    done = {shard: committed_rows(chain) for shard, chain in parts.items()}
    committed = {shard: parts[shard] for shard, n in done.items() if n == rows[shard]}
    pending = [replace(ShardSpec.from_plan(s), start=done.get(s["shard"], 0)) for s in plan["shards"]
               if s["shard"] not in committed]
    pending, left = select_shards(pending, config.shard_index, config.num_shards)
    if config.num_shards is not None:
        info["selection"] = {"shard_index": config.shard_index, "num_shards": config.num_shards,
                             "shards": len(pending), "left": len(left)}
    committed_inputs = sum(done.values())
    redone = _redone(previous) if resumed else 0
    if resumed:
        info["resumed_from"] = {"committed": committed_inputs, "redone": redone}
        logger.info("resuming: %d of %d inputs are committed, %d to do%s", committed_inputs, plan["n_inputs"],
                    plan["n_inputs"] - committed_inputs,
                    f" ({redone} of them scored by the interrupted attempt and redone)" if redone else
                    " (the previous attempt was killed: what it scored after its last commit is redone)"
                    if redone is None else "")
    info.update(state="running", plan={k: plan[k] for k in ("n_inputs", "shard_size", "n_shards")})
    out.write_run(info)
    if model.head is None:
        logger.warning("model %s has no G-CAGE head: verdicts come from the base detector alone", spec.model_id)
    r = setup.resolved
    ctx = RunContext(config=config, output=out.where, run_id=run_id, model_id=spec.model_id,
                     model_sha256=spec.sha256, backend=backend_label, cam_method=setup.options.cam_method,
                     cam_target=setup.options.cam_target, threshold=r["threshold"], top_k=r["top_k"],
                     full_image=uses_device_path(config), class_names=tuple(spec.class_names), kept=tuple(kept))
    return Run(out, info, plan, resumed, committed, pending, ctx, setup, committed_inputs, redone,
               [s.shard for s in left])


def select_shards(pending: list[ShardSpec], shard_index: int | None,
                  num_shards: int | None) -> tuple[list[ShardSpec], list[ShardSpec]]:
    """``--shard-index I --num-shards K``: the shards of ``pending`` with shard % K == I, and the rest (left to the
    other runs of the plan). Without a selection, all of them and none."""
    if num_shards is None:
        return pending, []
    return ([s for s in pending if s.shard % num_shards == shard_index],
            [s for s in pending if s.shard % num_shards != shard_index])


def _redone(previous: dict[str, Any]) -> int | None:
    """How many inputs the attempt that wrote ``previous`` (run.json) scored and did not commit: recorded when it
    was interrupted or stopped by an error; not known when it was killed (its state still says running)."""
    if previous.get("state") in ("interrupted", "stopped"):
        return int(previous.get("last_attempt", {}).get("lost", 0))
    return 0 if previous.get("state") == "finished" else None


def finish(run: Run, processed: int, patches: int, t_start: float, scan_s: float) -> ScanSummary:
    """Record the finished run in run.json and sum it up. ``processed`` and ``patches`` count this attempt;
    ``t_start`` is when the command started (``time.perf_counter()``)."""
    n_shards = run.plan["n_shards"]
    status, codes, verdicts, sources, skipped = totals(run.out, shard_rows(run.plan))
    wall_s = time.perf_counter() - t_start
    state = "partial" if run.left else "finished"  # partial: a --shard-index selection left shards to other runs
    run.record(state=state, finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               counts={"status": dict(status), "error_codes": dict(codes), "verdicts": dict(verdicts),
                       "verdict_sources": dict(sources)},
               last_attempt={"processed": processed, "patches": patches, "wall_s": round(wall_s, 3),
                             "scan_s": round(scan_s, 3)})
    ctx = run.ctx
    return ScanSummary(
        output=run.out.where, run_id=ctx.run_id, resumed=run.resumed, n_inputs=run.plan["n_inputs"],
        status=dict(status), error_codes=dict(codes), verdicts=dict(verdicts), processed=processed, patches=patches,
        wall_s=wall_s, scan_s=scan_s, shards_total=n_shards, shards_written=len(run.pending),
        shards_skipped=len(run.committed), model_id=ctx.model_id, backend=ctx.backend, cam_method=ctx.cam_method,
        verdict_sources=dict(sources), filtered=dict(run.info.get("filtered", {})),
        skipped_codes=dict(skipped),
        committed_before=run.committed_inputs, redone=run.redone if run.resumed else 0,
        since_plan=run.info.get("since_plan"), state=state, shards_left=len(run.left),
        selection=({"shard_index": ctx.config.shard_index, "num_shards": ctx.config.num_shards}
                   if ctx.config.num_shards is not None else None),
    )
