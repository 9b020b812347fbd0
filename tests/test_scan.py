"""A6: a scan of >= 200 mixed images plus broken files writes exactly one row per input, readable as a dataset,
and passes `gcage-fast verify`. A8: its scores equal the torch reference pipeline's."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import genimages as gen
from gcage_fast.evaluation.baseline import baseline_score
from gcage_fast.config import Limits
from gcage_fast.ingest.decode import decode_rgb
from gcage_fast.models.registry import load_model
from gcage_fast.output.schema import ROW_SCHEMA, SCORE_COLUMNS
from helpers import permissions_enforced, read_rows, run_cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    expected = gen.make_corpus(root, n_images=210, seed=1)
    if permissions_enforced():
        p = gen.unreadable(root / "broken" / "locked.jpg", 99)
        expected[str(p)] = ("error", "fs.permission")
    return root, expected


@pytest.fixture(scope="module")
def scanned(corpus, tiny6_model_dir, tmp_path_factory):
    root, expected = corpus
    out = tmp_path_factory.mktemp("scan") / "out"
    res = run_cli("scan", root, "-o", out, "--model", tiny6_model_dir, "--workers", "2", "--shard-size", "64",
                  "--json")
    return out, expected, json.loads(res.stdout)


def test_one_row_per_input(scanned):
    out, expected, summary = scanned
    assert len(expected) >= 205
    rows = read_rows(out)
    assert len(rows) == len(expected) == summary["n_inputs"]
    assert sorted(r["path"] for r in rows) == sorted(expected)
    assert len({r["input_id"] for r in rows}) == len(rows)
    by_path = {r["path"]: r for r in rows}
    for path, (status, code) in expected.items():
        row = by_path[path]
        assert (row["status"], row["error_code"]) == (status, code), (path, row["error_detail"])
    assert summary["status"]["ok"] == sum(1 for s, _ in expected.values() if s == "ok")
    assert summary["shards_total"] == -(-len(expected) // 64)


def test_rows_are_complete_and_fail_closed(scanned):
    out, _, _ = scanned
    for row in read_rows(out):
        assert row["model_id"] == "tiny6@0" and row["backend"] == "ort:CPUExecutionProvider"
        assert row["cam_method"] == "gradcam" and row["cam_target"] == "fake"
        if row["status"] != "ok":
            assert all(row[c] is None for c in SCORE_COLUMNS), row["path"]
            continue
        assert row["format"] in ("JPEG", "PNG", "WEBP") and len(row["sha256"]) == 64
        assert 100 <= row["width"] <= 2000 and 100 <= row["height"] <= 1500
        assert row["padded"] == (min(row["width"], row["height"]) < 224)
        n = min(5, row["n_patches_total"])
        assert row["n_patches_scanned"] == n == len(row["patches"])
        assert 0.0 <= row["p_fake"] <= 1.0 and row["verdict"] == ("fake" if row["p_fake"] >= row["threshold"] else "real")
        assert abs(sum(row["base_probs"]) - 1.0) < 1e-6 and len(row["base_probs"]) == 6
        assert np.isclose(row["p_fake"], np.mean([p["p_fake"] for p in row["patches"]]))
        contrasts = [p["contrast"] for p in row["patches"]]
        assert contrasts == sorted(contrasts, reverse=True)
        for p in row["patches"]:
            assert len(p["cam"]) == 49 and len(p["probs"]) == 6
            assert p["x"] % 224 == 0 and p["y"] % 224 == 0


def test_dataset_queries(scanned):
    out, expected, _ = scanned
    dataset = ds.dataset(out / "results", format="parquet")
    assert dataset.schema.remove_metadata().equals(ROW_SCHEMA.remove_metadata())
    table = dataset.to_table()
    # SELECT status, count(*) FROM parts GROUP BY status
    counts = {r["status"]: r["count_all"] for r in table.group_by("status").aggregate([([], "count_all")]).to_pylist()}
    assert counts["ok"] == sum(1 for s, _ in expected.values() if s == "ok")
    # SELECT path, p_fake FROM parts WHERE status = 'ok' ORDER BY p_fake DESC LIMIT 5
    top = table.filter(pc.equal(table["status"], "ok")).sort_by([("p_fake", "descending")]).slice(0, 5)
    assert top.num_rows == 5 and top["p_fake"][0].as_py() >= top["p_fake"][4].as_py()
    # per-patch explode: SELECT unnest(patches) ...
    patches = pc.list_flatten(table["patches"])
    assert len(patches) == sum(r or 0 for r in table["n_patches_scanned"].to_pylist())
    assert isinstance(table.schema.field("scanned_at").type, pa.TimestampType)


def test_verify_passes_and_commit_markers(scanned):
    out, expected, _ = scanned
    res = run_cli("verify", out)
    assert res.stdout.startswith(f"OK: {out}: {len(expected)}/{len(expected)} rows")
    markers = sorted((out / "commits").glob("shard-*.json"))
    assert len(markers) == len(list((out / "results").glob("*.parquet"))) == -(-len(expected) // 64)
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "finished" and run["plan"]["n_inputs"] == len(expected)
    assert run["engine"]["base"]["providers_active"] == ["CPUExecutionProvider"]
    assert not list(out.rglob("*.tmp-*"))


@pytest.mark.parametrize("backend,cam,target", [("ort", None, None), ("torch", "gradcam++", "pred")])
def test_scores_equal_torch_reference_pipeline(corpus, tiny6_model_dir, tmp_path, backend, cam, target):
    """A8: same images -> same p_fake (<= 1e-4) as eager torch with hook/backward Grad-CAM and F.interpolate."""
    root, expected = corpus
    paths = sorted(p for p, (s, _) in expected.items() if s == "ok")[::12]  # a spread of sizes and modes
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    out = tmp_path / "out"
    args = ["scan", "--from-list", listing, "-o", out, "--model", tiny6_model_dir, "--backend", backend,
            "--workers", "0", "--batch-size", "7"]
    if cam:
        args += ["--cam", cam, "--cam-target", target]
    run_cli(*args)
    model = load_model(tiny6_model_dir)
    rows = {r["path"]: r for r in read_rows(out)}
    assert len(rows) == len(paths) >= 17
    for path in paths:
        row = rows[path]
        rgb = decode_rgb(Path(path).read_bytes(), Limits()).rgb
        ref = baseline_score(model, rgb, cam_method=cam, cam_target=target)
        assert [(p["x"], p["y"]) for p in row["patches"]] == [tuple(b) for b in ref.boxes.tolist()]
        assert abs(row["p_fake"] - ref.p_fake) <= 1e-4, path
        assert abs(row["base_p_fake"] - ref.base_p_fake) <= 1e-4
        np.testing.assert_allclose([p["p_fake"] for p in row["patches"]], ref.patch_p_fake, atol=1e-4)
        np.testing.assert_allclose(row["base_probs"], ref.base_probs, atol=1e-5)


def test_heatmaps_and_bounded_memory(tiny_model_dir, tmp_path, monkeypatch):
    """PNG overlays are named by input_id; decoded pixels are released as soon as they are scored."""
    from PIL import Image

    from gcage_fast.scanning import local as pipeline
    from gcage_fast.config import ScanConfig

    src = tmp_path / "src"
    for i, (w, h) in enumerate([(300, 300), (900, 500), (150, 120), (460, 700)]):
        gen.save_image(src / f"{i}.jpg", w, h, i)
    gen.zero_byte(src / "empty.jpg")
    seen = []
    real_score_pieces = pipeline.score_pieces

    def checking_score_pieces(ctx, scorer, spec, prepared, **kw):
        items = []
        for piece in real_score_pieces(ctx, scorer, spec, (items.append(p) or (e, p) for e, p in prepared), **kw):
            assert all(prep.patches is None and prep.preview is None for prep in items)  # released when scored
            yield piece
        seen.extend(items)

    monkeypatch.setattr(pipeline, "score_pieces", checking_score_pieces)
    out = tmp_path / "out"
    summary = pipeline.scan(ScanConfig(inputs=(str(src),), output=str(out), model=str(tiny_model_dir),
                                       heatmaps="png", workers=0, shard_size=3, batch_size=4))
    assert len(seen) == 5 and summary.status == {"ok": 4, "error": 1}
    rows = read_rows(out)
    pngs = sorted(out.glob("heatmaps/*/*.png"))
    assert sorted(p.stem for p in pngs) == sorted(r["input_id"] for r in rows if r["status"] == "ok")
    assert all(p.parent.name == p.stem[:2] for p in pngs)
    markers = [json.loads(p.read_text()) for p in sorted((out / "commits").glob("*.json"))]
    assert sum(m["heatmaps"] for m in markers) == 4
    big = next(r for r in rows if r["width"] == 900)
    with Image.open(out / "heatmaps" / big["input_id"][:2] / f"{big['input_id']}.png") as im:
        assert im.size == (900, 500)  # the display image (under 1024 px, not scaled)
