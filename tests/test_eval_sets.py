"""``gcage-fast eval`` on sets of one class (detection rate, false-positive rate), on folders with files that are
not images, and on sets with one generator; the numbers are checked against a scan of the same files."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import genimages as gen
from gcage_fast.evaluation.datasets import load_labelled
from gcage_fast.evaluation.evaluate import METRIC_KEYS, RATE_KEYS, EvalConfig, evaluate, markdown_table
from gcage_fast.evaluation.metrics import MetricError, flag_rate_report
from helpers import read_rows, run_cli

SHARED_BROAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"
A1111 = "a photo of a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model: v1-5"
VARIANTS = ("gcage", "base", "fused")


def _declared_png(path: Path, seed: int) -> Path:
    """A PNG whose text chunk declares a generator (evidence decides its fused verdict: fake)."""
    info = PngInfo()
    info.add_text("parameters", A1111)
    buf = io.BytesIO()
    Image.fromarray(gen.photo_like(240, 240, seed)).save(buf, format="PNG", pnginfo=info)
    return gen.write(path, buf.getvalue())


def _sidecars(d: Path) -> None:
    """Files a folder layout must never list."""
    gen.write(d / "README.md", b"# about these images\n")
    gen.write(d / "SOURCE.md", b"from somewhere\n")
    gen.write(d / "manifest.csv", b"relpath,label\nx.jpg,ai\n")
    gen.write(d / "meta.json", b'{"seed": 1}\n')
    gen.write(d / "captions.txt", b"a cat\n")
    gen.write(d / ".DS_Store", gen.encode(gen.photo_like(64, 64, 1), "JPEG"))
    gen.write(d / ".cache" / "thumb.jpg", gen.encode(gen.photo_like(64, 64, 2), "JPEG"))


def _verdicts(rows: list[dict], threshold: float, base_threshold: float) -> dict[str, list[bool]]:
    """Each variant's verdict (fake?) of the ok rows, by the rules eval documents."""
    ok = [r for r in rows if r["status"] == "ok"]
    return {"gcage": [r["p_fake"] >= threshold for r in ok],
            "base": [r["base_p_fake"] >= base_threshold for r in ok],
            "fused": [r["verdict"] == "fake" for r in ok]}


def test_flag_rate_report():
    assert flag_rate_report([0.1, 0.5, 0.9, 0.2], 0.5, "detection_rate") == {
        "n": 4, "n_verdict_fake": 2, "detection_rate": 0.5, "threshold": 0.5}
    assert flag_rate_report([], 0.5, "fpr") == {"n": 0, "n_verdict_fake": 0, "fpr": None, "threshold": 0.5}
    with pytest.raises(MetricError, match="unknown rate 'recall'"):
        flag_rate_report([0.1], 0.5, "recall")
    with pytest.raises(MetricError, match="finite"):
        flag_rate_report([float("nan")], 0.5, "fpr")


def test_folder_layouts_list_only_images(tmp_path):
    ai_real = tmp_path / "ai-real"
    gen.save_image(ai_real / "ai" / "sdxl" / "a.jpg", 120, 120, 1)
    gen.save_image(ai_real / "ai" / "sdxl" / "B.JPG", 120, 120, 2)
    gen.write(ai_real / "ai" / "sdxl" / "no-extension", gen.encode(gen.photo_like(120, 120, 3), "PNG"))
    gen.write(ai_real / "ai" / "sdxl" / "c.bin", gen.encode(gen.photo_like(120, 120, 4), "WEBP"))
    gen.not_an_image(ai_real / "ai" / "sdxl" / "broken.png")  # an image by name: listed, then unscanned
    gen.save_image(ai_real / "real" / "r.tif", 120, 120, 5, fmt="TIFF")
    for d in (ai_real / "ai", ai_real / "ai" / "sdxl", ai_real / "real"):
        _sidecars(d)
    ds = load_labelled(ai_real)
    assert ds.layout == "ai-real"
    assert [(i.relpath, i.label, i.generator) for i in ds.items] == [
        ("ai/sdxl/B.JPG", 1, "sdxl"), ("ai/sdxl/a.jpg", 1, "sdxl"), ("ai/sdxl/broken.png", 1, "sdxl"),
        ("ai/sdxl/c.bin", 1, "sdxl"), ("ai/sdxl/no-extension", 1, "sdxl"), ("real/r.tif", 0, None)]

    cnn = tmp_path / "cnn"
    gen.save_image(cnn / "progan" / "0_real" / "r.png", 120, 120, 6, fmt="PNG")
    gen.save_image(cnn / "progan" / "1_fake" / "f.bmp", 120, 120, 7, fmt="BMP")
    gen.write(cnn / "progan" / "1_fake" / "f.gif", gen.encode(gen.photo_like(120, 120, 8), "GIF"))
    for d in (cnn / "progan", cnn / "progan" / "0_real", cnn / "progan" / "1_fake"):
        _sidecars(d)
    gen.write(cnn / "SOURCE.md", b"notes\n")
    ds = load_labelled(cnn)
    assert ds.layout == "cnndetection"
    assert [(i.relpath, i.label) for i in ds.items] == [
        ("progan/0_real/r.png", 0), ("progan/1_fake/f.bmp", 1), ("progan/1_fake/f.gif", 1)]

    manifest = tmp_path / "manifest"
    gen.save_image(manifest / "x" / "listed.jpg", 120, 120, 9)
    gen.save_image(manifest / "x" / "unlisted.jpg", 120, 120, 10)
    _sidecars(manifest / "x")
    gen.write(manifest / "SOURCE.md", b"notes\n")
    (manifest / "manifest.csv").write_text("relpath,label\nx/listed.jpg,real\n")
    assert [i.relpath for i in load_labelled(manifest).items] == ["x/listed.jpg"]


def test_sets_of_one_class_have_one_folder(tmp_path):
    gen.save_image(tmp_path / "only-ai" / "ai" / "g" / "a.jpg", 120, 120, 1)
    gen.save_image(tmp_path / "only-real" / "real" / "r.jpg", 120, 120, 2)
    gen.save_image(tmp_path / "only-fake" / "1_fake" / "f.jpg", 120, 120, 3)
    assert [(i.label, i.generator) for i in load_labelled(tmp_path / "only-ai").items] == [(1, "g")]
    assert [i.label for i in load_labelled(tmp_path / "only-real").items] == [0]
    assert load_labelled(tmp_path / "only-real").layout == "ai-real"
    assert [i.label for i in load_labelled(tmp_path / "only-fake").items] == [1]
    (tmp_path / "empty" / "ai").mkdir(parents=True)
    gen.write(tmp_path / "empty" / "ai" / "README.md", b"nothing yet\n")
    from gcage_fast.errors import InputError

    with pytest.raises(InputError, match=r"no images found in .*empty \(ai-real layout\)"):
        load_labelled(tmp_path / "empty")


def _scan_rows(src: Path, out: Path, model: Path, *extra) -> dict[str, dict]:
    """A scan of ``src`` as a user runs it: rows by path."""
    run_cli("scan", src, "-o", out, "--model", model, "--workers", "0", "--quiet", *extra)
    return {r["path"]: r for r in read_rows(out)}


def _splitting_model(model_dir: Path, rows: list[dict], dest: Path) -> Path:
    """A copy of ``model_dir`` whose thresholds fall between the middle scores of ``rows`` (the untrained model
    flags every image at 0.5), so that the rates are neither 0 nor 1."""
    shutil.copytree(model_dir, dest)
    spec = json.loads((dest / "model.json").read_text())
    for key, column in (("threshold", "p_fake"), ("base_threshold", "base_p_fake")):
        scores = sorted({r[column] for r in rows if r["status"] == "ok"})
        assert len(scores) >= 3
        spec[key] = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    (dest / "model.json").write_text(json.dumps(spec))
    return dest


def test_ai_only_set_reports_detection_rates(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    images = {"gen_a": [gen.save_image(data / "ai" / "gen_a" / f"a{i}.jpg", 200, 180, 10 + i) for i in range(4)],
              "gen_b": [gen.save_image(data / "ai" / "gen_b" / f"b{i}.png", 180, 200, 20 + i, fmt="PNG")
                        for i in range(3)] + [_declared_png(data / "ai" / "gen_b" / "declared.png", 30)]}
    gen.not_an_image(data / "ai" / "gen_b" / "broken.jpg")  # listed (an image by name), then unscanned
    for d in (data / "ai", data / "ai" / "gen_a", data / "ai" / "gen_b"):
        _sidecars(d)
    paths = {"all": images["gen_a"] + images["gen_b"], **images}
    first = _scan_rows(data / "ai", tmp_path / "first", tiny_model_dir)
    model = _splitting_model(tiny_model_dir, [first[str(p)] for p in paths["all"]], tmp_path / "model")

    report_path = tmp_path / "eval.json"
    res = run_cli("eval", data, "--model", model, "--workers", "0", "--json", report_path, "--quiet")
    report = json.loads(report_path.read_text())
    assert report["mode"] == "detection_rate" and report["keys"] == list(RATE_KEYS["detection_rate"])
    assert report["data"]["n_images"] == 9 and report["data"]["n_real"] == 0  # 8 images and broken.jpg
    assert report["data"]["generators"] == ["gen_a", "gen_b"]
    assert set(report["results"]) == set(VARIANTS)

    by_path = _scan_rows(data / "ai", tmp_path / "scan", model)  # the same files with the same model
    thresholds = report["model"]
    k = str(report["top_k"][0])
    for group, group_paths in paths.items():
        rows = [by_path[str(p)] for p in group_paths]
        verdicts = _verdicts(rows, thresholds["threshold"], thresholds["base_threshold"])
        assert [r["verdict"] == "fake" for r in rows] == [
            r["verdict_source"] != "model" or r["p_fake"] >= thresholds["threshold"] for r in rows]
        for variant in VARIANTS:
            m = report["results"][variant]["none"][k][group]
            assert set(m) == set(RATE_KEYS["detection_rate"])  # no AP, ROC-AUC, best threshold, balanced accuracy
            assert m["n"] == len(group_paths) and m["n_verdict_fake"] == sum(verdicts[variant])
            assert m["detection_rate"] == sum(verdicts[variant]) / len(group_paths)
            assert m["n_unscanned"] == (0 if group == "gen_a" else 1)
    rates = {v: report["results"][v]["none"][k]["all"]["detection_rate"] for v in VARIANTS}
    assert 0 < rates["gcage"] < 1 and 0 < rates["base"] < 1 and rates["fused"] >= rates["gcage"]
    declared = by_path[str(images["gen_b"][-1])]
    assert declared["verdict_source"] == "metadata" and declared["verdict"] == "fake"
    assert report["decided_by"]["none"][k] == {"metadata": {"real": 0, "fake": 1}, "model": {"real": 0, "fake": 7}}

    lines = res.stdout.strip().partition("\n\n| perturb")[0].splitlines()
    assert lines[0].startswith("Detection rate: the share of the scanned AI images whose verdict is fake")
    assert lines[2] == ("| variant | perturb | top-k | generator | n | verdict fake | detection rate | threshold "
                        "| n_unscanned |")
    assert len(lines) == 4 + 3 * 3 + 2 and lines[-1].startswith("Verdicts by source")  # variants x groups
    m = report["results"]["base"]["none"][k]["gen_a"]
    assert (f"| base | none | {k} | gen_a | 4 | {m['n_verdict_fake']} | {m['detection_rate']:.4f} | "
            f"{thresholds['base_threshold']:.3f} | 0 |") in lines
    # the JSON (written with sorted keys) renders the same rows
    assert sorted(markdown_table(report).splitlines()) == sorted(res.stdout.strip().splitlines())


def test_real_only_manifest_set_reports_false_positive_rates(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    listed = [gen.save_image(data / "photos" / f"p{i}.jpg", 200, 200, 40 + i) for i in range(5)]
    gen.save_image(data / "photos" / "not-listed.jpg", 200, 200, 50)
    gen.write(data / "SOURCE.md", b"where the photos come from\n")
    gen.write(data / "photos" / "p0.json", b"{}\n")
    with open(data / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["relpath", "label", "generator"])
        w.writerows([[p.relative_to(data).as_posix(), "real", ""] for p in listed])
    first = _scan_rows(data / "photos", tmp_path / "first", tiny_model_dir, "--top-k", "3")
    model = _splitting_model(tiny_model_dir, [first[str(p)] for p in listed], tmp_path / "model")
    report = evaluate(EvalConfig(data=str(data), model=str(model), workers=0, top_k=(3,)))
    assert report["mode"] == "fpr" and report["keys"] == list(RATE_KEYS["fpr"])
    assert report["data"]["n_images"] == 5 and report["data"]["layout"] == "manifest"

    rows = [first[str(p)] for p in listed]  # scores do not depend on the thresholds
    assert all(r["verdict_source"] == "model" for r in rows)
    t, bt = report["model"]["threshold"], report["model"]["base_threshold"]
    flagged = {"gcage": sum(r["p_fake"] >= t for r in rows), "base": sum(r["base_p_fake"] >= bt for r in rows)}
    flagged["fused"] = flagged["gcage"]
    assert 0 < flagged["gcage"] < 5 and 0 < flagged["base"] < 5
    for variant in VARIANTS:
        by_g = report["results"][variant]["none"]["3"]
        assert by_g == {"all": {"n": 5, "n_verdict_fake": flagged[variant], "fpr": flagged[variant] / 5,
                                "threshold": bt if variant == "base" else t, "n_unscanned": 0}}
    lines = markdown_table(report).splitlines()
    assert lines[0].startswith("False-positive rate (FPR): the share of the scanned real images whose verdict is fake")
    assert lines[2].startswith("| variant | perturb | top-k | generator | n | verdict fake | FPR |")
    assert f"| gcage | none | 3 | all | 5 | {flagged['gcage']} | {flagged['gcage'] / 5:.4f} | {t:.3f} | 0 |" in lines
    assert len([line for line in lines if line.startswith(("| gcage", "| base", "| fused"))]) == 3


def test_one_generator_is_not_repeated(tmp_path, tiny_model_dir):
    one = gen.make_labelled_set(tmp_path / "one", n_per_class=3, seed=2, size=160)
    report = evaluate(EvalConfig(data=str(one), model=str(tiny_model_dir), workers=0))
    k = str(report["top_k"][0])
    assert report["mode"] == "binary" and report["keys"] == list(METRIC_KEYS)
    assert report["data"]["generators"] == ["checkers"]
    for variant in VARIANTS:
        assert list(report["results"][variant]["none"][k]) == ["all"]
        assert set(report["results"][variant]["none"][k]["all"]) == set(METRIC_KEYS)
    assert len(markdown_table(report).partition("\n\n")[0].splitlines()) == 2 + 3

    gen.save_image(one / "ai" / "unnamed.jpg", 160, 160, 99)  # a fake without a generator: the group differs
    report = evaluate(EvalConfig(data=str(one), model=str(tiny_model_dir), workers=0))
    by_g = report["results"]["gcage"]["none"][k]
    assert list(by_g) == ["all", "checkers"]
    assert (by_g["all"]["n_fake"], by_g["checkers"]["n_fake"], by_g["checkers"]["n_real"]) == (4, 3, 3)


@pytest.mark.skipif(not SHARED_BROAD.is_dir(), reason="../shared/data/broad is not present")
def test_broad_lists_exactly_its_manifest():
    with open(SHARED_BROAD / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ds = load_labelled(SHARED_BROAD)
    assert ds.layout == "manifest" and len(ds.items) == len(rows) == 505
    assert sorted(i.relpath for i in ds.items) == sorted(r["relpath"] for r in rows)
    assert sum(i.label for i in ds.items) == 199 and all(i.path.is_file() for i in ds.items)


def test_generator_group_of_one_class_reports_its_rate(tmp_path, tiny_model_dir):
    """CNNDetection with progan/ holding only 1_fake/: progan's rows are detection rates, all stays binary."""
    data = tmp_path / "data"
    fakes = [gen.write(data / "progan" / "1_fake" / f"p{i}.png", gen.encode(gen.fake_like(200, 200, 70 + i), "PNG"))
             for i in range(3)]
    for i in range(2):
        gen.write(data / "stylegan" / "0_real" / f"r{i}.png", gen.encode(gen.photo_like(200, 200, 80 + i), "PNG"))
        gen.write(data / "stylegan" / "1_fake" / f"s{i}.png", gen.encode(gen.fake_like(200, 200, 90 + i), "PNG"))
    first = _scan_rows(data, tmp_path / "first", tiny_model_dir)
    model = _splitting_model(tiny_model_dir, list(first.values()), tmp_path / "model")
    report = evaluate(EvalConfig(data=str(data), model=str(model), workers=0))
    assert report["mode"] == "binary" and report["keys"] == list(METRIC_KEYS)
    assert report["data"]["layout"] == "cnndetection" and report["data"]["generators"] == ["progan", "stylegan"]
    k = str(report["top_k"][0])
    rows = [first[str(p)] for p in fakes]  # scores do not depend on the thresholds
    t, bt = report["model"]["threshold"], report["model"]["base_threshold"]
    assert all(r["verdict_source"] == "model" for r in rows)
    flagged = _verdicts(rows, t, bt)
    flagged["fused"] = flagged["gcage"]  # no evidence: fused is the model's verdict at the new threshold
    for variant in VARIANTS:
        by_g = report["results"][variant]["none"][k]
        assert list(by_g) == ["all", "progan", "stylegan"]
        assert set(by_g["all"]) == set(by_g["stylegan"]) == set(METRIC_KEYS)
        assert (by_g["all"]["n_real"], by_g["all"]["n_fake"], by_g["stylegan"]["n_fake"]) == (2, 5, 2)
        n = sum(flagged[variant])
        assert by_g["progan"] == {"mode": "detection_rate", "n": 3, "n_verdict_fake": n, "detection_rate": n / 3,
                                  "threshold": bt if variant == "base" else t, "n_unscanned": 0}
    lines = markdown_table(report).splitlines()
    assert lines[0].startswith("| variant | perturb | top-k | generator | n_real | n_fake | AP |")
    assert len([line for line in lines[2:8] if line.startswith(("| gcage", "| base", "| fused"))]) == 6
    assert lines[8:10] == ["", "Detection rate of the generator groups without real images: the share of their "
                           "scanned AI images whose verdict is fake (AP, ROC-AUC, the best threshold and balanced "
                           "accuracy are not defined for them)."]
    n = sum(flagged["gcage"])
    assert f"| gcage | none | {k} | progan | 3 | {n} | {n / 3:.4f} | {t:.3f} | 0 |" in lines[10:16]
    assert lines[16] == "" and lines[17].startswith("Verdicts by source")
