"""Metrics against hand-computed values, ties and single-class inputs (clear errors, never NaN)."""

import numpy as np
import pytest

from gcage_fast.evaluation.metrics import (
    MetricError,
    average_precision,
    best_balanced_threshold,
    binary_report,
    expected_calibration_error,
    roc_auc,
    threshold_metrics,
)


def test_average_precision_by_hand():
    # ranked: 0.9 F, 0.8 R, 0.7 F, 0.6 R ; P@hits = 1/1, 2/3 ; AP = (1 + 2/3) / 2
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(5 / 6)
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0


def test_average_precision_ties_form_one_threshold():
    # all tied: one threshold, precision 2/4 at recall 1 -> AP = 0.5 (not order dependent)
    assert average_precision([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    # 0.9 F | tie at 0.5 {F, R} -> recall 1/2 at P 1, recall 1 at P 2/3 -> 0.5*1 + 0.5*2/3
    assert average_precision([1, 1, 0], [0.9, 0.5, 0.5]) == pytest.approx(0.5 + 1 / 3)


def test_roc_auc_by_hand_with_ties():
    assert roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(3 / 4)
    assert roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    # pairs (F, R): (0.9,0.1)=1 (0.9,0.5)=1 (0.5,0.1)=1 (0.5,0.5)=0.5 -> 3.5/4
    assert roc_auc([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(3.5 / 4)


def test_threshold_metrics_by_hand():
    y = [1, 1, 1, 0, 0]
    s = [0.9, 0.6, 0.2, 0.7, 0.1]
    m = threshold_metrics(y, s, 0.5)  # TP 2, FN 1, FP 1, TN 1
    assert m == pytest.approx({"acc": 3 / 5, "acc_real": 1 / 2, "acc_fake": 2 / 3, "precision": 2 / 3,
                               "recall": 2 / 3, "f1": 2 / 3})
    assert threshold_metrics(y, s, 0.95)["precision"] == 0.0 and threshold_metrics(y, s, 0.95)["f1"] == 0.0
    assert threshold_metrics([1, 0], [0.5, 0.2], 0.5)["acc"] == 1.0  # s >= threshold is fake


def test_best_balanced_threshold():
    t, bal = best_balanced_threshold([0, 0, 1, 1], [0.1, 0.3, 0.6, 0.8])
    assert t == pytest.approx(0.45) and bal == 1.0
    t, bal = best_balanced_threshold([0, 1, 0, 1], [0.2, 0.4, 0.6, 0.8])
    assert bal == 0.75 and t in (pytest.approx(0.3), pytest.approx(0.7))
    assert best_balanced_threshold([0, 1], [0.9, 0.1])[1] == 0.5  # nothing separates: the best is chance


def test_ece_by_hand():
    # bin [0.1,0.2): two reals at 0.1 -> |0 - 0.1| ; bin [0.9,1]: fake 0.9 and real 0.9 -> |0.5 - 0.9|
    assert expected_calibration_error([0, 0, 1, 0], [0.1, 0.1, 0.9, 0.9]) == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0


@pytest.mark.parametrize("fn", [average_precision, roc_auc, best_balanced_threshold])
def test_single_class_is_a_clear_error(fn):
    with pytest.raises(MetricError, match=r"needs both real and fake samples \(got 0 real, 3 fake\)"):
        fn([1, 1, 1], [0.2, 0.5, 0.9])


def test_report_and_bad_inputs():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.6 + rng.random(200) * 0.5, 0, 1)
    r = binary_report(y, s, 0.5)
    assert set(r) == {"n_real", "n_fake", "ap", "roc_auc", "acc", "acc_real", "acc_fake", "precision", "recall",
                      "f1", "threshold", "best_threshold", "best_balanced_acc", "ece"}
    assert all(np.isfinite(v) for v in r.values())
    with pytest.raises(MetricError, match="real and fake accuracy need both classes"):
        threshold_metrics([0, 0], [0.1, 0.9], 0.5)
    with pytest.raises(MetricError, match="labels must be 0"):
        roc_auc([2, 0], [0.1, 0.2])
    with pytest.raises(MetricError, match="finite"):
        roc_auc([1, 0], [np.nan, 0.2])
