"""``gcage-fast scan``: images in, one Parquet row per input out (:func:`gcage_fast.scanning.local.scan`)."""

from __future__ import annotations

from typing import Any

import click

from gcage_fast.cli.common import (LIMIT_FIELDS, command, emit_json, engine_options, evidence_options, from_options,
                                   grid_option, json_flag, limit_options, model_option, setup_logging, throughput_options)
from gcage_fast.cli.progress import Progress
from gcage_fast.config import (CAM_METHODS, HEATMAP_FORMATS, HEATMAPS_FOR, INPUT_FORMATS, KERNEL_IMPLS, RUNNERS,
                               runner_options_problem, table_options_problem)
from gcage_fast.scoring.aggregate import VERDICTS

__all__ = ["scan"]


def _verdict_order(item: tuple[str, int]) -> tuple[int, str]:
    """fake, uncertain, real (then anything else by name)."""
    return (VERDICTS.index(item[0]) if item[0] in VERDICTS else len(VERDICTS), item[0])


def _summary_text(s: Any, skipped: dict[str, int] | None = None) -> str:
    """The summary a terminal shows; the codes of the skipped rows (``skipped``, by default ``s.skipped_codes``)
    are listed on their own line, apart from the errors."""
    lines = [
        f"Scanned {s.n_inputs} inputs into {s.output}" + (" (resumed)" if s.resumed else ""),
        *([_partial_line(s)] if s.state == "partial" else []),
        "  status:   " + (", ".join(f"{k} {v}" for k, v in sorted(s.status.items())) or "none"),
        "  verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(s.verdicts.items(), key=_verdict_order))
                          or "none"),
    ]
    if s.resumed:
        redone = ("not known (the previous attempt was killed)" if s.redone is None else str(s.redone))
        lines.append(f"  resumed:  {s.committed_before} inputs were committed before; redone (scored by the "
                     f"interrupted attempt, not committed): {redone}")
    from gcage_fast.scanning.changes import summary_line

    since = summary_line(s.since_plan, s.output)
    if since:
        lines.append(f"  {since}")
    if s.verdict_sources:
        lines.append("  decided by: " + ", ".join(f"{k} {v}" for k, v in sorted(s.verdict_sources.items())))
    skipped = {k: v for k, v in (s.skipped_codes if skipped is None else skipped).items() if v}
    errors = {k: n - skipped.get(k, 0) for k, n in s.error_codes.items() if n > skipped.get(k, 0)}
    if errors:
        lines.append("  errors:   " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    if skipped:
        lines.append("  skipped:  " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    if s.filtered:
        lines.append("  not inputs (no rows): " + ", ".join(f"{k} {v}" for k, v in sorted(s.filtered.items())))
    lines.append(f"  this run: {s.processed} images, {s.patches} patches in {s.scan_s:.1f} s "
                 f"({s.images_per_s:.1f} img/s, {s.patches_per_s:.1f} patches/s; {s.wall_s:.1f} s in all); "
                 f"shards written {s.shards_written}, already done {s.shards_skipped}")
    lines.append(f"  model {s.model_id}, backend {s.backend}, CAM {s.cam_method}")
    return "\n".join(lines)


def _partial_line(s: Any) -> str:
    """What a run that left plan shards to other runs (--shard-index/--num-shards) did not do."""
    sel = s.selection or {}
    return (f"  partial:  {s.shards_left} of {s.shards_total} shards are left to the other runs of this plan (this "
            f"run: shard % {sel.get('num_shards')} == {sel.get('shard_index')}); run the other --shard-index values "
            "into the same output with --resume, then verify it")


@command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output directory (a Parquet dataset).")
@click.option("--from-list", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              help="File with one path per line ('-' reads standard input).")
@click.option("--from-table", type=click.Path(allow_dash=False, path_type=str), metavar="FILE",
              help="A table of inputs, one per row (.parquet, .csv with a header line, .jsonl), in table order; "
              "instead of INPUTS and --from-list.  Needs --path-column.")
@click.option("--path-column", metavar="COL", help="The --from-table column of local paths (text or bytes).")
@click.option("--keep-columns", metavar="A,B", default="",
              help="--from-table columns (comma-separated) copied into each result row of that table row, under "
              "their own names and with the table's types (e.g. user_id,upload_id).")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default="auto", show_default=True,
              help="How archives are read: files = every member is an input (what auto does); webdataset = every "
              "sample is one (the members sharing a key: dir/key.jpg, dir/key.json, ...), its image scored, the "
              "other members kept in the row's sidecar column as JSON.")
@model_option("Model name (see `gcage-fast models`) or model directory.  [default: the bundled model]")
@engine_options(
    backend_help="auto = on cpu: ONNX Runtime when installed, else eager torch; on cuda: TensorRT, then ONNX "
    "Runtime's CUDA provider, then torch.  Every row records what ran.",
    device_help="cuda without a visible GPU is an error, never a CPU run.",
    calibration_help="int8: directory of images like the ones you scan, to calibrate the int8 graphs.  "
    "[default: the bundled samples]")
@click.option("--kernel-impl", type=click.Choice(KERNEL_IMPLS),
              help="Patch kernels (selection, gather, CAM fusion) on the engine's device: auto picks Triton, then "
              "CUDA C, then torch on a GPU.  Naming one on --device cpu runs that path on CPU tensors (triton needs "
              "TRITON_INTERPRET=1 there).  [default: $GCAGE_KERNEL_IMPL, else auto]")
@click.option("--top-k", type=click.IntRange(min=1), help="Patches per image, by contrast.  [default: model's, 5]")
@grid_option
@throughput_options(batch_help="Patches per engine call.",
                    workers_help="Decode processes (0 = in the main process).  [default: cores - 1]")
@click.option("--cam", type=click.Choice(CAM_METHODS), help="CAM method.  [default: model's, gradcam]")
@click.option("--cam-target", help="What the CAM explains: fake, pred, class:NAME, logit:NAME, logit:pred.  "
              "[default: model's, fake]")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Verdict threshold.  [default: model's]")
@click.option("--heatmaps", type=click.Choice(HEATMAP_FORMATS), default="none", show_default=True,
              help="Write an overlay per scored image, OUT/heatmaps/xx/<input_id>.png|.jpg|.webp: png is lossless, "
              "jpeg and webp are several times smaller (README: Heatmaps).")
@click.option("--heatmap-quality", type=click.IntRange(1, 100), default=85, show_default=True,
              help="Quality of jpeg and webp overlays.")
@click.option("--heatmaps-for", type=click.Choice(HEATMAPS_FOR), default="all", show_default=True,
              help="Which scored rows get an overlay, by verdict: fake = fake rows only, uncertain = fake and "
              "uncertain rows.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inputs per Parquet part (the unit of commit and resume).")
@click.option("--commit-every", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="Also commit a shard's scored inputs every SECONDS, so an interrupt loses at most about that "
              "much work (0: at every batch).  Rows are the same whatever the value.")
@click.option("--shard-index", type=click.IntRange(min=0), metavar="I",
              help="Scan only the plan shards with shard % --num-shards == I, to split one plan over several runs "
              "or machines (each with --resume, one after another into the same OUTPUT).  Not part of the settings "
              "--resume compares; a run that leaves shards to the others ends partial.")
@click.option("--num-shards", type=click.IntRange(min=1), metavar="K", help="See --shard-index.")
@click.option("--runner", type=click.Choice(RUNNERS), default="local", show_default=True,
              help="Where the scan runs: local = this machine; ray = a Ray cluster (pip install 'gcage-fast[ray]'): "
              "one Ray row per plan shard, decode tasks on its CPUs, engine actors on its GPUs (README: Distributed "
              "scans).  Same rows either way.")
@click.option("--ray-address", metavar="ADDR",
              help="--runner ray: the cluster to join (HOST:PORT of its head, or auto).  [default: $RAY_ADDRESS, "
              "else a Ray instance started in this process]")
@click.option("--ray-actors", type=click.IntRange(min=1), metavar="N",
              help="--runner ray: engine actors.  [default: one per GPU of the cluster when they take GPUs, else 1]")
@click.option("--ray-actor-gpus", type=click.FloatRange(min=0), metavar="G",
              help="--runner ray: GPUs each engine actor takes; Ray places the actors on nodes that have them "
              "(a CPU scan with 1 runs its engines on the GPU nodes).  [default: 1 with --device cuda, else 0]")
@click.option("--resume", is_flag=True, help="Continue an interrupted scan of OUTPUT.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier scan in OUTPUT (not with --resume).")
@click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links inside directories.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Only inputs that match (repeatable; any one suffices), of what directories and archives hold.  "
              "Matched against the path below the input directory, or an archive member's name: * and ? stay "
              "within a name, ** spans directories; a glob without / matches a name at any depth, a glob that "
              "matches a directory matches all under it.  Files named explicitly are always scanned.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="No inputs that match (repeatable; same globs as --include; wins over it).")
@click.option("--no-default-excludes", "default_excludes", is_flag=True, flag_value=False, default=True,
              help="Also scan the junk skipped by default: ._* (AppleDouble), __MACOSX/, .DS_Store, Thumbs.db, "
              "desktop.ini.")
@click.option("--skip-known", multiple=True, metavar="OUT_OLD", type=click.Path(file_okay=False, path_type=str),
              help="An earlier output (repeatable): inputs whose sha256 it already scored are not scanned again; "
              "their row is status skipped, error_code known.sha256, and points at the old row.")
@click.option("--small-images", type=click.Choice(["pad", "skip"]), default="pad", show_default=True,
              help="Images with a side < 224: edge-pad (padded = true) or skip.")
@evidence_options
@limit_options
@click.option("--max-consecutive-failures", type=click.IntRange(min=1), default=50, show_default=True,
              help="Stop when this many files in a row fail with worker.crash/worker.error (a broken environment).")
@click.option("--log-every", type=click.FloatRange(min=0), default=30.0, show_default=True, metavar="SECONDS",
              help="Without a terminal (nohup, cron, containers): one progress line on stderr every SECONDS "
              "(0: none).  On a terminal the progress line refreshes in place.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: progress and log lines on stderr as one JSON object each, for log collectors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, no summary (errors still go to stderr).")
@json_flag("Print the summary as JSON on stdout.")
def scan(resume: bool, overwrite: bool, quiet: bool, as_json: bool, log_every: float, log_format: str,
         **options: Any) -> None:
    """Scan images (files, directories, path lists) and write one Parquet row per input.

    Directories are walked recursively in byte order of their paths; formats are detected from content.
    Archives (tar, tar.gz, tar.bz2, tar.xz, zip) are read in memory, never extracted: each member gets a row.
    A file that cannot be scanned gets a row with status error or skipped (never a crash, never lost).
    Exit status 0 means the run completed, whatever the verdicts and error rows.

    What directories and archives hold is filtered first: well-known junk (._*, __MACOSX/, .DS_Store,
    Thumbs.db, desktop.ini), --exclude and --include globs, and earlier gcage-fast output directories (skipped
    whole, with a notice) are not inputs: no rows, only counts by reason in the summary and run.json.

    \b
    Example:
      gcage-fast scan photos/ uploads/batch1 -o results/
      find /data -name '*.jpg' | gcage-fast scan --from-list - -o results/ --heatmaps png
      gcage-fast scan uploads.tar.gz batch.zip -o results/
      gcage-fast scan shards/ -o results/ --input-format webdataset   # one row per sample, sidecars kept
      gcage-fast scan --from-table uploads.parquet --path-column path --keep-columns user_id,upload_id -o results/
      gcage-fast scan photos/ -o results/ --resume        # after an interruption
      gcage-fast scan photos/ -o results/ --resume --runner ray --ray-address head:6379 --device cuda
      gcage-fast scan photos/ -o results/ --device cuda --precision fp16
      gcage-fast scan photos/ -o results/ --verdict-policy model-only --watermarks sd
      gcage-fast scan photos/ -o results/ --grid cover    # also rank the border patches
      gcage-fast scan photos/ -o results/ --include '*.jpg' --include '*.png' --exclude 'drafts/**'
      gcage-fast scan photos/ -o results/ --heatmaps webp --heatmaps-for fake
    """
    from gcage_fast.config import Limits, ScanConfig
    from gcage_fast.scanning.local import scan as run_scan

    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other: --resume continues the scan in "
                               "OUTPUT, --overwrite deletes it and starts again; give one")
    options["keep_columns"] = tuple(c.strip() for c in options["keep_columns"].split(",") if c.strip())
    problem = table_options_problem(options["inputs"], options["from_list"], options["from_table"],
                                    options["path_column"], options["keep_columns"])
    if problem is not None:
        raise click.UsageError(problem)
    if not options["inputs"] and options["from_list"] is None and options["from_table"] is None:
        raise click.UsageError("no inputs: name files, directories or archives to scan (INPUTS), or give "
                               "--from-list FILE ('-' for standard input)")
    problem = runner_options_problem(options["runner"], options["ray_address"], options["ray_actors"],
                                     options["ray_actor_gpus"], options["shard_index"], options["num_shards"],
                                     options["workers"])
    if problem is not None:
        raise click.UsageError(problem)
    setup_logging(quiet, log_format)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    limits = from_options(Limits, {name: options.pop(name) for name in LIMIT_FIELDS}, LIMIT_FIELDS)
    config = from_options(ScanConfig, options, mode=mode, limits=limits)
    progress = Progress(quiet=quiet, log_every=log_every, log_format=log_format)
    try:
        summary = run_scan(config, progress)
    finally:
        progress.close()
    if as_json:
        emit_json(summary.to_dict())
    elif not quiet:
        click.echo(_summary_text(summary))
