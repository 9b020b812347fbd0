"""gcage-fast calibrate: the FPR threshold rule, its Clopper-Pearson interval, isotonic regression (PAV), and the
command end to end (the written model loads; scan and eval use its threshold; bad reference sets fail in one line).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import genimages as gen
from gcage_fast.calibration.calibrate import CALIBRATION_FILE, CalibrationConfig
from gcage_fast.calibration.isotonic import apply_isotonic, fit_isotonic, pav
from gcage_fast.calibration.threshold import (allowed_false_positives, clopper_pearson, fpr_threshold,
                                              reals_needed)
from gcage_fast.errors import ConfigError
from gcage_fast.evaluation.metrics import expected_calibration_error
from helpers import read_rows, run_cli

FAST = ("--workers", "1", "--threads", "2")


# ------------------------------------------------------------------------------------------ threshold rule
def test_threshold_is_the_smallest_with_fpr_at_most_target():
    s = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    c = fpr_threshold(s, 0.1)  # k = 1: one real may be flagged
    assert c.allowed == 1 and c.boundary_score == 0.8
    assert c.threshold == float(np.nextafter(0.8, np.inf))
    assert c.n_false_positive == 1 and c.realised_fpr == 0.1
    assert int((s >= c.threshold).sum()) == 1
    below = float(np.nextafter(c.threshold, -np.inf))  # the next smaller float flags one real too many
    assert int((s >= below).sum()) == 2


def test_ties_at_the_boundary_all_stay_below():
    s = np.array([0.9, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    c = fpr_threshold(s, 0.2)  # k = 2, but the 2nd..4th are tied at 0.8: only 0.9 can be flagged
    assert c.allowed == 2 and c.boundary_score == 0.8
    assert c.n_false_positive == 1 and c.realised_fpr == 0.1
    assert fpr_threshold(np.full(10, 0.3), 0.5).n_false_positive == 0


def test_floor_is_robust_to_rounding():
    assert allowed_false_positives(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996
    assert allowed_false_positives(0.01, 99) == 0
    assert reals_needed(0.01) == 100 and reals_needed(0.1) == 10 and reals_needed(0.3) == 4


def test_no_threshold_when_too_many_reals_score_one():
    with pytest.raises(ConfigError, match=r"^3 of 10 reference reals score p_fake = 1\.0, more than the 1 "):
        fpr_threshold(np.r_[np.ones(3), np.zeros(7)], 0.1)


def test_realised_fpr_on_held_out_reals():
    rng = np.random.default_rng(7)
    scores = rng.beta(2, 5, size=40_000)
    fit, held = scores[:20_000], scores[20_000:]
    for target in (0.01, 0.05, 0.2):
        c = fpr_threshold(fit, target)
        assert c.realised_fpr <= target
        assert c.n_false_positive == allowed_false_positives(target, 20_000)  # continuous scores: no ties
        low, high = clopper_pearson(c.n_false_positive, c.n_real)
        held_fpr = float((held >= c.threshold).mean())
        assert low <= held_fpr <= high, (target, held_fpr, low, high)
        assert abs(held_fpr - target) < 0.01


def test_clopper_pearson_known_values():
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and math.isclose(high, 1 - 0.025 ** 0.1, rel_tol=1e-9)
    low, high = clopper_pearson(10, 10)
    assert high == 1.0 and math.isclose(low, 0.025 ** 0.1, rel_tol=1e-9)
    low, high = clopper_pearson(5, 10)
    assert math.isclose(low, 0.187086, abs_tol=1e-6) and math.isclose(high, 0.812914, abs_tol=1e-6)
    low, high = clopper_pearson(1, 100)
    assert math.isclose(low, 0.000253, abs_tol=1e-6) and math.isclose(high, 0.054459, abs_tol=1e-6)


def test_fpr_option_range():
    for bad in (0.0, -0.1, 0.9, 0.51, float("nan")):
        with pytest.raises(ConfigError, match=r"^--fpr must be in \(0, 0\.5\], got "):
            CalibrationConfig(reference="r", output="o", fpr=bad).validate()
    CalibrationConfig(reference="r", output="o", fpr=0.5).validate()


# ------------------------------------------------------------------------------------------ isotonic
def test_pav_hand_example():
    assert pav(np.array([1.0, 3, 2, 4, 3, 5])).tolist() == [1.0, 2.5, 2.5, 3.5, 3.5, 5.0]
    assert pav(np.array([3.0, 2, 1])).tolist() == [2.0, 2.0, 2.0]
    assert pav(np.array([3.0, 1]), np.array([1.0, 3])).tolist() == [1.5, 1.5]
    assert pav(np.array([0.0, 1, 1])).tolist() == [0.0, 1.0, 1.0]


def test_fit_pools_ties_and_keeps_block_ends():
    x, y = fit_isotonic(np.array([0.1, 0.1, 0.2]), np.array([0, 1, 0]))
    assert x.tolist() == [0.1, 0.2] and np.allclose(y, [1 / 3, 1 / 3])
    x, y = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), np.array([0, 0, 0, 1, 1, 1]))
    assert x.tolist() == [0.1, 0.3, 0.4, 0.6] and y.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert np.allclose(apply_isotonic(np.array([0.0, 0.35, 0.9]), x, y), [0.0, 0.5, 1.0], rtol=0, atol=1e-12)


def test_isotonic_map_is_monotone_and_lowers_ece():
    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, size=4000)
    y = (rng.uniform(0, 1, size=s.size) < s ** 3).astype(np.int64)  # the score overstates P(fake)
    x_k, y_k = fit_isotonic(s, y)
    assert np.all(np.diff(x_k) > 0) and np.all(np.diff(y_k) >= 0)
    grid = apply_isotonic(np.linspace(-0.5, 1.5, 2001), x_k, y_k)
    assert np.all(np.diff(grid) >= 0) and grid.min() >= 0 and grid.max() <= 1
    before = expected_calibration_error(y, s)
    after = expected_calibration_error(y, apply_isotonic(s, x_k, y_k))
    assert before > 0.15 and after < 0.03
    held_s = rng.uniform(0, 1, size=4000)  # and it generalises to fresh samples of the same distribution
    held_y = (rng.uniform(0, 1, size=held_s.size) < held_s ** 3).astype(np.int64)
    assert expected_calibration_error(held_y, apply_isotonic(held_s, x_k, y_k)) < 0.05


# ------------------------------------------------------------------------------------------ end to end
def _reals(root: Path, n: int, seed: int) -> Path:
    for i in range(n):
        gen.write(root / f"r{i:02d}.png", gen.encode(gen.photo_like(240, 240, seed + i), "PNG"))
    return root


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("calibrate")
    real = _reals(root / "real", 20, 500)
    gen.not_an_image(real / "page.jpg")
    gen.zero_byte(real / "empty.jpg")
    for i in range(6):
        gen.write(root / "ai" / f"f{i:02d}.png", gen.encode(gen.fake_like(240, 240, i), "PNG"))
    out = root / "model"
    proc = run_cli("calibrate", real, "--model", tiny_model_dir, "-o", out, "--fpr", "0.1", "--ai", root / "ai",
                   *FAST)
    return {"root": root, "real": real, "out": out, "proc": proc,
            "record": json.loads((out / CALIBRATION_FILE).read_text())}


def test_calibrated_model_directory(calibrated, tiny_model_dir):
    from gcage_fast.hashing import sha256_file
    from gcage_fast.models.registry import load_model
    from gcage_fast.models.spec import read_spec

    out, rec = calibrated["out"], calibrated["record"]
    source = read_spec(tiny_model_dir)
    model = load_model(out)  # verifies the copied weights against the new spec
    spec = model.spec
    assert sorted(p.name for p in out.iterdir()) == ["base.safetensors", "calibration.json", "head.safetensors",
                                                     "model.json"]
    assert spec.model_id == "tiny-calibrated@0" and spec.threshold == rec["threshold"]
    assert spec.base_threshold == source.base_threshold  # the model has a head: the base view is unchanged
    assert spec.base.sha256 == source.base.sha256 == sha256_file(out / "base.safetensors")
    assert spec.head.sha256 == source.head.sha256 == sha256_file(out / "head.safetensors")
    assert rec["model"] == {"id": "tiny-calibrated@0", "sha256": spec.sha256}
    assert rec["source_model"]["id"] == "tiny@0" and rec["source_model"]["sha256"] == source.sha256
    assert rec["target_fpr"] == 0.1 and rec["n_real"] == 20 and rec["n_ai"] == 6 and rec["n_unscanned"] == 2
    assert rec["unscanned"] == {"real": {"decode.empty": 1, "decode.unidentified": 1}, "ai": {}}
    assert rec["fpr"]["n"] == 20 and rec["fpr"]["count"] <= 2 and rec["fpr"]["value"] == rec["fpr"]["count"] / 20
    assert rec["fpr"]["method"] == "clopper-pearson" and rec["fpr"]["confidence"] == 0.95
    low, high = rec["fpr"]["interval"]
    assert (low, high) == clopper_pearson(rec["fpr"]["count"], 20)
    assert rec["tpr"]["n"] == 6 and 0 <= rec["tpr"]["value"] <= 1
    assert rec["map"]["method"] == "isotonic" and rec["map"]["applied"] is False
    assert "not applied" in rec["map"]["note"]
    assert np.all(np.diff(rec["map"]["x"]) > 0) and np.all(np.diff(rec["map"]["y"]) >= 0)
    assert rec["ece"]["after"] <= rec["ece"]["before"]
    assert rec["command"].startswith("gcage-fast calibrate ") and rec["date"].endswith("+00:00")
    assert calibrated["proc"].stdout.startswith(f"tiny-calibrated@0: threshold {rec['threshold']:.6g} (was 0.5); ")


def test_scan_uses_the_new_threshold(calibrated, tmp_path):
    rec = calibrated["record"]
    run_cli("scan", calibrated["real"], "-o", tmp_path / "s", "--model", calibrated["out"],
            "--verdict-policy", "model-only", *FAST)
    rows = [r for r in read_rows(tmp_path / "s", ["status", "threshold", "p_fake", "verdict", "model_id"])
            if r["status"] == "ok"]
    assert len(rows) == 20
    assert {r["threshold"] for r in rows} == {rec["threshold"]}
    assert {r["model_id"] for r in rows} == {"tiny-calibrated@0"}
    assert sum(r["verdict"] == "fake" for r in rows) == rec["fpr"]["count"]  # the same pipeline, the same scores


def test_eval_runs_with_the_calibrated_model(calibrated, tmp_path):
    data = gen.make_labelled_set(tmp_path / "data", n_per_class=3, seed=2)
    run_cli("eval", data, "--model", calibrated["out"], "--json", tmp_path / "eval.json", "-q", *FAST)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["model"]["id"] == "tiny-calibrated@0"
    assert report["model"]["threshold"] == calibrated["record"]["threshold"]
    assert report["results"]["gcage"]["none"]["5"]["all"]["threshold"] == calibrated["record"]["threshold"]


def test_reals_only_records_no_map_and_overwrite(calibrated, tiny_model_dir):
    out = calibrated["out"]
    refused = run_cli("calibrate", calibrated["real"], "--model", tiny_model_dir, "-o", out, "-q", *FAST,
                      check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"Error: {out} exists and is not empty; choose a new directory or pass "
                                      "--overwrite")
    run_cli("calibrate", calibrated["real"], "--model", tiny_model_dir, "-o", out, "--fpr", "0.05", "--overwrite",
            "-q", *FAST)
    rec = json.loads((out / CALIBRATION_FILE).read_text())
    assert rec["target_fpr"] == 0.05 and rec["fpr"]["count"] <= 1 and rec["n_ai"] == 0 and rec["tpr"] is None
    assert rec["map"]["method"] is None and rec["ece"]["after"] is None
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no staging left


def _error(args, tiny_model_dir, tmp_path) -> str:
    proc = run_cli("calibrate", *args, "--model", tiny_model_dir, "-o", tmp_path / "out", "-q", *FAST,
                   check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    return proc.stderr.strip()


def test_bad_reference_sets(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error([empty], tiny_model_dir, tmp_path) == f"Error: the reference set {empty} holds no files"
    junk = tmp_path / "junk"
    gen.not_an_image(junk / "a.jpg")
    gen.not_an_image(junk / "b.png")
    gen.zero_byte(junk / "c.jpg")
    assert _error([junk], tiny_model_dir, tmp_path) == (
        f"Error: no image of the reference set {junk} could be scored (3 files unscanned: decode.empty: 1, "
        "decode.unidentified: 2)")
    assert _error([junk, "--fpr", "0.9"], tiny_model_dir, tmp_path) == "Error: --fpr must be in (0, 0.5], got 0.9"
    few = _reals(tmp_path / "few", 5, 900)
    assert _error([few, "--fpr", "0.1"], tiny_model_dir, tmp_path) == (
        "Error: 5 scored reference reals are too few for --fpr 0.1: at least 10 are needed "
        "(fpr * n_real must be >= 1)")
    assert _error([few, "--fpr", "0.2", "--ai", junk], tiny_model_dir, tmp_path) == (
        f"Error: no image of the AI set {junk} could be scored (3 files unscanned: decode.empty: 1, "
        "decode.unidentified: 2)")


def test_help_says_the_map_is_not_applied():
    proc = run_cli("calibrate", "--help")
    assert "Example:" in proc.stdout and "gcage-fast calibrate " in proc.stdout
    assert "NOT applied to p_fake" in " ".join(proc.stdout.split())


def test_base_only_model_moves_both_thresholds(tmp_path):
    """Without a head p_fake is the base detector's score, so base_threshold follows the threshold (library API)."""
    from gcage_fast.calibration.calibrate import calibrate
    from gcage_fast.models.registry import init_model, load_model

    init_model(tmp_path / "base-only", seed=4, width=8, hidden=32, with_head=False, name="bare")
    rec = calibrate(CalibrationConfig(reference=str(_reals(tmp_path / "real", 10, 700)), output=str(tmp_path / "m"),
                                      model=str(tmp_path / "base-only"), fpr=0.1, workers=1, threads=2))
    spec = load_model(tmp_path / "m").spec
    assert spec.model_id == "bare-calibrated@0" and spec.head is None
    assert spec.threshold == spec.base_threshold == rec["threshold"]
    assert rec["fpr"]["count"] <= 1 and rec["n_real"] == 10 and rec["map"]["method"] is None
    assert rec["command"] is None
