"""``gcage-fast eval``: score a labelled set with the real scan pipeline and report detection metrics.

Each (perturbation, top-k) combination is one ordinary scan (same decoding, patch selection, engines, fused step
and aggregation as ``gcage-fast scan``) into a temporary output; its rows are joined with the labels. Metrics are
computed for the G-CAGE verdict (``p_fake``), for the base detector alone (``base_p_fake``) and for the fused
verdict (``fused``: the model's p_fake, raised to 1.0 where provenance evidence decided the verdict; see
docs/PROVENANCE.md), overall and per generator; ``decided_by`` counts, per label, the images each verdict source
decided. Files that could not be scanned are excluded from the metrics and counted as ``n_unscanned``.

The report's ``mode`` says what its rows hold. ``binary`` (real and AI images): the metrics of
:data:`METRIC_KEYS`. A set of one class cannot have AP, ROC-AUC, a best threshold or a balanced accuracy, so none
is reported (the keys are absent, never invented): ``detection_rate`` (only AI images) and ``fpr`` (only real
images) rows hold the share of scanned images whose verdict is fake (:data:`RATE_KEYS`). A variant's verdict is
fake when ``p_fake >= threshold`` (gcage), ``base_p_fake >= base_threshold`` (base), or, for fused,
``verdict_source != 'model'`` or ``p_fake >= threshold`` (the scan's ``verdict`` column). A generator group whose
images are exactly those of ``all`` (a set with one generator) is not repeated.

In a binary set, a generator group of one class (CNNDetection's ``progan/`` with only ``1_fake/``, a manifest
generator without reals) gets the one-class row of its class (:data:`RATE_KEYS`) with a ``mode`` key saying
which; ``all`` and the other groups keep the binary metrics.

A model with an uncertain band (``uncertain_threshold`` in model.json) changes none of these numbers: they are at
the threshold, so an ``uncertain`` verdict counts as not fake. The variants whose verdict the band applies to
(gcage and fused; base for a model without a head, whose p_fake is the base detector's score) add
:data:`UNCERTAIN_KEYS` to each row: the band's rows (``n_uncertain``, ``uncertain_share``) and the accuracy, FPR
and TPR of the decided rows (those outside the band).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from gcage_fast.config import ScanConfig
from gcage_fast.evaluation.datasets import SPLITS, LabelledImage, LabelledSet, load_labelled
from gcage_fast.errors import ConfigError
from gcage_fast.log import logger
from gcage_fast.evaluation.metrics import BAND_KEYS, FLAG_RATES, band_report, binary_report, flag_rate_report
from gcage_fast.ingest.perturb import parse_perturbations
from gcage_fast.scoring.aggregate import model_verdict
from gcage_fast.output.outdir import OutputDir

__all__ = ["EvalConfig", "EvalOptions", "evaluate", "markdown_table", "METRIC_KEYS", "RATE_KEYS", "UNCERTAIN_KEYS"]

METRIC_KEYS = ("n_real", "n_fake", "ap", "roc_auc", "acc", "acc_real", "acc_fake", "precision", "recall", "f1",
               "threshold", "best_threshold", "best_balanced_acc", "ece", "n_unscanned")
#: The per-row keys of a one-class report, by mode (``n``: scanned images; ``n_verdict_fake``: those with verdict
#: fake; the rate is their share, ``None`` when nothing was scanned).
RATE_KEYS = {rate: ("n", "n_verdict_fake", rate, "threshold", "n_unscanned") for rate in FLAG_RATES.values()}
#: The keys a row gains from a model's uncertain band (:func:`gcage_fast.evaluation.metrics.band_report`).
UNCERTAIN_KEYS = BAND_KEYS


@dataclass(frozen=True)
class EvalConfig:
    """Everything ``gcage-fast eval`` needs (detection metrics). ``None`` means "take it from the model spec"
    (model: the bundled one; top_k: the model's) or "choose automatically" (workers, threads).

    Attributes:
        data: a labelled folder: manifest.csv, ai/ + real/, or 0_real/ + 1_fake/ (gcage_fast.evaluation.datasets).
        split: ``all`` or one content-hash split (train, val, test).
        perturb: comma list of perturbations, each one scan (``none`` = the images as they are).
        top_k: patch counts to sweep, each one scan.
    """

    data: str
    model: str | None = None
    split: str = "all"
    manifest: str | None = None
    perturb: str = "none"
    top_k: tuple[int, ...] | None = None
    backend: str = "auto"
    device: str = "cpu"
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    precision: str = "fp32"
    calibration: str | None = None
    evidence: bool = True
    verdict_policy: str = ScanConfig.verdict_policy
    c2pa_trust_anchors: str | None = None
    watermarks: str = "none"
    grid: str = ScanConfig.grid

    def scan_config(self, listing: str, output: str, top_k: int | None = None, perturb: str | None = None,
                    model: str | None = None, shard_size: int = ScanConfig.shard_size) -> ScanConfig:
        """The scan of one (perturbation, top-k) combination: the files named in ``listing`` into ``output``."""
        return ScanConfig(inputs=(), from_list=listing, output=output, model=model or self.model,
                          backend=self.backend, device=self.device, precision=self.precision,
                          calibration=self.calibration, top_k=top_k, batch_size=self.batch_size,
                          workers=self.workers, threads=self.threads, shard_size=shard_size, perturb=perturb,
                          evidence=self.evidence, verdict_policy=self.verdict_policy, c2pa_trust_anchors=self.c2pa_trust_anchors,
                          watermarks=self.watermarks, grid=self.grid)

    def validate(self) -> None:
        """Raise ConfigError for an invalid option (before any model is loaded or image scanned)."""
        if self.split not in ("all", *SPLITS):
            raise ConfigError(f"unknown split {self.split!r}; choose all, {', '.join(SPLITS)}")
        if self.top_k is not None and (not self.top_k or min(self.top_k) < 1):
            raise ConfigError("top_k must list one or more patch counts, each at least 1")
        parse_perturbations(self.perturb)
        self.scan_config("inputs.txt", "out", max(self.top_k) if self.top_k else None).validate()


#: The name this configuration had first (the CLI and the benchmarks use it).
EvalOptions = EvalConfig


def _groups(ds: LabelledSet) -> dict[str, list[LabelledImage]]:
    """``all`` and one group per generator, except a generator group with exactly the images of ``all``."""
    groups = {"all": ds.items}
    for g in ds.generators:
        items = ds.subset_for_generator(g)
        if items != ds.items:
            groups[g] = items
    return groups


def _mode(items: list[LabelledImage]) -> str:
    """``binary`` when both classes are present, else the rate of the one class (:data:`FLAG_RATES`)."""
    labels = {i.label for i in items}
    return "binary" if len(labels) == 2 else FLAG_RATES[labels.pop()]


def _report(items: list[LabelledImage], rows: dict[bytes, dict[str, Any]], column: str,
            threshold: float, mode: str = "binary", uncertain: float | None = None) -> dict[str, Any]:
    """The metrics of one variant (``column``: a score column, or ``fused``) over the scanned ``items``; with an
    ``uncertain`` band edge, the band's keys too."""
    y, s, missing = [], [], 0
    for item in items:
        row = rows.get(os.fsencode(os.path.abspath(item.path)))
        if row is None or row["status"] != "ok":
            missing += 1
            continue
        y.append(item.label)
        s.append(1.0 if column == "fused" and row["verdict_source"] != "model" else
                 row["p_fake" if column == "fused" else column])
    scores = np.array(s, dtype=np.float64)
    if mode == "binary":
        report = binary_report(np.array(y, dtype=np.int64), scores, threshold)
    else:
        report = flag_rate_report(scores, threshold, mode)
    report["n_unscanned"] = missing
    if uncertain is not None:
        verdicts = [model_verdict(float(v), threshold, uncertain) for v in scores]
        report.update(band_report(np.array(y, dtype=np.int64), verdicts, uncertain))
    return report


def _decided_by(items: list[LabelledImage], rows: dict[bytes, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """verdict_source -> {"real": images, "fake": images} over the scanned items (labels: real 0, fake 1)."""
    out: dict[str, dict[str, int]] = {}
    for item in items:
        row = rows.get(os.fsencode(os.path.abspath(item.path)))
        if row is not None and row["status"] == "ok":
            counts = out.setdefault(row["verdict_source"], {"real": 0, "fake": 0})
            counts["fake" if item.label else "real"] += 1
    return dict(sorted(out.items()))


def evaluate(opts: EvalConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the evaluation; returns the JSON-ready report. Its ``mode`` is ``binary`` (rows: :data:`METRIC_KEYS`)
    or, for a split of one class, ``detection_rate`` or ``fpr`` (rows: :data:`RATE_KEYS`); ``keys`` lists them.

    A generator group of one class in a binary set gets that class's rate row, with its ``mode``.

    Raises:
        GcageError: ConfigError for invalid options or an empty split, and whatever the scans raise (see
            gcage_fast.scanning.scan).
    """
    from gcage_fast.models.registry import load_model
    from gcage_fast.scanning.local import scan

    opts.validate()
    t0 = time.perf_counter()
    model = load_model(opts.model)
    spec = model.spec
    ds = load_labelled(opts.data, opts.manifest).split(opts.split)
    if not ds.items:
        raise ConfigError(f"the {opts.split} split of {opts.data} is empty")
    n_fake = sum(i.label for i in ds.items)
    mode = _mode(ds.items)
    perturbs = parse_perturbations(opts.perturb)
    top_ks = opts.top_k or (spec.top_k,)
    band = spec.uncertain_threshold  # the band is on the scan's p_fake: the base score only without a head
    variants = {"base": ("base_p_fake", spec.base_threshold, band if model.head is None else None)}
    if model.head is not None:
        variants = {"gcage": ("p_fake", spec.threshold, band), **variants, "fused": ("fused", spec.threshold, band)}
    groups = _groups(ds)
    group_modes = {g: _mode(items) for g, items in groups.items()}
    results: dict[str, Any] = {v: {} for v in variants}
    decided: dict[str, Any] = {}
    backend_label = None
    with tempfile.TemporaryDirectory(prefix="gcage-eval-") as tmp:
        listing = Path(tmp) / "inputs.txt"
        listing.write_bytes(b"".join(os.fsencode(os.path.abspath(i.path)) + b"\n" for i in ds.items))
        for p in perturbs:
            for k in top_ks:
                if progress:
                    progress(f"scanning {len(ds.items)} images (perturb {p.label}, top-k {k})")
                out = Path(tmp) / f"scan-{p.label.replace(':', '_')}-k{k}"
                summary = scan(opts.scan_config(str(listing), str(out), k, None if p.name == "none" else p.label,
                                                model=str(model.path), shard_size=max(1, len(ds.items))))
                backend_label = summary.backend
                table = pads.dataset(OutputDir(out).results_dir, format="parquet").to_table(
                    columns=["path_bytes", "status", "p_fake", "base_p_fake", "verdict_source"])
                rows = {r["path_bytes"]: r for r in table.to_pylist()}
                decided.setdefault(p.label, {})[str(k)] = _decided_by(ds.items, rows)
                for variant, (column, threshold, uncertain) in variants.items():
                    per = results[variant].setdefault(p.label, {}).setdefault(str(k), {})
                    for gname, items in groups.items():
                        per[gname] = _report(items, rows, column, threshold, group_modes[gname], uncertain)
                        if group_modes[gname] != mode:
                            per[gname]["mode"] = group_modes[gname]
    seconds = time.perf_counter() - t0
    logger.info("evaluation done in %.1f s", seconds)
    return {
        "model": {"id": spec.model_id, "sha256": spec.sha256, "path": str(model.path),
                  "threshold": spec.threshold, "base_threshold": spec.base_threshold,
                  "has_head": model.head is not None, **({} if band is None else {"uncertain_threshold": band})},
        "data": {"root": str(ds.root), "layout": ds.layout, "split": opts.split, "n_images": len(ds.items),
                 "n_real": len(ds.items) - n_fake, "n_fake": n_fake, "generators": ds.generators},
        "backend": backend_label,
        "precision": opts.precision,
        "perturbations": [p.label for p in perturbs],
        "top_k": list(top_ks),
        "mode": mode,
        "keys": list(METRIC_KEYS if mode == "binary" else RATE_KEYS[mode]),
        **({} if band is None else {"uncertain_keys": list(UNCERTAIN_KEYS)}),
        "results": results,
        "verdict_policy": opts.verdict_policy,
        "decided_by": decided,
        "seconds": round(seconds, 1),
    }


#: mode -> (sentence, column title, the class present, the class absent)
_RATE_TITLES = {"detection_rate": ("Detection rate", "detection rate", "AI", "real"),
                "fpr": ("False-positive rate (FPR)", "FPR", "real", "AI")}
_BINARY_HEAD = ("| variant | perturb | top-k | generator | n_real | n_fake | AP | ROC-AUC | acc | acc_real | acc_fake "
                "| precision | recall | F1 | threshold | best thr | ECE |")

Row = tuple[str, str, str, str, dict[str, Any]]  # variant, perturb, top-k, generator, metrics


def _rows(report: dict[str, Any]) -> list[Row]:
    return [(variant, p, k, g, m) for variant, by_p in report["results"].items() for p, by_k in by_p.items()
            for k, by_g in by_k.items() for g, m in by_g.items()]


def _na(value: float | None, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _rate_lines(rate: str, rows: list[Row], groups: bool = False) -> list[str]:
    """The rows of one-class reports: the share of scanned images with verdict fake (of the whole set, or with
    ``groups`` of generator groups of one class in a binary set)."""
    sentence, title, present, absent = _RATE_TITLES[rate]
    if groups:
        intro = (f"{sentence} of the generator groups without {absent} images: the share of their scanned {present} "
                 "images whose verdict is fake (AP, ROC-AUC, the best threshold and balanced accuracy are not "
                 "defined for them).")
    else:
        intro = (f"{sentence}: the share of the scanned {present} images whose verdict is fake (the set has no "
                 f"{absent} images, so AP, ROC-AUC, the best threshold and balanced accuracy are not defined).")
    lines = [intro, "", f"| variant | perturb | top-k | generator | n | verdict fake | {title} | threshold | "
             "n_unscanned |", "|" + "|".join(["---"] * 9) + "|"]
    lines += [f"| {variant} | {p} | {k} | {g} | {m['n']} | {m['n_verdict_fake']} | {_na(m[rate])} | "
              f"{m['threshold']:.3f} | {m['n_unscanned']} |" for variant, p, k, g, m in rows]
    return lines


def _binary_lines(rows: list[Row]) -> list[str]:
    lines = [_BINARY_HEAD, "|" + "|".join(["---"] * 17) + "|"]
    lines += [f"| {variant} | {p} | {k} | {g} | {m['n_real']} | {m['n_fake']} | {m['ap']:.4f} | "
              f"{m['roc_auc']:.4f} | {m['acc']:.4f} | {m['acc_real']:.4f} | {m['acc_fake']:.4f} | "
              f"{m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['threshold']:.3f} | "
              f"{m['best_threshold']:.3f} | {m['ece']:.4f} |" for variant, p, k, g, m in rows]
    return lines


def _band_lines(rows: list[Row]) -> list[str]:
    """The uncertain-band table (after a blank line) of the rows that have one, or nothing."""
    banded = [r for r in rows if "n_uncertain" in r[4]]
    if not banded:
        return []
    lines = ["", "Uncertain band (uncertain_threshold <= score < threshold; the metrics above count it as not fake; "
             "decided: the rows outside it):", "",
             "| variant | perturb | top-k | generator | band | uncertain | share | acc decided | FPR decided | "
             "TPR decided |", "|" + "|".join(["---"] * 10) + "|"]
    lines += [f"| {variant} | {p} | {k} | {g} | [{m['uncertain_threshold']:.3f}, {m['threshold']:.3f}) | "
              f"{m['n_uncertain']} | {_na(m['uncertain_share'])} | {_na(m['acc_decided'])} | "
              f"{_na(m['fpr_decided'])} | {_na(m['tpr_decided'])} |" for variant, p, k, g, m in banded]
    return lines


def markdown_table(report: dict[str, Any]) -> str:
    """The report as markdown: a row per variant, perturbation, top-k and generator (binary metrics, or for a set
    of one class a titled table of detection rates or false-positive rates; generator groups of one class in a
    binary set get such a table after the binary one), the uncertain band when the model has one, then the
    verdicts by source."""
    rows = _rows(report)
    mode = report.get("mode", "binary")
    if mode != "binary":
        lines = _rate_lines(mode, rows)
    else:
        lines = _binary_lines([r for r in rows if "mode" not in r[4]])
        for rate in FLAG_RATES.values():
            groups = [r for r in rows if r[4].get("mode") == rate]
            if groups:
                lines += [""] + _rate_lines(rate, groups, groups=True)
    return "\n".join(lines + _band_lines(rows) + _decided_lines(report))


def _decided_lines(report: dict[str, Any]) -> list[str]:
    """The verdicts-by-source table (after a blank line), or nothing when the report has none."""
    lines: list[str] = []
    decided = report.get("decided_by") or {}
    if decided:
        lines += ["", f"Verdicts by source ({report.get('verdict_policy')}; images, by true label):", "",
                  "| perturb | top-k | verdict_source | real images | AI images |", "|---|---|---|---|---|"]
        for p, by_k in decided.items():
            for k, by_source in by_k.items():
                lines += [f"| {p} | {k} | {src} | {n['real']} | {n['fake']} |" for src, n in by_source.items()]
    return lines
