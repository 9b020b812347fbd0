"""The benchmark entry point runs in its quick mode and writes tables with the expected columns and finite,
positive numbers (speed itself is not asserted: tables in benchmarks/results/ carry the measurements)."""

import csv
import math

from benchmarks.__main__ import main
from benchmarks.common import COLUMNS


def test_quick_benchmarks_write_complete_tables(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results = tmp_path / "results"
    rc = main(["--quick", "--suites", "engine,pipeline,stages", "--model", str(tiny_model_dir), "--results",
               str(results), "--tag", "smoke", "--threads", "2"])
    assert rc == 0
    rows = list(csv.DictReader((results / "runs.csv").open()))
    assert list(rows[0].keys()) == COLUMNS
    suites = {r["suite"] for r in rows}
    assert suites == {"engine", "pipeline"}
    for r in rows:
        assert math.isfinite(float(r["patches_per_s"])) and float(r["patches_per_s"]) > 0, r
        assert r["repeats"] == "1"
    pipeline = [r for r in rows if r["suite"] == "pipeline"]
    assert any(r["backend"].startswith("baseline") for r in pipeline)
    for r in pipeline:
        assert float(r["images_per_s"]) > 0 and int(r["images"]) == 6 and float(r["peak_rss_mib"]) > 0
        assert float(r["ratio_to_baseline"]) > 0
    for suite in ("engine", "pipeline", "stages"):
        text = (results / f"smoke-{suite}.md").read_text()
        assert text.startswith(f"# Benchmark: {suite}") and "Machine:" in text
    stages = (results / "smoke-stages.md").read_text()
    for stage in ("read", "decode", "contrast + top-k", "base engine", "fused step", "head engine", "write"):
        assert f"| {stage} |" in stages


def test_quick_precision_and_kernel_suites(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    results = tmp_path / "results"
    rc = main(["--quick", "--suites", "precision,kernels", "--precisions", "fp32,int8", "--model",
               str(tiny_model_dir), "--results", str(results), "--tag", "smoke", "--threads", "2"])
    assert rc == 0
    lines = (results / "smoke-precision.md").read_text().splitlines()
    assert lines[0] == "# Benchmark: precision"
    table = [line.split("|")[1:-1] for line in lines if line.startswith("| ort")]
    assert [c[1].strip() for c in table] == ["fp32", "int8"]
    for cells in table:
        engine, ratio, scan, scan_ratio = (float(cells[i].split()[0]) for i in (2, 3, 4, 5))
        assert all(math.isfinite(v) and v > 0 for v in (engine, ratio, scan, scan_ratio))
    assert float(table[0][3]) == 1.0  # fp32 is the reference of the ratios
    kernels = (results / "smoke-kernels.md").read_text()
    assert kernels.startswith("# Benchmark: kernels") and "| fuse_cam (cams) | reference | cpu | timed |" in kernels
