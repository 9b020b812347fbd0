"""Model commands: ``models`` lists them, ``init-model`` and ``import-susy`` make them, ``export`` turns one into
checked ONNX graphs."""

from __future__ import annotations

import click

from gcage_fast.cli.common import command, emit_json, json_flag, model_option, setup_logging
from gcage_fast.config import CAM_METHODS
from gcage_fast.precision import GRAPH_PRECISIONS

__all__ = ["models", "init_model_cmd", "import_susy_cmd", "export"]


@command()
@json_flag("Print the list as JSON.")
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
        emit_json([{"name": e.name, "model_id": e.spec.model_id, "path": str(e.path), "source": e.source,
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


@command("init-model")
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


@command("import-susy")
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


@command()
@model_option()
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Directory for base.onnx, head.onnx, parity.json and export.json.")
@click.option("--cam", type=click.Choice(CAM_METHODS), help="CAM method in the base graph.  [default: model's]")
@click.option("--cam-target", help="fake, pred, class:NAME, logit:NAME or logit:pred.  [default: model's]")
@click.option("--cam-layer", type=click.Choice(["layer4", "F"]), help="CAM layer.  [default: model's, layer4]")
@click.option("--with-activations", is_flag=True, help="Also output the activations and CAM weights.")
@click.option("--precision", type=click.Choice(GRAPH_PRECISIONS), default="fp32", show_default=True,
              help="fp16: convolutions in float16, CAM/softmax/sigmoid in float32.  int8: Q/DQ around the "
              "convolutions, calibrated on --calibration.")
@click.option("--calibration", type=click.Path(file_okay=False, path_type=str),
              help="int8: directory of real images to calibrate on (up to 64 are used).  "
              "[default: the bundled samples]")
@json_flag("Print the parity report as JSON.")
def export(model: str | None, output: str, cam: str | None, cam_target: str | None, cam_layer: str | None,
           with_activations: bool, precision: str, calibration: str | None, as_json: bool) -> None:
    """Export a model to ONNX (CAM inside the base graph, dynamic batch) and check ORT against torch.

    Fails (exit 1) when an output differs from the float32 torch graph by more than its bound: 1e-4 for fp32
    graphs; for fp16 2e-3 on P(fake) (1e-2 on the base's probabilities); for int8 a mean difference of 0.05 on
    the calibration patches (docs/PRECISION.md says why).

    \b
    Example:
      gcage-fast export -o onnx/ --cam gradcam++ --with-activations
      gcage-fast export --model models/susy -o onnx-susy/      # made by gcage-fast import-susy
      gcage-fast export -o onnx-int8/ --precision int8 --calibration my-images/
    """
    from gcage_fast.export.to_onnx import ExportOptions, export_model
    from gcage_fast.models.registry import load_model

    setup_logging(False)
    loaded = load_model(model)
    options = ExportOptions.for_model(loaded, cam, cam_target, cam_layer, with_activations, precision, calibration)
    report = export_model(loaded, output, options)
    if as_json:
        emit_json(report.parity)
        return
    click.echo(f"Exported {loaded.spec.model_id} ({precision}) to {output} in {report.seconds:.1f} s "
               f"(CAM {options.cam_method}, target {options.cam_target}, layer {options.cam_layer})")
    for graph, outputs in report.parity["graphs"].items():
        for name, entry in outputs.items():
            click.echo(f"  {graph:10s} {name:12s} ORT vs float32 torch: max abs diff {entry['max_abs_diff']:.2e}, "
                       f"mean {entry['mean_abs_diff']:.2e} (batches {entry['batches']})")
