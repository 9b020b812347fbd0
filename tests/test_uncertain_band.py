"""The optional uncertain band: model.json's uncertain_threshold (validation, sha256 of specs without one), the
verdict rule at its edges, ``calibrate --uncertain-fpr`` end to end (both thresholds written; a scan with the model
counts its uncertain rows in the summary, run.json, DuckDB and the report; eval reports the band's share), and
evidence that still overrides an uncertain model verdict."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import genimages as gen
from gcage_fast.calibration.calibrate import CALIBRATION_FILE, CalibrationConfig, _choose
from gcage_fast.cli.scan import _summary_text
from gcage_fast.errors import ConfigError, InputError, ModelError
from gcage_fast.evaluation.evaluate import METRIC_KEYS, UNCERTAIN_KEYS, markdown_table
from gcage_fast.evaluation.metrics import MetricError, band_report
from gcage_fast.models.spec import ModelSpec, read_spec
from gcage_fast.scanning.summary import ScanSummary
from gcage_fast.scoring.aggregate import aggregate_scores, model_verdict
from helpers import read_rows, run_cli
from test_eval_sets import _declared_png

FAST = ("--workers", "1", "--threads", "2")


# ------------------------------------------------------------------------------------------ spec
def test_spec_without_a_band_is_unchanged(tiny_model_dir):
    raw = json.loads((tiny_model_dir / "model.json").read_text())
    spec = read_spec(tiny_model_dir)
    assert spec.uncertain_threshold is None and "uncertain_threshold" not in spec.to_dict()
    assert spec.to_dict() == raw  # the same JSON, so the same sha256 as before the band existed
    banded = replace(spec, uncertain_threshold=0.25)
    assert banded.to_dict()["uncertain_threshold"] == 0.25 and banded.sha256 != spec.sha256
    again = ModelSpec.from_dict(banded.to_dict())
    assert again == banded and again.sha256 == banded.sha256
    assert ModelSpec.from_dict({**raw, "uncertain_threshold": None}) == spec


@pytest.mark.parametrize("value,threshold,message", [
    (0.5, 0.5, "model spec: uncertain_threshold 0.5 must be at least 0 and below the threshold 0.5 (the band is "
               "uncertain_threshold <= p_fake < threshold)"),
    (0.7, 0.5, "model spec: uncertain_threshold 0.7 must be at least 0 and below the threshold 0.5 (the band is "
               "uncertain_threshold <= p_fake < threshold)"),
    (-0.1, 0.5, "model spec: uncertain_threshold -0.1 must be at least 0 and below the threshold 0.5 (the band is "
                "uncertain_threshold <= p_fake < threshold)"),
    (0.0, 0.0, "model spec: uncertain_threshold 0.0 must be at least 0 and below the threshold 0.0 (the band is "
               "uncertain_threshold <= p_fake < threshold)"),
    ("high", 0.5, "model spec is malformed: ValueError: could not convert string to float: 'high'"),
])
def test_spec_refuses_a_bad_band(tiny_model_dir, value, threshold, message):
    raw = json.loads((tiny_model_dir / "model.json").read_text())
    with pytest.raises(ModelError) as err:
        ModelSpec.from_dict({**raw, "threshold": threshold, "uncertain_threshold": value})
    assert str(err.value) == message


def test_model_json_with_a_bad_band_does_not_load(tiny_model_dir, tmp_path):
    from gcage_fast.models.registry import load_model

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    raw = json.loads((bad / "model.json").read_text())
    (bad / "model.json").write_text(json.dumps({**raw, "uncertain_threshold": 0.9, "threshold": 0.6}))
    with pytest.raises(ModelError) as err:
        load_model(bad)
    assert str(err.value) == (f"{bad / 'model.json'}: uncertain_threshold 0.9 must be at least 0 and below the "
                              "threshold 0.6 (the band is uncertain_threshold <= p_fake < threshold)")


# ------------------------------------------------------------------------------------------ the rule
def test_verdict_rule_at_the_edges():
    t, u = 0.5, 0.3
    assert model_verdict(t, t, u) == "fake"
    assert model_verdict(1.0, t, u) == "fake"
    assert model_verdict(float(np.nextafter(t, 0.0)), t, u) == "uncertain"
    assert model_verdict(u, t, u) == "uncertain"
    assert model_verdict(float(np.nextafter(u, 0.0)), t, u) == "real"
    assert model_verdict(0.0, t, u) == "real"
    assert model_verdict(0.0, t, 0.0) == "uncertain"
    # no band: the two-way rule of before
    assert [model_verdict(p, t) for p in (0.0, 0.4, float(np.nextafter(t, 0.0)), t, 1.0)] == [
        "real", "real", "real", "fake", "fake"]
    # a --threshold below the model's band edge leaves the band empty
    assert [model_verdict(p, 0.2, 0.3) for p in (0.1, 0.2, 0.25, 0.3, 0.9)] == [
        "real", "fake", "fake", "fake", "fake"]


def test_aggregate_uses_the_spec_band(tiny_model_dir):
    spec = read_spec(tiny_model_dir)
    patch_p = np.array([0.2, 0.4, 0.45, 0.5, 0.9, 0.7], dtype=np.float32)
    probs = np.stack([1 - patch_p, patch_p], axis=1).astype(np.float32)
    cams = np.random.default_rng(0).random((6, 7, 7)).astype(np.float32)
    counts = [1, 1, 1, 1, 2]  # p_fake 0.2, 0.4, 0.45, 0.5 and the mean of 0.9 and 0.7
    plain = aggregate_scores(spec, 0.5, counts, probs, patch_p, cams)
    banded = aggregate_scores(replace(spec, uncertain_threshold=0.4), 0.5, counts, probs, patch_p, cams)
    assert [s.verdict for s in plain] == ["real", "real", "real", "fake", "fake"]
    assert [s.verdict for s in banded] == ["real", "uncertain", "uncertain", "fake", "fake"]
    assert [s.p_fake for s in banded] == [s.p_fake for s in plain]  # the band changes verdicts only


def test_band_report():
    y = [0, 0, 0, 1, 1, 1, 1]
    v = ["real", "uncertain", "fake", "fake", "uncertain", "uncertain", "real"]
    assert band_report(y, v, 0.3) == {"uncertain_threshold": 0.3, "n_uncertain": 3, "uncertain_share": 3 / 7,
                                      "n_decided": 4, "acc_decided": 2 / 4, "fpr_decided": 1 / 2,
                                      "tpr_decided": 1 / 2}
    only_fakes = band_report([1, 1], ["uncertain", "fake"], 0.3)
    assert only_fakes["fpr_decided"] is None and only_fakes["tpr_decided"] == 1.0
    assert band_report([], [], 0.3)["uncertain_share"] is None
    with pytest.raises(MetricError, match=r"^verdicts must be fake, uncertain or real \(got \['maybe'\]\)$"):
        band_report([0], ["maybe"], 0.3)


# ------------------------------------------------------------------------------------------ calibrate
def test_uncertain_fpr_option_range():
    for bad in (0.01, 0.005, 0.6, float("nan")):
        with pytest.raises(ConfigError) as err:
            CalibrationConfig(reference="r", output="o", fpr=0.01, uncertain_fpr=bad).validate()
        assert str(err.value) == f"--uncertain-fpr must be above --fpr (0.01) and at most 0.5, got {bad}"
    CalibrationConfig(reference="r", output="o", fpr=0.01, uncertain_fpr=0.5).validate()


def test_no_band_when_both_targets_give_one_threshold():
    scores = np.linspace(0.05, 0.95, 10)
    cfg = CalibrationConfig(reference="r", output="o", fpr=0.1, uncertain_fpr=0.15)  # k = 1 for both
    with pytest.raises(InputError) as err:
        _choose(cfg, scores)
    assert str(err.value) == ("--uncertain-fpr 0.15 gives the same threshold as --fpr 0.1 on 10 scored reference "
                              "reals (they allow 1 and 1 false positives, and no real scores between the two "
                              "boundaries): there is no band; choose a larger --uncertain-fpr or add reals")
    tied = np.array([0.9, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    with pytest.raises(InputError, match=r"they allow 1 and 3 false positives"):
        _choose(CalibrationConfig(reference="r", output="o", fpr=0.1, uncertain_fpr=0.3), tied)
    choice, lower = _choose(CalibrationConfig(reference="r", output="o", fpr=0.1, uncertain_fpr=0.5), tied)
    assert lower.threshold == float(np.nextafter(0.1, np.inf)) < choice.threshold == float(np.nextafter(0.8, np.inf))


@pytest.fixture(scope="module")
def banded(tmp_path_factory, tiny_model_dir):
    """A calibrated model with a band, from reals and AI images laid out as an eval set (ai/gen/ + real/)."""
    root = tmp_path_factory.mktemp("band")
    data = root / "data"
    for i in range(20):
        gen.write(data / "real" / f"r{i:02d}.png", gen.encode(gen.photo_like(240, 240, 600 + i), "PNG"))
    for i in range(6):
        gen.write(data / "ai" / "gen" / f"f{i:02d}.png", gen.encode(gen.fake_like(240, 240, 60 + i), "PNG"))
    out = root / "model"
    proc = run_cli("calibrate", data / "real", "--ai", data / "ai", "--model", tiny_model_dir, "-o", out,
                   "--fpr", "0.1", "--uncertain-fpr", "0.3", *FAST)
    return {"root": root, "data": data, "model": out, "proc": proc,
            "record": json.loads((out / CALIBRATION_FILE).read_text())}


def test_calibrate_writes_both_thresholds(banded):
    rec, spec = banded["record"], read_spec(banded["model"])
    band = rec["uncertain"]
    assert spec.threshold == rec["threshold"] and spec.uncertain_threshold == rec["uncertain_threshold"]
    assert band["uncertain_threshold"] == rec["uncertain_threshold"] < rec["threshold"]
    assert band["target_fpr"] == 0.3 and band["band"] == "uncertain_threshold <= p_fake < threshold"
    assert rec["fpr"]["count"] <= 2 and band["fpr"]["count"] <= 6 and band["fpr"]["n"] == 20
    assert band["fpr"]["value"] == band["fpr"]["count"] / 20 >= rec["fpr"]["value"]
    # reals in the band: those at or above its edge that are not flagged fake
    assert band["real_in_band"]["count"] == band["fpr"]["count"] - rec["fpr"]["count"] > 0
    assert band["real_in_band"]["n"] == 20 and band["ai_in_band"]["n"] == 6
    assert rec["source_model"]["uncertain_threshold"] is None
    assert "uncertain from" in spec.description
    line = banded["proc"].stdout.splitlines()[0]
    assert line.endswith(f"; uncertain from {band['uncertain_threshold']:.6g} (FPR {band['fpr']['value']:.4f}): "
                         f"{band['real_in_band']['count']} reals in the band, {band['ai_in_band']['count']} AI images")


def test_calibrate_without_the_option_drops_a_band(banded, tmp_path):
    """A band belongs to the threshold it was chosen with: recalibrating without --uncertain-fpr removes it."""
    from gcage_fast.calibration.calibrate import calibrate

    rec = calibrate(CalibrationConfig(reference=str(banded["data"] / "real"), output=str(tmp_path / "m"),
                                      model=str(banded["model"]), fpr=0.1, workers=1, threads=2))
    assert rec["uncertain_threshold"] is None and rec["uncertain"] is None
    assert rec["source_model"]["uncertain_threshold"] == banded["record"]["uncertain_threshold"]
    spec = read_spec(tmp_path / "m")
    assert spec.uncertain_threshold is None and "uncertain_threshold" not in spec.to_dict()


@pytest.fixture(scope="module")
def band_scan(banded):
    out = banded["root"] / "scan"
    proc = run_cli("scan", banded["data"], "-o", out, "--model", banded["model"], "--json", *FAST)
    return {"out": out, "summary": json.loads(proc.stdout), "rows": read_rows(out)}


def test_scan_counts_uncertain_rows(banded, band_scan):
    rec, rows, summary = banded["record"], band_scan["rows"], band_scan["summary"]
    t, u = rec["threshold"], rec["uncertain_threshold"]
    assert len(rows) == 26 and all(r["status"] == "ok" and r["verdict_source"] == "model" for r in rows)
    assert all(r["threshold"] == t for r in rows)
    expected = {"fake": 0, "uncertain": 0, "real": 0}
    for r in rows:
        verdict = "fake" if r["p_fake"] >= t else "uncertain" if r["p_fake"] >= u else "real"
        assert r["verdict"] == verdict
        expected[verdict] += 1
    expected = {k: v for k, v in expected.items() if v}
    # the same scores as calibration's: its band counts are the scan's uncertain rows
    assert expected["uncertain"] == rec["uncertain"]["real_in_band"]["count"] + rec["uncertain"]["ai_in_band"]["count"]
    assert summary["verdicts"] == expected and summary["verdict_sources"] == {"model": 26}
    text = _summary_text(ScanSummary(**{k: v for k, v in summary.items() if not k.endswith("_per_s")}))
    assert ("  verdicts: " + ", ".join(f"{v} {expected[v]}" for v in ("fake", "uncertain", "real") if v in expected)
            + "\n") in text
    run = json.loads((band_scan["out"] / "run.json").read_text())
    assert run["counts"]["verdicts"] == expected


def test_duckdb_and_report_count_uncertain_rows(banded, band_scan, tmp_path):
    from gcage_fast.report import write_report
    from gcage_fast.report.data import collect
    from test_report import outline

    out, expected = band_scan["out"], band_scan["summary"]["verdicts"]
    data = collect(out, 5)
    assert data.verdicts == {k: v for k, v in sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))}
    html_path = tmp_path / "r.html"
    write_report(out, html_path, top_n=5)
    text = html_path.read_text()
    u, t = banded["record"]["uncertain_threshold"], banded["record"]["threshold"]
    assert f"<div class=card><b>{expected['uncertain']}</b>uncertain</div>" in text
    assert f"<td>uncertain band</td><td>{u} &lt;= p_fake &lt; {t}</td>" in text
    assert f"uncertain from {u:.3f}</text>" in text
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra")
    con = duckdb.connect()
    parts = str(out / "results" / "*.parquet")
    got = dict(con.execute(f"select verdict, count(*) from '{parts}' where status = 'ok' group by all").fetchall())
    assert got == expected
    queries = outline(html_path).pre
    results = [con.execute(q).fetchall() for q in queries]  # every query of the report still runs
    summary = next(r for q, r in zip(queries, results) if q.startswith("SELECT status, verdict, count(*)"))
    assert {v: n for _, v, n in summary if v} == expected


def test_eval_reports_the_uncertain_share(banded, band_scan, tmp_path):
    rec = banded["record"]
    run_cli("eval", banded["data"], "--model", banded["model"], "--json", tmp_path / "eval.json", "-q", *FAST)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["model"]["uncertain_threshold"] == rec["uncertain_threshold"]
    assert report["keys"] == list(METRIC_KEYS) and report["uncertain_keys"] == list(UNCERTAIN_KEYS)
    k = str(report["top_k"][0])
    rows = {Path(r["path"]).name: r for r in band_scan["rows"]}
    labels = [1 if n.startswith("f") else 0 for n in rows]
    verdicts = [r["verdict"] for r in rows.values()]
    n_unc = sum(v == "uncertain" for v in verdicts)
    real_fake = sum(v == "fake" and y == 0 for v, y in zip(verdicts, labels))
    real_decided = sum(v != "uncertain" and y == 0 for v, y in zip(verdicts, labels))
    for variant in ("gcage", "fused"):
        m = report["results"][variant]["none"][k]["all"]
        assert set(m) == set(METRIC_KEYS) | set(UNCERTAIN_KEYS)
        assert m["uncertain_threshold"] == rec["uncertain_threshold"] and m["threshold"] == rec["threshold"]
        assert m["n_uncertain"] == n_unc and m["uncertain_share"] == n_unc / 26 and m["n_decided"] == 26 - n_unc
        assert m["fpr_decided"] == real_fake / real_decided
        assert m["acc_real"] == (20 - rec["fpr"]["count"]) / 20  # at the threshold, as without a band
    assert set(report["results"]["base"]["none"][k]["all"]) == set(METRIC_KEYS)  # the base view has no band
    lines = markdown_table(report).splitlines()
    start = lines.index("Uncertain band (uncertain_threshold <= score < threshold; the metrics above count it as not "
                        "fake; decided: the rows outside it):")
    m = report["results"]["gcage"]["none"][k]["all"]
    band_rows = lines[start + 4:start + 6]  # gcage and fused (the JSON has sorted keys), never base
    assert sorted(row.split(" | ")[0] for row in band_rows) == ["| fused", "| gcage"]
    assert any(row.startswith(f"| gcage | none | {k} | all | [{rec['uncertain_threshold']:.3f}, "
                              f"{rec['threshold']:.3f}) | {n_unc} | {n_unc / 26:.4f} | {m['acc_decided']:.4f} | "
                              f"{m['fpr_decided']:.4f} |") for row in band_rows)


# ------------------------------------------------------------------------------------------ evidence
def test_evidence_overrides_an_uncertain_verdict(tiny_model_dir, tmp_path):
    model = tmp_path / "all-uncertain"
    shutil.copytree(tiny_model_dir, model)
    raw = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**raw, "threshold": 1.0, "uncertain_threshold": 0.0}))
    src = tmp_path / "in"
    for i in range(2):
        gen.write(src / f"p{i}.png", gen.encode(gen.photo_like(240, 240, 70 + i), "PNG"))
    _declared_png(src / "declared.png", 80)
    proc = run_cli("scan", src, "-o", tmp_path / "out", "--model", model, "--json", *FAST)
    summary = json.loads(proc.stdout)
    assert summary["verdicts"] == {"uncertain": 2, "fake": 1}
    assert summary["verdict_sources"] == {"model": 2, "metadata": 1}
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "out")}
    assert (rows["declared.png"]["verdict"], rows["declared.png"]["verdict_source"]) == ("fake", "metadata")
    assert rows["declared.png"]["p_fake"] < 1.0  # the model alone would have said uncertain
