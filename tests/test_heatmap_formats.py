"""scan --heatmaps png|jpeg|webp, --heatmap-quality and --heatmaps-for: each file decodes as its format, quality
changes the size, only the rows asked for get an overlay, verify and report still pass, a resume keeps them."""

import json
from pathlib import Path

import pytest
from PIL import Image

import genimages as gen
from gcage_fast.output.heatmaps import find_heatmap, heatmap_path, wants_heatmap
from helpers import read_rows, run_cli

SCAN = ("--workers", "0", "--top-k", "2", "--quiet")


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("heat") / "src"
    for i in range(4):
        gen.save_image(d / f"{i}.jpg", 300, 260, 10 + i)
    gen.save_image(d / "Bild-ä.png", 260, 300, 20, fmt="PNG")
    return d


def _scan(src, out, model, *extra, check=True):
    return run_cli("scan", src, "-o", out, "--model", model, *SCAN, *extra, check=check)


def _heatmaps(out: Path) -> list[Path]:
    return sorted(p for p in (out / "heatmaps").rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt, pil, ext", [("png", "PNG", "png"), ("jpeg", "JPEG", "jpg"), ("webp", "WEBP", "webp")])
def test_each_format_decodes_as_itself(src, tmp_path, tiny_model_dir, fmt, pil, ext):
    out = tmp_path / "out"
    _scan(src, out, tiny_model_dir, "--heatmaps", fmt)
    rows = read_rows(out)
    files = _heatmaps(out)
    assert len(files) == len(rows) == 5
    for row in rows:
        rel = heatmap_path(row["input_id"], fmt)
        assert row["heatmap_path"] == str(rel) and rel.suffix == f".{ext}"
        assert find_heatmap(out, row["input_id"]) == out / rel
        with Image.open(out / rel) as im:
            assert im.format == pil
            im.load()
    assert json.loads(run_cli("verify", out, "--json").stdout)["ok"] is True
    report = tmp_path / "report.html"
    run_cli("report", out, "-o", report, "--no-sources")
    assert report.read_text().count("data:image/jpeg;base64,") >= 5


def test_quality_changes_the_size(src, tmp_path, tiny_model_dir):
    sizes = {}
    for fmt, q in (("jpeg", 30), ("jpeg", 95), ("webp", 30), ("webp", 95)):
        out = tmp_path / f"{fmt}{q}"
        _scan(src, out, tiny_model_dir, "--heatmaps", fmt, "--heatmap-quality", q)
        sizes[fmt, q] = sum(p.stat().st_size for p in _heatmaps(out))
    assert sizes["jpeg", 30] < sizes["jpeg", 95] and sizes["webp", 30] < sizes["webp", 95]


def test_heatmaps_for_fake_writes_exactly_the_fake_rows(src, tmp_path, tiny_model_dir):
    first = tmp_path / "all"
    _scan(src, first, tiny_model_dir)
    scores = sorted(r["p_fake"] for r in read_rows(first))
    threshold = (scores[1] + scores[2]) / 2  # two real rows, three fake ones
    out = tmp_path / "fake"
    _scan(src, out, tiny_model_dir, "--threshold", f"{threshold:.9f}", "--heatmaps", "webp", "--heatmaps-for",
          "fake")
    rows = read_rows(out)
    fake = {r["input_id"] for r in rows if r["verdict"] == "fake"}
    assert len(fake) == 3
    assert {p.stem for p in _heatmaps(out)} == fake
    assert {r["input_id"] for r in rows if r["heatmap_path"]} == fake
    markers = [json.loads(p.read_text()) for p in (out / "commits").glob("*.json")]
    assert sum(m["heatmaps"] for m in markers) == 3
    assert json.loads(run_cli("verify", out, "--json").stdout)["ok"] is True


def test_resume_refuses_a_changed_heatmap_setting(src, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    _scan(src, out, tiny_model_dir, "--heatmaps", "jpeg")
    res = _scan(src, out, tiny_model_dir, "--heatmaps", "webp", "--resume", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "Error: cannot resume with different settings (heatmaps: was {'for': 'all', 'format': 'jpeg', "
        "'quality': 85}, now {'format': 'webp', 'quality': 85, 'for': 'all'}); use the original options, or "
        "--overwrite to start again")
    res = _scan(src, out, tiny_model_dir, "--heatmaps", "jpeg", "--heatmap-quality", "50", "--resume", check=False)
    assert res.returncode == 1 and "(heatmaps: was {" in res.stderr
    _scan(src, out, tiny_model_dir, "--heatmaps", "jpeg", "--resume")
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["heatmaps"] == "jpeg" and info["config"]["heatmap_quality"] == 85
    assert info["fingerprint"]["heatmaps"] == {"format": "jpeg", "quality": 85, "for": "all"}


def test_bad_quality_is_a_usage_error(src, tmp_path, tiny_model_dir):
    res = _scan(src, tmp_path / "out", tiny_model_dir, "--heatmaps", "jpeg", "--heatmap-quality", "0", check=False)
    assert res.returncode == 2 and "Invalid value for '--heatmap-quality'" in res.stderr


def test_wants_heatmap():
    assert [wants_heatmap(v, "all") for v in ("fake", "uncertain", "real", None)] == [True] * 4
    assert [wants_heatmap(v, "fake") for v in ("fake", "uncertain", "real")] == [True, False, False]
    assert [wants_heatmap(v, "uncertain") for v in ("fake", "uncertain", "real")] == [True, True, False]
