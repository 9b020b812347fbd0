"""G1: explanations. The batched perturbation methods equal direct, unbatched references on a tiny model; the
forward family from the engine's activations equals the in-graph CAMs; LIME's surrogate equals a dense
weighted least-squares solve; the ROAD imputer equals a dense solve of its linear system; `explain` renders."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gcage_fast.cam.analytic import BaseWithCAM
from gcage_fast.cam.lime import grid_segments, lime, ridge_weighted
from gcage_fast.cam.perturbation import ablationcam, eigencam, scorecam, target_from_probs
from gcage_fast.cam.quality import OFFSETS, QualityOptions, cam_quality, impute_noisy_linear, road_mask
from gcage_fast.cam.targets import parse_target
from gcage_fast.config import CAM_METHODS
from gcage_fast.errors import ConfigError, InputError
from gcage_fast.explain.explainer import ExplainOptions, Explainer, parse_methods
from gcage_fast.models.registry import load_model

import genimages as gen


def rel_err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def patch_and_acts(tiny):
    rng = np.random.default_rng(11)
    x = rng.random((3, 224, 224), dtype=np.float32)
    target = parse_target("fake", tiny.spec.class_names, tiny.spec.authentic_index)
    with torch.no_grad():
        probs, _, acts, _ = BaseWithCAM(tiny.base, "gradcam", target, "layer4", True)(torch.from_numpy(x[None]))
    return x, acts[0].numpy(), probs[0].numpy(), target


def torch_probs(model):
    def fn(batch):
        with torch.no_grad():
            return model.base(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
    return fn


def test_scorecam_batched_equals_one_pass_per_channel(tiny, patch_and_acts):
    x, acts, probs, target = patch_and_acts
    got = scorecam(x, acts, target, torch_probs(tiny), probs, batch_size=7)[0]
    # Direct reference: each channel upsampled, normalised, multiplied in, one forward pass at a time.
    up = torch.nn.functional.interpolate(torch.from_numpy(acts[None]).double(), size=(224, 224), mode="bilinear",
                                         align_corners=False)[0].numpy()
    scores = []
    for k in range(acts.shape[0]):
        m = up[k]
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        with torch.no_grad():
            p = tiny.base(torch.from_numpy((x * m).astype(np.float32)[None])).numpy()
        scores.append(float(target_from_probs(target, p, probs)[0]))
    w = np.exp(np.array(scores) - max(scores))
    w /= w.sum()
    ref = np.maximum(np.einsum("k,khw->hw", w, acts.astype(np.float64)), 0)
    assert ref.max() > 0
    assert rel_err(got, ref) <= 1e-4


@pytest.mark.parametrize("layer", ["layer4", "F"])
def test_ablationcam_equals_one_ablated_forward_per_channel(tiny, layer):
    rng = np.random.default_rng(5)
    x = rng.random((3, 224, 224), dtype=np.float32)
    target = parse_target("pred", tiny.spec.class_names, tiny.spec.authentic_index)
    with torch.no_grad():
        probs, _, acts, _ = BaseWithCAM(tiny.base, "gradcam", target, layer, True)(torch.from_numpy(x[None]))
    acts, probs = acts[0].numpy(), probs[0].numpy()
    got = ablationcam(tiny.base, x, acts, target)[0]
    # Direct reference: a hook zeroes channel k of the CAM layer (layer4's output, or F where it enters the
    # pooling); one full forward pass per channel.
    module, where = tiny.base.feature_extractor.cam_module(layer)
    y0 = float(target_from_probs(target, probs[None], probs)[0])
    drops = []
    for k in range(acts.shape[0]):
        def zero(t, k=k):
            t = t.clone()
            t[:, k] = 0
            return t
        if where == "output":
            h = module.register_forward_hook(lambda mod, inp, out, z=zero: z(out))
        else:
            h = module.register_forward_pre_hook(lambda mod, inp, z=zero: (z(inp[0]),))
        try:
            with torch.no_grad():
                p = tiny.base(torch.from_numpy(x[None])).numpy()
        finally:
            h.remove()
        drops.append((y0 - float(target_from_probs(target, p, probs)[0])) / y0)
    ref = np.maximum(np.einsum("k,khw->hw", np.array(drops), acts.astype(np.float64)), 0)
    assert ref.max() > 0
    assert rel_err(got, ref) <= 1e-3  # differences of nearby float32 probabilities


def test_eigencam_is_the_first_principal_component(patch_and_acts):
    _, acts, _, _ = patch_and_acts
    got = eigencam(acts[None])[0]
    m = acts.reshape(acts.shape[0], -1).T.astype(np.float64)
    m -= m.mean(axis=0)
    # The first right-singular vector is the top eigenvector of the covariance.
    vals, vecs = np.linalg.eigh(m.T @ m)
    ref = (m @ vecs[:, -1]).reshape(acts.shape[1:])
    if np.dot(ref.ravel(), got.ravel()) < 0 or got.max() == 0:
        ref = -ref
    assert rel_err(got, np.maximum(ref, 0)) <= 1e-4


def test_ridge_equals_dense_weighted_least_squares():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (200, 9)).astype(np.float64)
    y = rng.random(200)
    w = rng.random(200) + 0.1
    coef, intercept = ridge_weighted(x, y, w, alpha=1.0)
    # Normal equations with an unpenalised intercept column.
    xa = np.hstack([x, np.ones((200, 1))])
    pen = np.eye(10)
    pen[-1, -1] = 0
    sol = np.linalg.solve(xa.T @ (w[:, None] * xa) + pen, xa.T @ (w * y))
    assert np.allclose(coef, sol[:-1], atol=1e-10) and abs(intercept - sol[-1]) < 1e-10


def test_lime_is_seeded_and_finds_the_region_that_matters():
    # A stand-in detector whose "fake" probability is the texture energy (mean square) of the top-left quarter's
    # red channel: a superpixel switched off there (filled with its mean colour) loses its texture.
    def probs_fn(batch):
        p = (batch[:, 0, :112, :112].astype(np.float64) ** 2).mean(axis=(1, 2))
        return np.stack([1 - p, p], axis=1)

    target = parse_target("class:synthetic", ["authentic", "synthetic"])
    x = np.full((3, 224, 224), 0.2, np.float32)
    x[0] = 0.9 * (np.indices((224, 224)).sum(axis=0) % 2)  # a checkerboard everywhere
    ref = probs_fn(x[None])[0]
    heat1, seg, coef = lime(x, target, probs_fn, ref, num_samples=300, seed=4, batch_size=50)
    heat2, _, _ = lime(x, target, probs_fn, ref, num_samples=300, seed=4, batch_size=128)
    assert np.array_equal(heat1, heat2)
    assert np.array_equal(seg, grid_segments(224))
    inside = coef[np.unique(seg[:112, :112])]
    outside = coef[np.unique(seg[112:, 112:])]
    assert inside.min() > 10 * np.abs(outside).max()


def test_imputer_solves_its_linear_system():
    rng = np.random.default_rng(1)
    size = 17
    img = rng.random((3, size, size))
    removed = rng.random((size, size)) < 0.6
    out = impute_noisy_linear(img, removed, noise=0.0, tol=1e-12)
    ys, xs = np.nonzero(removed)
    idx = -np.ones((size, size), int)
    idx[ys, xs] = np.arange(len(ys))
    a = np.zeros((len(ys), len(ys)))
    b = np.zeros((3, len(ys)))
    for i, (y, x) in enumerate(zip(ys, xs)):
        for dy, dx, w in OFFSETS:
            yy, xx = y + dy, x + dx
            if 0 <= yy < size and 0 <= xx < size:
                a[i, i] += w
                if removed[yy, xx]:
                    a[i, idx[yy, xx]] -= w
                else:
                    b[:, i] += w * img[:, yy, xx]
    ref = np.linalg.solve(a, b.T).T
    assert np.abs(out[:, ys, xs] - ref).max() < 1e-6
    assert np.array_equal(out[:, ~removed], img[:, ~removed].astype(np.float32))
    noisy = impute_noisy_linear(img, removed, noise=0.01, seed=3)
    assert np.array_equal(noisy, impute_noisy_linear(img, removed, noise=0.01, seed=3))
    assert 0.005 < np.std(noisy[:, ys, xs] - ref) < 0.02


def test_road_masks_remove_the_stated_fractions():
    heat = np.random.default_rng(2).random((224, 224))
    for pct in (10, 50, 90):
        morf = road_mask(heat, pct, True)
        lerf = road_mask(heat, pct, False)
        assert abs(morf.mean() - (100 - pct) / 100) < 0.01 and abs(lerf.mean() - (100 - pct) / 100) < 0.01
        assert heat[morf].min() >= heat[~morf].max()  # MoRF removes the most relevant pixels
        assert heat[lerf].max() <= heat[~lerf].min()


def test_cam_quality_on_a_detector_we_can_compute_by_hand():
    # p_fake = mean red of the patch: multiplying by a heatmap lowers it by a known amount.
    def probs_fn(batch):
        p = batch[:, 0].mean(axis=(1, 2)).astype(np.float64)
        return np.stack([1 - p, p], axis=1)

    target = parse_target("fake", ["authentic", "synthetic"])
    x = np.full((3, 224, 224), 0.5, np.float32)
    heat = np.zeros((224, 224), np.float32)
    heat[:, :112] = 1.0
    q = cam_quality(x, heat, target, probs_fn, probs_fn(x[None])[0], QualityOptions(keep_top=(50,)))
    assert q["drop"] == pytest.approx(0.25, abs=1e-6)  # half the pixels zeroed: 0.5 -> 0.25
    assert q["increase"] == 0.0
    assert q["drop@50"] == pytest.approx(0.0, abs=1e-6)  # the rest filled with the mean colour, 0.5
    # A flat patch imputes to itself (+ noise of mean zero): ROAD changes the score by about nothing.
    assert abs(q["road_morf"]) < 0.01 and abs(q["road_lerf"]) < 0.01
    assert q["flat"] == 0.0
    flat = cam_quality(x, np.zeros_like(heat), target, probs_fn, probs_fn(x[None])[0])
    assert flat["flat"] == 1.0 and all(np.isnan(v) for k, v in flat.items() if k != "flat")


def test_parse_methods():
    assert parse_methods("gradcam, scorecam,gradcam") == ("gradcam", "scorecam")
    assert len(parse_methods("all")) == 9
    with pytest.raises(ConfigError, match="unknown CAM method nope; choose from gradcam, "):
        parse_methods("gradcam,nope")


def test_explainer_forward_family_equals_the_in_graph_cams(tiny, tmp_path):
    path = gen.save_image(tmp_path / "a.png", 500, 300, 7, "PNG")
    methods = CAM_METHODS + ("eigencam", "ablationcam")
    with Explainer(tiny, ExplainOptions(methods=methods, target="pred"), backend="ort", threads=2) as ex:
        expl = ex.explain_file(path)
    assert expl.score.verdict in ("real", "fake") and len(expl.patches) == 2  # 2x1 grid of 224 patches
    prepared = ex.prepare_file(path)
    x = torch.from_numpy(prepared.patches.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))
    target = parse_target("pred", tiny.spec.class_names)
    for method in CAM_METHODS:
        with torch.no_grad():
            _, ref = BaseWithCAM(tiny.base, method, target, "layer4")(x)
        for pe in expl.patches:
            if ref[pe.index].abs().max() > 0:
                assert rel_err(pe.cam[method], ref[pe.index]) <= 1e-4, method
    for pe in expl.patches:
        for method in methods:
            h = pe.heat[method]
            assert h.shape == (224, 224) and h.dtype == np.float32 and 0 <= h.min() and h.max() <= 1
    d = expl.to_dict()
    assert d["methods"] == list(methods) and len(d["patches"]) == 2
    assert set(d["patches"][0]["cam"]) == set(methods)


def test_explainer_refuses_what_it_cannot_explain(tiny, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"<html>not an image</html>")
    with Explainer(tiny, ExplainOptions(), backend="torch") as ex:
        with pytest.raises(InputError, match=r"bad.jpg: cannot explain \(error decode.unidentified: "):
            ex.explain_file(bad)
        ok = gen.save_image(tmp_path / "ok.png", 300, 300, 1, "PNG")
        with pytest.raises(ConfigError, match=r"patch 3 does not exist: the image has 1 selected patch\(es\)"):
            ex.options = ExplainOptions(patches=(3,))
            ex.explain_file(ok)


def test_explain_cli_renders_the_image_and_the_numbers(cli, tiny_model_dir, tmp_path):
    img = gen.save_image(tmp_path / "in.jpg", 480, 260, 3, "JPEG")
    out, js = tmp_path / "why.png", tmp_path / "why.json"
    r = cli("explain", str(img), "-o", str(out), "--model", str(tiny_model_dir), "--cam", "gradcam++,lime",
            "--lime-samples", "64", "--metrics", "--seed", "1",
            "--json", str(js))
    picture = Image.open(out)
    assert picture.width >= 480 and picture.height > 260  # the image plus the legend below it
    d = json.loads(js.read_text())
    assert d["methods"] == ["gradcam++", "lime"] and d["verdict"] in ("real", "fake")
    assert set(d["patches"][0]["quality"]["lime"]) >= {"drop", "increase", "road_morf", "road_lerf",
                                                        "road_combined", "drop@25", "increase@25"}
    assert f"-> {out}" in r.stdout
    grid = tmp_path / "grid.png"
    r = cli("explain", str(img), "-o", str(grid), "--model", str(tiny_model_dir), "--all-cams",
            "--cam", "gradcam,eigencam,ablationcam")
    assert Image.open(grid).size == (4 * 232 + 8, 30 + 254 + 8)  # 4 tiles: patch + 3 methods, one row


def test_explain_cli_errors(cli, tiny_model_dir, tmp_path):
    r = cli("explain", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model_dir),
            check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a-truncated")
    r = cli("explain", str(bad), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model_dir), check=False)
    assert r.returncode == 1 and "Error: " in r.stderr and "bad.png: cannot explain (error decode." in r.stderr
    img = gen.save_image(tmp_path / "in.png", 300, 300, 3, "PNG")
    r = cli("explain", str(img), "-o", str(tmp_path / "o.png"), "--model", str(tiny_model_dir), "--cam", "gradcan",
            check=False)
    assert r.returncode == 1 and "Error: unknown CAM method gradcan; choose from gradcam" in r.stderr
    assert not (tmp_path / "o.png").exists()


def test_eval_cam_metrics_table(cli, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    for i in range(3):
        gen.save_image(data / "real" / f"r{i}.jpg", 260, 240, i)
        gen.save_image(data / "ai" / f"f{i}.png", 240, 260, 10 + i, "PNG")
    js = tmp_path / "m.json"
    r = cli("eval", data, "--model", tiny_model_dir, "--cam-metrics", "gradcam++,eigencam", "--max-images", "4",
            "--road-percentiles", "30,70", "--json", js, "--quiet")
    lines = r.stdout.strip().splitlines()
    assert lines[0] == ("| method | images | flat | s/patch | drop | increase | drop@25 | increase@25 | road_morf | "
                        "road_lerf | road_combined |")
    assert [ln.split(" | ")[0] for ln in lines[2:]] == [
        "| gradcam++", "| eigencam", "| gradcam++ (real)", "| eigencam (real)", "| gradcam++ (fake)",
        "| eigencam (fake)"]
    report = json.loads(js.read_text())
    assert report["data"]["n_images"] == 4 and report["road_percentiles"] == [30, 70]
    assert report["results"]["eigencam"]["real"]["n"] == 2 and report["results"]["eigencam"]["fake"]["n"] == 2
    r = cli("eval", data, "--model", tiny_model_dir, "--cam-metrics", "gradcam", "--keep-top", "0", check=False)
    assert r.returncode == 2 and "expected a comma list of percentages between 1 and 99" in r.stderr
