"""Can a classifier tell the classes apart from format and size alone, before and after the view protocol?

Writes every image of a labelled set (default ``../shared/data/broad``) twice, as a large PNG and as a small JPEG
(the two classes of the probe: they differ in nothing but format and size), and trains a logistic regression on
(a) the files' format and size, (b) format/size traces in the grid patches of the unmodified images and (c) the
same traces in the training views of the first and the default recipe (``gcage_fast.training.shortcuts``). Writes
``docs/experiments/format_size_ablation.json`` and ``.md``; ROC-AUC on the test split with a 95% bootstrap interval.

    .venv/bin/python docs/experiments/format_size_ablation.py [DATA] [WORK_DIR]
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from gcage_fast.info import system_info
from gcage_fast.evaluation.datasets import load_labelled
from gcage_fast.training.shortcuts import format_size_ablation
from gcage_fast.training.views import ViewRecipe

HERE = Path(__file__).resolve().parent
ROWS = {"file": "file format and size (what the classes differ in)",
        "patches": "traces in grid patches of the unmodified images (grid-patch training)",
        "views-first": "traces in views of the first recipe (--rescale 0.8 --reencode 0.6)",
        "views": "traces in the training views (--views, default recipe: --rescale 1 --reencode 0.8)"}
RECIPES = {"views-first": ViewRecipe(rescale_p=0.8, jpeg_p=0.6), "views": ViewRecipe()}


def main(data: str, work: str) -> None:
    result = format_size_ablation(load_labelled(data).items, Path(work), RECIPES, workers=1)
    result.update({"data": Path(data).name, "recipes": {k: r.__dict__ for k, r in RECIPES.items()},
                   "cpu": system_info()["cpu"]["model"],
                   "python": platform.python_version()})
    (HERE / "format_size_ablation.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Format/size-only probe on {result['images']} images of `{result['data']}` (each as a large PNG and a "
             "small JPEG), logistic regression, test split:", "",
             "| input to the classifier | ROC-AUC | 95% interval | train / test images |", "|---|---:|---:|---:|"]
    for key, what in ROWS.items():
        r = result["rows"][key]
        lines.append(f"| {what} | {r['roc_auc']:.3f} | {r['ci_low']:.3f}–{r['ci_high']:.3f} | "
                     f"{r['n_train']} / {r['n_test']} |")
    (HERE / "format_size_ablation.md").write_text("\n".join(lines) + "\n")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/broad",
         sys.argv[2] if len(sys.argv) > 2 else "build/format-size-ablation")
