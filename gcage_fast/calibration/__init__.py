"""Threshold calibration: choose a model's threshold for a target false-positive rate on known-real images and
write a calibrated model directory (:mod:`gcage_fast.calibration.calibrate`); the threshold rule and its binomial
interval (:mod:`gcage_fast.calibration.threshold`); isotonic regression (:mod:`gcage_fast.calibration.isotonic`).

Importing this package is cheap (NumPy only); nothing here changes how a scan computes p_fake.
"""

from gcage_fast.calibration.calibrate import CalibrationConfig, calibrate
from gcage_fast.calibration.isotonic import apply_isotonic, fit_isotonic, pav
from gcage_fast.calibration.threshold import ThresholdChoice, clopper_pearson, fpr_threshold

__all__ = ["CalibrationConfig", "calibrate", "apply_isotonic", "fit_isotonic", "pav", "ThresholdChoice",
           "clopper_pearson", "fpr_threshold"]
