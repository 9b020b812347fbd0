"""``gcage-fast explain``: one image, why the detector says real or fake (:mod:`gcage_fast.explain`).

CAM quality metrics over a whole labelled set are ``gcage-fast eval --cam-metrics`` (gcage_fast/cli/evaluate.py).
"""

from __future__ import annotations

import click

from gcage_fast.cli.common import THREADS_HELP, command, model_option, output_file, output_option, setup_logging

__all__ = ["explain"]


@command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=str))
@output_option("PNG to write: the image with its patches and heatmaps, and a legend (missing parent directories "
               "are created).", type=click.Path(dir_okay=False, path_type=str))
@model_option()
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
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str),
              help="Write the numbers here (missing parent directories are created).")
@click.option("--backend", type=click.Choice(["auto", "ort", "torch"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Perturbed patches per engine call (ScoreCAM, LIME, metrics).")
@click.option("--threads", type=click.IntRange(min=1), help=THREADS_HELP)
def explain(image: str, output: str, model: str | None, cams: str, all_cams: bool, patch_index: int | None,
            alpha: float, cam_target: str | None, cam_layer: str | None, metrics: bool, lime_samples: int,
            segmentation: str, seed: int, json_path: str | None, backend: str, batch_size: int,
            threads: int | None) -> None:
    """Explain one image: why the detector says real or fake.

    Writes OUTPUT (PNG): the image with its selected patches outlined and each patch's heatmap overlaid (red =
    most evidence for the target), and a legend with the verdict, p_fake, the base detector's class
    probabilities and attribution, and per-patch scores. ScoreCAM, LIME and the metrics run their perturbed
    patches through the engine in batches (ScoreCAM: one pass per channel of the CAM layer, about 11 s per
    patch for the bundled model on 2 CPU cores, as measured in docs/images/explain-rocket-all-cams.json).

    \b
    Example:
      gcage-fast explain photo.jpg -o why.png
      gcage-fast explain photo.jpg -o cams.png --all-cams --patch 0 --json why.json
      gcage-fast explain photo.jpg -o why.png --cam scorecam,gradcam --metrics --json why.json
    """
    from gcage_fast.cam.quality import QualityOptions
    from gcage_fast.explain.explainer import ExplainOptions, parse_methods
    from gcage_fast.explain.image import ExplainConfig, explain_image

    setup_logging(False)
    output_file(output, "picture")
    output_file(json_path, "JSON record")
    methods = parse_methods("all" if all_cams and cams == "gradcam" else cams)
    if all_cams and patch_index is None:
        patch_index = 0
    opts = ExplainOptions(methods=methods, target=cam_target, layer=cam_layer,
                          patches=None if patch_index is None else (patch_index,), batch_size=batch_size,
                          lime_samples=lime_samples, lime_segmentation=segmentation, seed=seed,
                          quality=QualityOptions(seed=seed) if metrics else None)
    expl = explain_image(ExplainConfig(image=image, output=output, json_path=json_path, model=model,
                                       backend=backend, threads=threads, options=opts, all_cams=all_cams,
                                       grid_patch=patch_index, alpha=alpha))
    s = expl.score
    decided = "" if expl.verdict_source == "model" else f", decided by {expl.verdict_source} evidence"
    click.echo(f"{expl.source}: {expl.verdict} (p_fake {s.p_fake:.4f}, threshold {expl.threshold:.3f}; base "
               f"p_fake {s.base_p_fake:.4f}, attribution {s.attribution}{decided}) -> {output}")
    for e in expl.evidence:
        click.echo(f"  evidence: {e.kind} {e.claim} ({e.strength})" + (f", {e.generator}" if e.generator else "")
                   + f": {e.detail}")
