"""B5/B6: training end to end on a small generated set; the output scans and evaluates with the documented keys;
training is deterministic and resumable."""

import csv
import json

import pytest

import genimages as gen
from gcage_fast.evaluation.evaluate import METRIC_KEYS
from gcage_fast.hashing import sha256_file
from helpers import read_rows, run_cli


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return gen.make_labelled_set(tmp_path_factory.mktemp("labelled") / "data", n_per_class=30, seed=2)


@pytest.fixture(scope="module")
def trained(labelled, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    common = ["--workers", "0", "--threads", "2", "--max-images", "40", "--quiet"]
    run_cli("train-base", labelled, "-o", root / "base", "--width", "8", "--hidden", "16", "--epochs", "2",
            "--lr", "1e-3", *common)
    run_cli("train-head", labelled, "--base", root / "base", "-o", root / "gcage", "--epochs", "2", *common)
    return root


def _log(path):
    with open(path / "train_log.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_outputs_complete_model_dirs(trained, labelled):
    from gcage_fast.evaluation.datasets import load_labelled

    n_train = min(40, len(load_labelled(labelled).split("train").items))
    base = json.loads((trained / "base" / "model.json").read_text())
    assert base["head"] is None and base["class_names"] == ["authentic", "synthetic"]
    spec = json.loads((trained / "gcage" / "model.json").read_text())
    assert spec["head"]["widths"] == [16, 32, 64, 128]
    assert spec["base"]["sha256"] == base["base"]["sha256"]  # the base is carried over unchanged
    assert 0.0 <= spec["threshold"] <= 1.0 and spec["base_threshold"] == base["threshold"]
    for d in ("base", "gcage"):
        log = _log(trained / d)
        assert [r["epoch"] for r in log] == ["0", "1"]
        assert set(log[0]) == {"epoch", "train_loss", "val_loss", "val_ap", "val_acc", "lr", "seconds", "best"}
        summary = json.loads((trained / d / "training.json").read_text())["summary"]
        assert summary["train_images"] == n_train and summary["best_epoch"] in (0, 1)
        assert (trained / d / "checkpoints" / "last.safetensors").is_file()


def test_trained_model_scans_and_evaluates(trained, labelled, tmp_path):
    out = tmp_path / "scan"
    run_cli("scan", labelled / "ai", "-o", out, "--model", trained / "gcage", "--workers", "0", "--quiet")
    rows = read_rows(out)
    assert len(rows) == 30 and all(r["status"] == "ok" for r in rows)
    report_path = tmp_path / "eval.json"
    res = run_cli("eval", labelled, "--model", trained / "gcage", "--perturb", "none,jpeg:75,blur:1,grayscale",
                  "--top-k", "1,5", "--json", report_path, "--workers", "0", "--quiet")
    report = json.loads(report_path.read_text())
    assert report["keys"] == list(METRIC_KEYS)
    assert set(report["results"]) == {"gcage", "base", "fused"}
    for variant in ("gcage", "base", "fused"):
        assert set(report["results"][variant]) == {"none", "jpeg:75", "blur:1", "grayscale"}
        for by_k in report["results"][variant].values():
            assert set(by_k) == {"1", "5"}
            for by_g in by_k.values():
                assert set(by_g) == {"all"}  # the one generator's group is the whole set: not repeated
                for m in by_g.values():
                    assert set(m) == set(METRIC_KEYS)
                    assert m["n_real"] == 30 and m["n_fake"] == 30 and m["n_unscanned"] == 0
    metrics, _, decided = res.stdout.strip().partition("\n\n")
    table = metrics.splitlines()
    assert table[0].startswith("| variant | perturb | top-k | generator | n_real | n_fake | AP |")
    assert len(table) == 2 + 3 * 4 * 2  # header, rule, variants x perturbs x top-k (one group: all)
    assert decided.startswith("Verdicts by source (evidence-first; images, by true label):")
    assert sum(n["real"] + n["fake"] for by_k in report["decided_by"].values() for by_src in by_k.values()
               for n in by_src.values()) == 60 * 4 * 2  # every scanned image once per perturbation and top-k


def test_training_is_deterministic_and_resumable(labelled, trained, tmp_path):
    common = ["--workers", "0", "--threads", "2", "--max-images", "40", "--quiet"]
    run_cli("train-head", labelled, "--base", trained / "base", "-o", tmp_path / "again", "--epochs", "2", *common)
    assert sha256_file(tmp_path / "again" / "head.safetensors") == sha256_file(trained / "gcage" / "head.safetensors")
    # an interrupted 3-epoch run (stopped after 2) resumed to 3 epochs equals an uninterrupted 3-epoch run
    run_cli("train-head", labelled, "--base", trained / "base", "-o", tmp_path / "full", "--epochs", "3", *common)
    run_cli("train-head", labelled, "--base", trained / "base", "-o", tmp_path / "again", "--epochs", "3",
            "--resume", *common)
    assert [r["epoch"] for r in _log(tmp_path / "again")] == ["0", "1", "2"]
    assert sha256_file(tmp_path / "again" / "head.safetensors") == sha256_file(tmp_path / "full" / "head.safetensors")
    other = run_cli("train-head", labelled, "--base", trained / "base", "-o", tmp_path / "again", "--epochs", "3",
                    "--resume", "--seed", "1", *common, check=False)
    assert other.returncode == 1 and "cannot resume from" in other.stderr
