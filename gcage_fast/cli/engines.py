"""``gcage-fast build-engine``: TensorRT engines from a model's exported ONNX graphs.

A thin click layer over :func:`gcage_fast.export.tensorrt_build.build_engine`; library errors become one
``Error: ...`` line and exit code 1, also when the command is run on its own (outside the ``gcage-fast`` group).
"""

from __future__ import annotations

from typing import Any

import click

from gcage_fast.cli.common import command, emit_json, json_flag, model_option, setup_logging
from gcage_fast.precision import GRAPH_PRECISIONS

__all__ = ["build_engine"]


@command("build-engine")
@model_option()
@click.option("--precision", type=click.Choice(GRAPH_PRECISIONS), default="fp32", show_default=True,
              help="Engine precision. fp16/int8 use the fp16 or Q/DQ (int8) ONNX graph of the export step; on "
                   "TensorRT 10 an fp32 graph can also be built as fp16 with the builder flag.")
@click.option("--calibration", type=click.Path(file_okay=False, path_type=str),
              help="int8: directory of real images to calibrate the Q/DQ graph on.  [default: the bundled samples]")
@click.option("--min-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Smallest batch the engine accepts.")
@click.option("--opt-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Batch TensorRT tunes its kernels for (use the scan's --batch-size).")
@click.option("--max-batch", type=click.IntRange(min=1), default=256, show_default=True,
              help="Largest batch the engine accepts.")
@click.option("--workspace", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Builder workspace memory limit in MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=str),
              help="Timing cache file, loaded before and saved after the build (speeds up rebuilds).  "
                   "[default: one per TensorRT version and GPU in the cache dir]")
@click.option("--graph", type=click.Choice(["base", "head", "both"]), default="both", show_default=True,
              help="Which graph(s) to build; `both` builds the base only for a model without a head.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=str),
              help="Write <model>-<graph>-<precision>.engine (+ .json) here.  [default: the engine cache]")
@click.option("--force", is_flag=True, help="Build even when a verified engine with the same key exists.")
@json_flag("Print the engines' metadata as JSON.")
def build_engine(model: str | None, precision: str, calibration: str | None, min_batch: int, opt_batch: int,
                 max_batch: int, workspace: int, timing_cache: str | None, graph: str, output: str | None,
                 force: bool, as_json: bool) -> None:
    """Build TensorRT engines from a model's ONNX graphs (exported first if not cached).

    Needs TensorRT (pip install 'gcage-fast[tensorrt]', libraries from NVIDIA's index https://pypi.nvidia.com)
    and a CUDA GPU. An engine runs only on the TensorRT version and GPU architecture that built it; engines are
    cached by ONNX sha256, TensorRT version, GPU, precision, batch profile and workspace, each with a metadata
    file whose sha256 is checked before the engine is loaded.

    \b
    Example:
      gcage-fast build-engine --precision fp16 --opt-batch 64 --max-batch 256
      gcage-fast build-engine --model models/susy --graph base -o engines/ --timing-cache trt.cache --json
      gcage-fast build-engine --precision int8 --calibration my-images/
    """
    records = _build(model, precision, min_batch, opt_batch, max_batch, workspace, timing_cache, graph, output, force,
                     calibration)
    if as_json:
        emit_json([{"graph": g, "engine": str(r.engine_path), "built": r.built, **r.metadata} for g, r in records])
        return
    for g, r in records:
        what = f"Built in {r.metadata.get('build_seconds', 0):.1f} s" if r.built else "Reused (verified)"
        click.echo(f"{what}: {g} engine {r.engine_path} ({r.key.describe()}, "
                   f"{r.metadata['engine_bytes'] / 2**20:.1f} MiB)")


def _build(model: str | None, precision: str, min_batch: int, opt_batch: int, max_batch: int, workspace: int,
           timing_cache: str | None, graph: str, output: str | None, force: bool,
           calibration: str | None = None) -> list[tuple[str, Any]]:
    """The (graph, build record) of each engine asked for, built or reused: checks what is cheap to check
    (batch order, TensorRT, GPU) before the export."""
    from gcage_fast.errors import ConfigError
    from gcage_fast.export.engine_cache import current_gpu
    from gcage_fast.export.tensorrt_build import require_tensorrt, tensorrt_major

    if not min_batch <= opt_batch <= max_batch:
        raise ConfigError(f"batch sizes must satisfy --min-batch <= --opt-batch <= --max-batch "
                          f"(got {min_batch}/{opt_batch}/{max_batch})")
    # the cheap checks first: no export (minutes on a CPU) for a machine that cannot build an engine
    trt = require_tensorrt()
    tensorrt_major(trt)
    gpu = current_gpu()

    from gcage_fast.export.cache import cached_export
    from gcage_fast.export.tensorrt_build import build_engine as build
    from gcage_fast.export.to_onnx import ExportOptions
    from gcage_fast.models.registry import load_model

    setup_logging(False)
    loaded = load_model(model)
    # precision-specific graphs: fp16 (strongly typed), int8 (symmetric Q/DQ, the form TensorRT parses)
    options = ExportOptions.for_model(loaded, precision=precision, calibration=calibration, int8_target="tensorrt")
    graphs = ["base", "head"] if graph == "both" else [graph]
    if loaded.head is None:
        if graph == "head":
            raise ConfigError(f"model {loaded.spec.model_id} has no head graph; use --graph base")
        graphs = ["base"]
    entry = cached_export(loaded, options)
    records = []
    for g in graphs:
        records.append((g, build(entry / f"{g}.onnx", output, precision=precision, min_batch=min_batch,
                                 opt_batch=opt_batch, max_batch=max_batch, workspace_bytes=workspace << 20,
                                 timing_cache_path=timing_cache, name=f"{loaded.spec.name}-{g}", force=force,
                                 trt=trt, gpu=gpu)))
    return records
