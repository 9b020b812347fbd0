"""``gcage-fast crossval``: how well a training recipe generalises to sources (or generators) it never saw.

One base detector is trained per held-out group with exactly the options of ``train-base`` (plus
``--hold-out GROUP``), and scored on that group's images, all splits, since none of them was seen. A group with one
class only (a generator, or a source of AI images) is scored against the test split of the other class from the
remaining groups, so AP and ROC-AUC are defined. A first fold holds nothing out and is scored on the test split:
the in-distribution reference.

Scores are the scan's: the mean P(synthetic) over the top-k SuSy-rule patches of the unmodified image on the
chosen grid, accuracy at the fold's stored (validation-calibrated) threshold. Every fold shares one cache
(``OUT/cache``) of views, scan patches and, with ``--freeze-trunk``, trunk features, so a frozen-trunk run decodes
and featurises each image once. A fold whose record exists for the same options is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcage_fast.config import default_workers
from gcage_fast.errors import ConfigError
from gcage_fast.evaluation.datasets import LabelledImage, load_pool, split_of
from gcage_fast.evaluation.metrics import MetricError, average_precision, roc_auc
from gcage_fast.fsutil import atomic_write_bytes, atomic_write_json
from gcage_fast.hashing import sha256_json
from gcage_fast.models.registry import load_model
from gcage_fast.training.base import BaseOptions, train_base
from gcage_fast.training.common import TrainOptions, group_of, image_scores
from gcage_fast.training.frozen import cached_features
from gcage_fast.training.views import ViewCache

__all__ = ["FoldResult", "crossval", "fold_items", "markdown_table"]

ALL = "(none held out)"


@dataclass(frozen=True)
class FoldResult:
    group: str  # the held-out source or generator (ALL for the in-distribution fold)
    n_real: int
    n_ai: int
    ap: float | None
    roc_auc: float | None
    acc: float  # at the fold's threshold
    tpr: float | None  # share of AI images flagged at the threshold
    fpr: float | None  # share of real images flagged
    threshold: float
    best_epoch: int
    seconds: float


def fold_items(items: list[LabelledImage], group: str | None, by: str) -> list[LabelledImage]:
    """The images a fold is scored on: the held-out group's images (all splits), completed with the other class's
    test-split images of the other groups when the group has one class; the test split when nothing is held out."""
    if group is None:
        return [i for i in items if split_of(i.digest()) == "test"]
    inside = [i for i in items if group_of(i, by) == group]
    labels = {i.label for i in inside}
    if len(labels) == 2:
        return inside
    other = [i for i in items if i.label not in labels and group_of(i, by) != group
             and split_of(i.digest()) == "test"]
    return inside + other


def _metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float | None]:
    def safe(fn):
        try:
            return float(fn(y, s))
        except MetricError:
            return None
    flagged = s >= threshold
    return {"ap": safe(average_precision), "roc_auc": safe(roc_auc), "acc": float((flagged == y).mean()),
            "tpr": float(flagged[y == 1].mean()) if (y == 1).any() else None,
            "fpr": float(flagged[y == 0].mean()) if (y == 0).any() else None}


def _slug(group: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in group)[:40]
    return f"{safe}-{hashlib.sha256(group.encode()).hexdigest()[:8]}"


def crossval(opts: TrainOptions, bo: BaseOptions, by: str = "source", groups: tuple[str, ...] = (),
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every fold (or only ``groups``) and write ``OUT/crossval.json`` and ``OUT/crossval.md``."""
    if not bo.freeze_trunk:
        raise ConfigError("crossval scores folds on cached trunk features: give --freeze-trunk "
                          "(with --pretrained or --init)")
    say = log or (lambda _m: None)
    out = Path(opts.out)
    cache_dir = out / "cache"
    ds = load_pool(opts.data)
    present = sorted({g for g in (group_of(i, by) for i in ds.items) if g is not None})
    unknown = [g for g in groups if g not in present]
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a {by} of the data ({by}s: {', '.join(present)})")
    todo: list[str | None] = [None, *(groups or present)]
    options = {k: v for k, v in opts.fingerprint_dict().items() if k != "out"}  # the folds move with OUT
    fingerprint = sha256_json({"opts": options, "base": asdict(bo), "by": by, "version": 1})
    workers = default_workers() if opts.workers is None else opts.workers
    results = []
    for group in todo:
        name = ALL if group is None else group
        fold_dir = out / "folds" / ("all" if group is None else _slug(group))
        record = fold_dir / "heldout.json"
        if record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("fingerprint") == fingerprint:
                results.append(FoldResult(**saved["result"]))
                say(f"{name}: kept from {record}")
                continue
        t0 = time.perf_counter()
        fold_opts = replace(opts, out=str(fold_dir), cache_dir=str(cache_dir), resume=False,
                            hold_out=() if group is None else (group,), hold_out_by=by)
        try:
            summary = train_base(fold_opts, replace(bo, name=f"crossval-{_slug(name)}"), None)
        except ConfigError as exc:  # e.g. a group that takes one class out of training entirely
            raise ConfigError(f"fold {name!r}: {exc}") from None
        model = load_model(str(fold_dir))
        items = fold_items(ds.items, group, by)
        cache = ViewCache.build(items, [i.label for i in items], cache_dir, recipe=None, top_k=opts.top_k,
                                grid=opts.grid, seed=opts.seed, workers=workers)
        feats = cached_features(model.base, cache)
        with torch.no_grad():
            logits = model.base.mlp(torch.from_numpy(feats))
            patch_scores = 1.0 - torch.softmax(logits, dim=1)[:, 0].numpy()
        y, s = image_scores(cache, patch_scores)
        m = _metrics(y, s, model.spec.threshold)
        result = FoldResult(name, int((y == 0).sum()), int((y == 1).sum()), m["ap"], m["roc_auc"], m["acc"],
                            m["tpr"], m["fpr"], float(model.spec.threshold), int(summary["best_epoch"]),
                            round(time.perf_counter() - t0, 1))
        atomic_write_json(record, {"fingerprint": fingerprint, "result": asdict(result),
                                   "scores": [{"sha256": cache.digests[int(i)], "label": int(lab), "p_fake": float(v)}
                                              for i, lab, v in zip(np.unique(cache.image), y, s)]})
        say(f"{name}: {result.n_real} real, {result.n_ai} AI, ROC-AUC {_fmt(result.roc_auc)}, AP {_fmt(result.ap)}, "
            f"acc {result.acc:.3f} ({result.seconds:.0f} s)")
        results.append(result)
    held = [r.roc_auc for r in results if r.group != ALL and r.roc_auc is not None]
    summary = {"by": by, "data": list(opts.data), "folds": [asdict(r) for r in results],
               "heldout_mean_roc_auc": float(np.mean(held)) if held else None,
               "heldout_min_roc_auc": float(np.min(held)) if held else None,
               "options": options, "base": asdict(bo), "fingerprint": fingerprint}
    atomic_write_json(out / "crossval.json", summary)
    atomic_write_bytes(out / "crossval.md", markdown_table(summary).encode())
    return summary


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def markdown_table(summary: dict[str, Any]) -> str:
    """The per-fold table of a crossval summary, with the held-out mean and minimum ROC-AUC."""
    by = summary["by"]
    lines = [f"| held-out {by} | real | AI | ROC-AUC | AP | acc@thr | TPR | FPR | thr |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["folds"]:
        lines.append(f"| {r['group']} | {r['n_real']} | {r['n_ai']} | {_fmt(r['roc_auc'])} | {_fmt(r['ap'])} | "
                     f"{r['acc']:.3f} | {_fmt(r['tpr'])} | {_fmt(r['fpr'])} | {r['threshold']:.3f} |")
    lines.append("")
    lines.append(f"Held-out mean ROC-AUC {_fmt(summary['heldout_mean_roc_auc'])}, minimum "
                 f"{_fmt(summary['heldout_min_roc_auc'])} over {len(summary['folds']) - 1} held-out {by}s "
                 f"(the first row is the test split with nothing held out).")
    return "\n".join(lines) + "\n"
