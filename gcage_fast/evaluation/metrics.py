"""Detection metrics in NumPy: average precision, ROC-AUC, thresholded accuracy, calibration.

Conventions: ``y`` holds 1 for fake (AI-generated) and 0 for real; ``s`` is a score where higher means more
likely fake (P(fake)); a prediction is fake when ``s >= threshold``. Metrics that need both classes raise
:class:`MetricError` instead of returning NaN; a set of one class gets :func:`flag_rate_report` (the share
predicted fake: the detection rate of AI images, the false-positive rate of real ones), which invents nothing.
:func:`band_report` describes a model's optional uncertain band from the verdicts themselves (``fake``,
``uncertain``, ``real``: the rule is :func:`gcage_fast.scoring.aggregate.model_verdict`, not repeated here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gcage_fast.errors import GcageError

__all__ = [
    "MetricError",
    "average_precision",
    "roc_auc",
    "threshold_metrics",
    "best_balanced_threshold",
    "expected_calibration_error",
    "binary_report",
    "flag_rate_report",
    "band_report",
    "FLAG_RATES",
    "BAND_KEYS",
]

#: The rate :func:`flag_rate_report` reports, by the one class present: AI images (1) or real images (0).
FLAG_RATES = {1: "detection_rate", 0: "fpr"}
#: The keys :func:`band_report` adds to a report row.
BAND_KEYS = ("uncertain_threshold", "n_uncertain", "uncertain_share", "n_decided", "acc_decided", "fpr_decided",
             "tpr_decided")


class MetricError(GcageError):
    """A metric is undefined for the given labels (for example a single class)."""


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(s, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise MetricError(f"labels and scores must be 1-D arrays of one length (got {y.shape} and {s.shape})")
    if not np.isin(y, (0, 1)).all():
        raise MetricError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(s).all():
        raise MetricError("scores must be finite numbers")
    return y.astype(np.int64), s


def _need_both(y: np.ndarray, what: str) -> None:
    n_fake = int(y.sum())
    if n_fake == 0 or n_fake == len(y):
        raise MetricError(f"{what} needs both real and fake samples (got {len(y) - n_fake} real, {n_fake} fake)")


def average_precision(y, s) -> float:
    """Area under the precision-recall curve as a step function (scikit-learn's definition):
    sum over distinct thresholds of (R_n - R_{n-1}) * P_n. Tied scores form one threshold."""
    y, s = _check(y, s)
    _need_both(y, "average precision")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each group of tied scores
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y, s) -> float:
    """Probability that a random fake scores above a random real (ties count one half): Mann-Whitney U."""
    y, s = _check(y, s)
    _need_both(y, "ROC-AUC")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    u = ranks[y == 1].sum() - n_fake * (n_fake + 1) / 2.0
    return float(u / (n_fake * n_real))


def threshold_metrics(y, s, threshold: float) -> dict[str, float]:
    """Accuracy overall and per class, precision, recall and F1 of ``s >= threshold``.

    Per-class accuracies need that class present (else MetricError). Precision is 0 when nothing is predicted
    fake, and F1 is 0 when precision + recall is 0 (scikit-learn's ``zero_division=0``).
    """
    y, s = _check(y, s)
    if len(y) == 0:
        raise MetricError("no samples")
    pred = (s >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    n_fake, n_real = tp + fn, tn + fp
    if n_fake == 0 or n_real == 0:
        raise MetricError(f"real and fake accuracy need both classes (got {n_real} real, {n_fake} fake)")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_fake
    return {
        "acc": (tp + tn) / len(y),
        "acc_real": tn / n_real,
        "acc_fake": recall,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def best_balanced_threshold(y, s, lo: float = 0.0, hi: float = 1.0) -> tuple[float, float]:
    """The threshold maximising balanced accuracy (mean of real and fake accuracy) and that accuracy.

    Every distinct outcome corresponds to an interval of thresholds between adjacent distinct scores (with
    ``lo``/``hi`` closing the ends); the midpoint of the best interval is returned. Among equally good
    intervals the one whose midpoint is closest to (lo + hi) / 2 wins.
    """
    y, s = _check(y, s)
    _need_both(y, "the balanced-accuracy threshold")
    u = np.unique(s)
    n_fake = int(y.sum())
    n_real = len(y) - n_fake
    # thresholds t in (u[i-1], u[i]] predict fake for s >= u[i]; i = len(u) predicts everything real
    fake_at_or_above = np.array([int((y[s >= v]).sum()) for v in u] + [0])
    real_below = np.array([int((y[s < v] == 0).sum()) for v in u] + [n_real])
    bal = (fake_at_or_above / n_fake + real_below / n_real) / 2.0
    edges = np.r_[min(lo, u[0]), u, max(hi, u[-1])]
    mids = (edges[:-1] + edges[1:]) / 2.0
    best = np.flatnonzero(np.isclose(bal, bal.max(), rtol=0, atol=1e-12))
    pick = best[np.argmin(np.abs(mids[best] - (lo + hi) / 2.0))]
    return float(mids[pick]), float(bal[pick])


def expected_calibration_error(y, s, bins: int = 10) -> float:
    """ECE of ``s`` read as P(fake): sum over equal-width bins of (n_b / N) * |fraction fake - mean score|."""
    y, s = _check(y, s)
    if len(y) == 0:
        raise MetricError("no samples")
    if (s < 0).any() or (s > 1).any():
        raise MetricError("calibration needs scores in [0, 1]")
    idx = np.minimum((s * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(y) * abs(y[m].mean() - s[m].mean())
    return float(total)


def binary_report(y, s, threshold: float) -> dict[str, Any]:
    """Every metric of the eval table for one set of labels and scores."""
    y, s = _check(y, s)
    best_t, best_bal = best_balanced_threshold(y, s)
    return {
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "ap": average_precision(y, s),
        "roc_auc": roc_auc(y, s),
        **threshold_metrics(y, s, threshold),
        "threshold": float(threshold),
        "best_threshold": best_t,
        "best_balanced_acc": best_bal,
        "ece": expected_calibration_error(y, s),
    }


def flag_rate_report(s, threshold: float, rate: str) -> dict[str, Any]:
    """The share of ``s >= threshold`` in a set of one class, under the name ``rate`` (``detection_rate`` for AI
    images, ``fpr`` for real ones; :data:`FLAG_RATES`). The rate is ``None`` for no samples (never 0 or NaN)."""
    if rate not in FLAG_RATES.values():
        raise MetricError(f"unknown rate {rate!r}; choose {' or '.join(FLAG_RATES.values())}")
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise MetricError("scores must be a 1-D array of finite numbers")
    flagged = int((s >= threshold).sum())
    return {"n": len(s), "n_verdict_fake": flagged, rate: flagged / len(s) if len(s) else None,
            "threshold": float(threshold)}


def band_report(y, verdicts, uncertain_threshold: float) -> dict[str, Any]:
    """The uncertain band of one set: how many verdicts are ``uncertain`` and their share, and on the decided rows
    (``fake`` or ``real``) the accuracy, the false-positive rate of the reals and the true-positive rate of the
    fakes. A share with nothing to divide by is ``None`` (a set of one class has no FPR or no TPR)."""
    y = np.asarray(y)
    v = np.asarray(verdicts, dtype=object)
    if y.shape != v.shape or y.ndim != 1:
        raise MetricError(f"labels and verdicts must be 1-D arrays of one length (got {y.shape} and {v.shape})")
    if not np.isin(y, (0, 1)).all():
        raise MetricError("labels must be 0 (real) or 1 (fake)")
    unknown = sorted(set(v.tolist()) - {"fake", "uncertain", "real"})
    if unknown:
        raise MetricError(f"verdicts must be fake, uncertain or real (got {unknown})")
    fake, decided = v == "fake", v != "uncertain"
    n_uncertain = int((~decided).sum())

    def share(num: np.ndarray, den: np.ndarray) -> float | None:
        return int(num.sum()) / int(den.sum()) if den.any() else None

    return {
        "uncertain_threshold": float(uncertain_threshold),
        "n_uncertain": n_uncertain,
        "uncertain_share": n_uncertain / len(v) if len(v) else None,
        "n_decided": int(decided.sum()),
        "acc_decided": share(decided & (fake == (y == 1)), decided),
        "fpr_decided": share(fake & (y == 0), decided & (y == 0)),
        "tpr_decided": share(fake & (y == 1), decided & (y == 1)),
    }
