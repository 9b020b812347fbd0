"""``gcage-fast calibrate``: a model's threshold for a target false-positive rate on the user's real images
(:mod:`gcage_fast.calibration.calibrate`)."""

from __future__ import annotations

import shlex
import sys

import click

from gcage_fast.cli.common import command, model_option, setup_logging, throughput_options
from gcage_fast.config import BACKENDS

__all__ = ["calibrate_cmd"]


@command("calibrate")
@click.argument("reference", type=click.Path(path_type=str))
@model_option()
@click.option("-o", "--output", required=True, type=click.Path(path_type=str),
              help="The calibrated model directory to write (new or empty, unless --overwrite).")
@click.option("--fpr", type=float, default=0.01, show_default=True,
              help="Target false-positive rate on REFERENCE, in (0, 0.5].")
@click.option("--uncertain-fpr", type=float,
              help="Also write an uncertain band: its lower edge is the threshold for this looser target (above "
              "--fpr, at most 0.5), and scans call p_fake between the two thresholds 'uncertain'.  [default: no band]")
@click.option("--ai", "ai", type=click.Path(path_type=str),
              help="Known-AI images: report the true-positive rate at the threshold and fit the calibration map.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@throughput_options(workers_help="Decode processes.  [default: cores - 1]")
@click.option("--overwrite", is_flag=True, help="Replace an existing model directory at --output.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line; only the summary.")
def calibrate_cmd(reference: str, model: str | None, output: str, fpr: float, uncertain_fpr: float | None,
                  ai: str | None, backend: str, device: str, batch_size: int, workers: int | None,
                  threads: int | None, overwrite: bool, quiet: bool) -> None:
    """Choose the model's threshold so at most --fpr of your known-real images are called fake.

    REFERENCE is a folder of real images, walked like a scan input, scored with the scan pipeline (model-only
    verdict policy: the model's p_fake). The threshold is the smallest t with at most floor(fpr * n_real)
    reals at p_fake >= t; reals tied at the boundary all stay below it. Writes --output as a model directory:
    the same weights (sha256 checked), model.json with the new threshold and the id NAME-calibrated, and
    calibration.json with the realised FPR and its 95% Clopper-Pearson interval, the true-positive rate with
    --ai, the counts (unreadable files are counted, not fatal), and ECE. With --ai an isotonic map of p_fake is
    fitted and recorded in calibration.json; it is NOT applied to p_fake (scans report the model's score and
    use the new threshold on it). --uncertain-fpr F2 chooses a second, lower threshold by the same rule at the
    looser target F2: the new model's scans give verdict 'uncertain' to p_fake in [lower, threshold), and
    calibration.json records both thresholds, both realised FPRs and the shares of reals and AI images in the band.

    \b
    Example:
      gcage-fast calibrate my-real-photos/ --model faces-gcage -o models/faces-mine --fpr 0.01
      gcage-fast calibrate my-real-photos/ --ai my-ai-images/ -o models/faces-mine --overwrite
      gcage-fast calibrate my-real-photos/ -o models/faces-band --fpr 0.01 --uncertain-fpr 0.05
      gcage-fast scan inbox/ -o results/ --model models/faces-mine
    """
    from gcage_fast.calibration.calibrate import CalibrationConfig, calibrate

    setup_logging(True)
    cfg = CalibrationConfig(reference=reference, output=output, model=model, fpr=fpr, uncertain_fpr=uncertain_fpr,
                            ai=ai, backend=backend, device=device, batch_size=batch_size, workers=workers, threads=threads,
                            overwrite=overwrite, command=shlex.join(["gcage-fast", *sys.argv[1:]]))
    if not quiet:
        click.echo(f"calibrate: scoring {reference}" + (f" and {ai}" if ai else ""), err=True)
    rec = calibrate(cfg)
    fpr_rec = rec["fpr"]
    low, high = fpr_rec["interval"]
    line = (f"{rec['model']['id']}: threshold {rec['threshold']:.6g} (was {rec['source_model']['threshold']:.6g}); "
            f"FPR {fpr_rec['value']:.4f} [{low:.4f}, {high:.4f}] on {rec['n_real']} reals")
    if rec["tpr"] is not None:
        line += f"; TPR {rec['tpr']['value']:.4f} on {rec['n_ai']} AI images"
    band = rec["uncertain"]
    if band is not None:
        line += (f"; uncertain from {band['uncertain_threshold']:.6g} (FPR {band['fpr']['value']:.4f}): "
                 f"{band['real_in_band']['count']} reals in the band")
        if band["ai_in_band"] is not None:
            line += f", {band['ai_in_band']['count']} AI images"
    if rec["n_unscanned"]:
        line += f"; {rec['n_unscanned']} files unscanned"
    click.echo(line)
    click.echo(f"wrote {output}")
