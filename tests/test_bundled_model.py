"""The bundled default model: B1 (held-out faces test split, re-measured), B3 (the demo scan), size and provenance."""

import json
from pathlib import Path

import pytest

from gcage_fast.models.registry import DEFAULT_MODEL, bundled_dir, load_model
from helpers import read_rows, run_cli

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces"
BUNDLE = bundled_dir() / DEFAULT_MODEL


def test_bundled_model_is_complete_small_and_verified():
    model = load_model(None)  # the default: verifies the sha256 of every weight file
    assert model.spec.model_id == "faces-gcage@1" and model.head is not None
    assert model.spec.base.arch == "effnet-lite0"
    size = sum(p.stat().st_size for p in BUNDLE.glob("*.safetensors"))
    assert size <= 30 * 2**20
    for f in ("split.csv", "train_log_base.csv", "train_log_head.csv", "eval-test.json", "eval-test.md"):
        assert (BUNDLE / f).is_file(), f
    assert (ROOT / "docs" / "MODEL_CARD.md").read_text().count("faces-gcage") >= 1


def test_demo_scan_of_the_bundled_samples(tmp_path):
    """B3: the README's main job scans the bundled samples with the bundled model; verify passes."""
    out = tmp_path / "demo"
    res = run_cli("scan", ROOT / "gcage_fast" / "samples" / "images", "-o", out, "--heatmaps", "png", "--json")
    summary = json.loads(res.stdout)
    assert summary["model_id"] == "faces-gcage@1" and summary["status"] == {"ok": 6}
    rows = read_rows(out)
    assert len(rows) == 6 and len(list(out.glob("heatmaps/*/*.png"))) == 6
    run_cli("verify", out)


@pytest.mark.skipif(not FACES.is_dir(), reason="../shared/data/faces is not present")
def test_faces_test_split_meets_the_bar(tmp_path):
    """B1: on the held-out test split the G-CAGE verdict reaches AP >= 0.98 and real/fake accuracy >= 0.93 at the
    stored threshold; the base detector alone is reported beside it."""
    report_path = tmp_path / "eval.json"
    run_cli("eval", FACES, "--split", "test", "--json", report_path, "--quiet")
    report = json.loads(report_path.read_text())
    assert report["model"]["id"] == "faces-gcage@1" and report["data"]["split"] == "test"
    k = str(load_model(None).spec.top_k)
    gcage = report["results"]["gcage"]["none"][k]["all"]
    assert gcage["n_real"] + gcage["n_fake"] == report["data"]["n_images"] and gcage["n_unscanned"] == 0
    assert gcage["ap"] >= 0.98
    assert gcage["acc_real"] >= 0.93 and gcage["acc_fake"] >= 0.93
    base = report["results"]["base"]["none"][k]["all"]
    assert base["ap"] >= 0.9  # reported for comparison (model card)
    committed = json.loads((BUNDLE / "eval-test.json").read_text())["results"]["gcage"]["none"][k]["all"]
    assert abs(committed["ap"] - gcage["ap"]) <= 1e-6  # the model card's numbers are what the model does
