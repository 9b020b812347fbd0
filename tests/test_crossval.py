"""crossval: one fold per held-out source or generator, scored on what the fold never saw; finished folds kept."""

import json

import pytest

import genimages as gen
from helpers import run_cli


def _item(name, label, source, generator=None):
    from pathlib import Path

    from gcage_fast.evaluation.datasets import LabelledImage

    return LabelledImage(Path(name), name, label, generator=generator, source=source,
                         sha256=__import__("hashlib").sha256(name.encode()).hexdigest())


def test_fold_items_complete_one_class_groups_with_the_other_class_test_split():
    from gcage_fast.evaluation.datasets import split_of
    from gcage_fast.training.crossval import fold_items

    items = ([_item(f"a{i}", 1, "gen-site", "sdxl") for i in range(6)]
             + [_item(f"b{i}", 1, "mixed", "flux") for i in range(40)]
             + [_item(f"r{i}", 0, "mixed") for i in range(40)])
    by_source = fold_items(items, "gen-site", "source")
    assert [i.relpath for i in by_source if i.label == 1] == [f"a{i}" for i in range(6)]
    reals = [i for i in by_source if i.label == 0]
    assert reals and all(split_of(i.digest()) == "test" for i in reals)
    both = fold_items(items, "mixed", "source")  # two classes: the group alone, every split
    assert len(both) == 80
    by_gen = fold_items(items, "flux", "generator")
    assert {i.generator for i in by_gen if i.label == 1} == {"flux"}
    assert all(split_of(i.digest()) == "test" for i in by_gen if i.label == 0)
    assert all(split_of(i.digest()) == "test" for i in fold_items(items, None, "source"))


def test_crossval_cli_writes_a_fold_per_source_and_keeps_finished_folds(tmp_path):
    a = gen.make_labelled_set(tmp_path / "one", n_per_class=16, seed=11)
    b = gen.make_labelled_set(tmp_path / "two", n_per_class=16, seed=14)
    run_cli("train-base", a, "-o", tmp_path / "init", "--width", "8", "--hidden", "16", "--epochs", "1",
            "--workers", "0", "--threads", "2", "--quiet", "--max-images", "6")
    args = ["crossval", a, b, "-o", tmp_path / "cv", "--init", tmp_path / "init", "--freeze-trunk", "--width", "8",
            "--hidden", "16", "--epochs", "2", "--lr", "1e-3", "--views", "2", "--workers", "0", "--threads", "2"]
    first = run_cli(*args)
    summary = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert [f["group"] for f in summary["folds"]] == ["(none held out)", "one", "two"]
    one = summary["folds"][1]
    assert (one["n_real"], one["n_ai"]) == (16, 16)  # every image of the held-out source, no other
    assert 0.0 <= one["roc_auc"] <= 1.0 and 0.0 <= one["acc"] <= 1.0
    held = [f["roc_auc"] for f in summary["folds"][1:]]
    assert summary["heldout_mean_roc_auc"] == pytest.approx(sum(held) / 2)
    assert summary["heldout_min_roc_auc"] == min(held)
    table = (tmp_path / "cv" / "crossval.md").read_text()
    assert table.startswith("| held-out source | real | AI | ROC-AUC |") and first.stdout == table
    record = json.loads((tmp_path / "cv" / "folds").joinpath(
        next(p.name for p in (tmp_path / "cv" / "folds").iterdir() if p.name.startswith("one-")),
        "heldout.json").read_text())
    assert len(record["scores"]) == 32 and {s["label"] for s in record["scores"]} == {0, 1}
    again = run_cli(*args)
    assert again.stderr.count("kept from") == 3 and again.stdout == table


@pytest.mark.parametrize("extra, message", [
    ([], "crossval scores folds on cached trunk features: give --freeze-trunk"),
    (["--freeze-trunk", "--pretrained", "--arch", "effnet-lite0", "--only", "nowhere"],
     "'nowhere' is not a source of the data (sources: one)"),
    (["--freeze-trunk", "--hold-out", "one"], "crossval holds out each group in turn; drop --hold-out"),
])
def test_crossval_cli_errors(tmp_path, extra, message):
    a = gen.make_labelled_set(tmp_path / "one", n_per_class=2, seed=13)
    bad = run_cli("crossval", a, "-o", tmp_path / "cv", "--workers", "0", *extra, check=False)
    assert bad.returncode != 0 and message in bad.stderr
