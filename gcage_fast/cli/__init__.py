"""The ``gcage-fast`` command: a thin click layer over the library, one module per command group.

This module only makes the group :data:`cli` (the console entry point ``gcage_fast.cli:cli``) and registers the
commands. Each command module imports :mod:`gcage_fast.cli.common` (settings, the error map, option bundles) and
the library, never this package, so nothing imports in a circle:

- ``scan``: scan
- ``report``: verify, report
- ``evaluate``: eval (detection metrics, or CAM quality with ``--cam-metrics``)
- ``calibrate``: calibrate (a threshold for a target false-positive rate on known-real images)
- ``explain``: explain
- ``models``: models, init-model, import-susy, export
- ``engines``: build-engine
- ``train``: train-base, train-head, crossval
- ``info``: info
"""

from __future__ import annotations

import click

from gcage_fast.version import __version__
from gcage_fast.cli import calibrate, engines, evaluate, explain, info, models, report, scan, train
from gcage_fast.cli.common import CONTEXT

__all__ = ["cli"]


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="gcage-fast")
def cli() -> None:
    """Fast, explainable batch scanner for AI-generated images.

    G-CAGE: a SuSy base detector scores the most detailed 224x224 patches of each image, its Grad-CAM heatmap
    is stacked onto each patch as a 4th channel, and a light CNN decides. Results are Parquet, one row per input.

    \b
    Example:
      gcage-fast scan photos/ -o out/
      gcage-fast verify out/
      duckdb -c "select locator, p_fake from 'out/results/*.parquet' order by p_fake desc limit 20"
    """


for _command in (scan.scan, report.verify, report.report, evaluate.eval_cmd, calibrate.calibrate_cmd,
                 explain.explain, models.models, models.init_model_cmd, models.import_susy_cmd, models.export,
                 engines.build_engine, train.train_base_cmd, train.train_head_cmd, train.crossval_cmd, info.info):
    cli.add_command(_command)
