"""Compare CAM methods on a labelled set: the quality metrics of :mod:`gcage_fast.cam.quality`, averaged
(``gcage-fast eval --cam-metrics``).

Each image contributes its highest-contrast patch (the one every top-k keeps); images are taken in a seeded
order, balanced between real and fake when ``max_images`` limits them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gcage_fast.cam.quality import QualityOptions, mean_quality
from gcage_fast.evaluation.datasets import LabelledImage, load_labelled
from gcage_fast.errors import ConfigError, InputError

__all__ = ["CamMetricsOptions", "cam_metrics", "cam_metrics_table"]


@dataclass(frozen=True)
class CamMetricsOptions:
    data: str
    methods: tuple[str, ...]
    model: str | None = None
    split: str = "all"
    manifest: str | None = None
    max_images: int | None = None
    quality: QualityOptions = QualityOptions()
    backend: str = "auto"
    threads: int | None = None
    batch_size: int = 64
    seed: int = 0


def _pick(items: list[LabelledImage], max_images: int | None, seed: int) -> list[LabelledImage]:
    order = np.random.default_rng(seed).permutation(len(items))
    items = [items[i] for i in order]
    if max_images is None or max_images >= len(items):
        return items
    real = [i for i in items if i.label == 0]
    fake = [i for i in items if i.label == 1]
    n_fake = min(len(fake), max_images // 2)
    n_real = min(len(real), max_images - n_fake)
    return real[:n_real] + fake[:max_images - n_real]


def cam_metrics(opts: CamMetricsOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Mean quality metrics per method, over all images and per label; JSON-ready."""
    from gcage_fast.explain.explainer import ExplainOptions, Explainer
    from gcage_fast.models.registry import load_model

    t0 = time.perf_counter()
    model = load_model(opts.model)
    ds = load_labelled(opts.data, opts.manifest).split(opts.split)
    items = _pick(ds.items, opts.max_images, opts.seed)
    if not items:
        raise ConfigError(f"the {opts.split} split of {opts.data} is empty")
    per: dict[str, dict[str, list[dict[str, float]]]] = {m: {"all": [], "real": [], "fake": []}
                                                         for m in opts.methods}
    seconds: dict[str, list[float]] = {m: [] for m in opts.methods}
    skipped = 0
    ex_opts = ExplainOptions(methods=opts.methods, patches=(0,), batch_size=opts.batch_size, seed=opts.seed,
                             quality=opts.quality)
    with Explainer(model, ex_opts, opts.backend, opts.threads) as ex:
        for n, item in enumerate(items, start=1):
            try:
                expl = ex.explain_file(item.path)
            except InputError:
                skipped += 1
                continue
            pe = expl.patches[0]
            label = "fake" if item.label else "real"
            for m in opts.methods:
                per[m]["all"].append(pe.quality[m])
                per[m][label].append(pe.quality[m])
                seconds[m].append(pe.seconds[m])
            if progress and (n % 10 == 0 or n == len(items)):
                progress(f"{n}/{len(items)} images")
        backend = ex.backend_label
    results = {m: {g: ({"n": len(rows), **mean_quality(rows)} if rows else {"n": 0}) for g, rows in groups.items()}
               for m, groups in per.items()}
    for m in opts.methods:
        results[m]["seconds_per_patch"] = float(np.mean(seconds[m])) if seconds[m] else None
    return {
        "model": model.spec.model_id,
        "data": {"root": str(ds.root), "split": opts.split, "n_images": len(items) - skipped,
                 "skipped": skipped},
        "backend": backend,
        "cam_target": model.spec.cam.target,
        "cam_layer": model.spec.cam.layer,
        "keep_top": list(opts.quality.keep_top),
        "road_percentiles": list(opts.quality.road_percentiles),
        "methods": list(opts.methods),
        "results": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def cam_metrics_table(report: dict[str, Any]) -> str:
    """Markdown: one row per method (all images), then per label."""
    keys = ["drop", "increase"] + [f"{k}@{x}" for x in report["keep_top"] for k in ("drop", "increase")] + [
        "road_morf", "road_lerf", "road_combined"]
    head = ["method", "images", "flat", "s/patch", *keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in ("all", "real", "fake"):
        for m in report["methods"]:
            r = report["results"][m][group]
            if not r.get("n"):
                continue
            name = m if group == "all" else f"{m} ({group})"
            sec = report["results"][m]["seconds_per_patch"]
            cells = [name, str(r["n"]), f"{r['flat']:.0%}", "" if sec is None else f"{sec:.2f}"]
            cells += ["n/a" if r[k] != r[k] else f"{r[k]:.4f}" for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
