"""The false-positive-rate threshold rule and its binomial tolerance, in NumPy and the standard library.

Rule (a prediction is fake when ``p_fake >= t``, as in a scan): with ``n`` reference reals and target ``fpr``, at
most ``k = floor(fpr * n)`` reals may score at or above ``t``. Let ``v`` be the (k+1)-th highest real score; every
``t <= v`` flags at least k+1 reals, every ``t > v`` at most k. The threshold is the smallest float64 above
``v`` (``numpy.nextafter(v, inf)``), so reals tied at ``v`` all fall below it: ties are never split, and the
realised FPR, ``#{score > v} / n``, can be below the target when a tie straddles the k-th place.

This module only computes; it never scans, reads or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gcage_fast.errors import ConfigError

__all__ = ["ThresholdChoice", "allowed_false_positives", "reals_needed", "fpr_threshold", "clopper_pearson"]

#: Slack when flooring ``fpr * n`` (0.29 * 100 is 28.999999999999996 in floating point).
_EPS = 1e-9


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and what it does on the reference reals."""

    threshold: float
    n_real: int
    allowed: int  # k = floor(fpr * n): false positives the target permits
    n_false_positive: int  # reals with score >= threshold
    boundary_score: float  # v: the (k+1)-th highest real score, the highest score left below the threshold

    @property
    def realised_fpr(self) -> float:
        return self.n_false_positive / self.n_real


def allowed_false_positives(fpr: float, n: int) -> int:
    """``floor(fpr * n)``, robust to the rounding of ``fpr * n``."""
    return int(math.floor(fpr * n + _EPS))


def reals_needed(fpr: float) -> int:
    """The fewest reals for which the target permits one false positive: ``ceil(1 / fpr)``."""
    return int(math.ceil(1.0 / fpr - _EPS))


def fpr_threshold(real_scores: np.ndarray, fpr: float) -> ThresholdChoice:
    """The smallest threshold whose false-positive rate on ``real_scores`` is at most ``fpr`` (module docstring).

    Raises:
        ConfigError: no scores; ``fpr`` outside (0, 1); or the (k+1)-th highest score is 1.0, so that no
            threshold in [0, 1] keeps the rate within the target.
    """
    s = np.sort(np.asarray(real_scores, dtype=np.float64))[::-1]
    n = int(s.size)
    if n == 0:
        raise ConfigError("no reference scores to choose a threshold from")
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"the target false-positive rate must be in (0, 1), got {fpr}")
    k = min(allowed_false_positives(fpr, n), n - 1)
    v = float(s[k])
    if v >= 1.0:
        raise ConfigError(f"{int((s >= 1.0).sum())} of {n} reference reals score p_fake = 1.0, more than the "
                          f"{k} the target FPR {fpr:g} allows; no threshold in [0, 1] reaches it")
    t = float(np.nextafter(v, np.inf))
    return ThresholdChoice(threshold=t, n_real=n, allowed=k, n_false_positive=int((s >= t).sum()),
                           boundary_score=v)


def _binom_cdf(x: int, n: int, p: float, log_fact: np.ndarray) -> float:
    """P(X <= x) for X ~ Binomial(n, p), 0 < p < 1, summed in log space."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    i = np.arange(x + 1)
    logs = log_fact[n] - log_fact[i] - log_fact[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    top = logs.max()
    return float(min(1.0, math.exp(top) * np.exp(logs - top).sum()))


def _solve(f, target: float) -> float:
    """The p in (0, 1) where the decreasing function ``f`` equals ``target`` (bisection to float precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def clopper_pearson(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion: ``x`` successes of ``n``."""
    if n < 1 or not 0 <= x <= n:
        raise ValueError(f"need 0 <= x <= n and n >= 1 (got x={x}, n={n})")
    alpha = 1.0 - confidence
    log_fact = np.r_[0.0, np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))]
    low = 0.0 if x == 0 else _solve(lambda p: _binom_cdf(x - 1, n, p, log_fact), 1.0 - alpha / 2)
    high = 1.0 if x == n else _solve(lambda p: _binom_cdf(x, n, p, log_fact), alpha / 2)
    return low, high
