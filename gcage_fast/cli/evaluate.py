"""``gcage-fast eval``: detection metrics of a labelled image set, or (``--cam-metrics``) the quality of CAM
methods on it (:mod:`gcage_fast.evaluation.evaluate`, :mod:`gcage_fast.explain.cam_metrics`)."""

from __future__ import annotations

import click

from gcage_fast.cli.common import (command, engine_options, evidence_options, grid_option, int_list, model_option,
                                   setup_logging,
                                   throughput_options)

__all__ = ["eval_cmd"]


def _percent_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= 99 for v in values):
        raise click.BadParameter(f"expected a comma list of percentages between 1 and 99, got {text!r}",
                                 param_hint=option)
    return values


@command("eval")
@click.argument("data", type=click.Path(file_okay=False, path_type=str))
@model_option()
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True,
              help="Which content-hash split of DATA to score.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=str),
              help="CSV with relpath,label[,generator] (default: DATA/manifest.csv when present).")
@click.option("--perturb", default="none", show_default=True,
              help="Comma list: none, jpeg:Q, blur:SIGMA, noise:STD, resize:SCALE, crop:SIZE, grayscale.")
@click.option("--top-k", "top_k", help="Comma list of patches per image to sweep, e.g. 1,3,5,9.  [default: model's]")
@grid_option
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), help="Write every number here.")
@engine_options(calibration_help="int8: directory of calibration images (never the evaluated split).  "
                "[default: bundled samples]")
@throughput_options(workers_help="Decode processes.  [default: cores - 1]")
@evidence_options
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
             grid: str, json_path: str | None, backend: str, device: str, precision: str, calibration: str | None,
             batch_size: int, workers: int | None, threads: int | None, cam_metrics_methods: str | None,
             max_images: int | None, keep_top: str, road_percentiles: str, quiet: bool, evidence: bool,
             verdict_policy: str, c2pa_trust_anchors: str | None, watermarks: str) -> None:
    """Score a labelled image set with the scan pipeline and report detection metrics.

    DATA is a folder with manifest.csv (relpath,label[,generator]; only the files it lists are scored), ai/ and/or
    real/ folders, or 0_real/ and/or 1_fake/ folders (only image files are scored: an image extension or image
    content; sidecars, README/SOURCE.md and hidden files are skipped). Reports, for the G-CAGE verdict and for the
    base detector alone: AP, ROC-AUC, accuracy (overall, real, fake), precision, recall and F1 at the model's
    threshold, the threshold that maximises balanced accuracy, and expected calibration error; per generator when
    the data names generators (unless that group is the whole set), per perturbation and per top-k. The fused
    verdict (model plus provenance evidence, --verdict-policy) is reported as the variant "fused", with how many
    real and AI images each evidence kind decided. A set of AI images only reports the detection rate (share with
    verdict fake), a set of real images only the false-positive rate; the metrics that need both classes are left
    out (also for a generator group of one class in a set of both; its row says its "mode"). With a model that has
    an uncertain band, the metrics stay at the threshold (uncertain counts as not fake) and a second table gives the
    share of uncertain verdicts and the accuracy, FPR and TPR of the decided rows. Prints a markdown table; --json
    writes every number ("mode": binary, detection_rate or fpr).

    \b
    Example:
      gcage-fast eval ../shared/data/faces --split test --perturb none,jpeg:75,blur:1,grayscale --top-k 1,5
      gcage-fast eval my-labelled-set/ --model models/susy --json eval.json
      gcage-fast eval ../shared/data/faces --split test --cam-metrics gradcam,gradcam++,layercam,eigencam,scorecam
      gcage-fast eval ../shared/data/faces --split test --precision int8 --calibration calib-images/
    """
    from gcage_fast.evaluation.evaluate import EvalOptions, evaluate, markdown_table
    from gcage_fast.fsutil import atomic_write_json

    setup_logging(True)
    say = None if quiet else (lambda msg: click.echo(f"eval: {msg}", err=True))
    if cam_metrics_methods:
        from gcage_fast.cam.quality import QualityOptions
        from gcage_fast.explain.cam_metrics import CamMetricsOptions, cam_metrics, cam_metrics_table
        from gcage_fast.explain.explainer import parse_methods

        quality = QualityOptions(keep_top=_percent_list(keep_top, "--keep-top"),
                                 road_percentiles=_percent_list(road_percentiles, "--road-percentiles"))
        copts = CamMetricsOptions(data=data, methods=parse_methods(cam_metrics_methods), model=model, split=split,
                                  manifest=manifest, max_images=max_images, quality=quality, backend=backend,
                                  threads=threads, batch_size=max(batch_size, 64))
        report, table = cam_metrics(copts, say), cam_metrics_table
    else:
        opts = EvalOptions(data=data, model=model, split=split, manifest=manifest, perturb=perturb,
                           top_k=int_list(top_k), backend=backend, device=device, batch_size=batch_size,
                           workers=workers, threads=threads, precision=precision, calibration=calibration,
                           evidence=evidence, verdict_policy=verdict_policy, c2pa_trust_anchors=c2pa_trust_anchors,
                           watermarks=watermarks, grid=grid)
        report, table = evaluate(opts, say), markdown_table
    if json_path:
        atomic_write_json(json_path, report)
    click.echo(table(report))
