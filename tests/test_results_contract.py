"""The results contract (schema 4 on): OUT/results is the result set and the only Parquet in OUT; every row has a
locator, input_root and relpath; class probabilities are labelled; the README's queries run as written; outputs
of schemas 3 and 4 are still verified and reported, and refuse to be resumed."""

import json
import os
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import genarchives
import genimages as gen
from helpers import read_rows, run_cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.fixture(scope="module")
def tree(tmp_path_factory, tiny_model_dir):
    """Images with non-ASCII names, a broken file, a tar; macOS and Windows junk in the tree and in the tar, and an
    earlier gcage-fast output (with PNG overlays) inside the tree: the junk and the old output get no rows."""
    root = tmp_path_factory.mktemp("tree") / "uploads"
    gen.save_image(root / "a" / "one.png", 260, 240, 1, "PNG")
    gen.save_image(root / "a" / "b" / "deux été.jpg", 300, 250, 2, "JPEG")
    gen.save_image(root / "ünï" / "三.webp", 240, 240, 3, "WEBP")
    (root / "broken.jpg").write_bytes(genarchives.jpeg(4)[:200])
    genarchives.tar_with(root / "batch.tar", [("x/inner.jpg", genarchives.jpeg(5), tarfile.REGTYPE, ""),
                                              ("naïve.jpg", genarchives.jpeg(6), tarfile.REGTYPE, ""),
                                              ("__MACOSX/._naïve.jpg", b"\x00\x05\x16\x07", tarfile.REGTYPE, "")])
    for junk in ("._one.png", "a/.DS_Store", "a/b/Thumbs.db", "desktop.ini", "__MACOSX/a/._one.png"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    earlier = tmp_path_factory.mktemp("earlier")
    gen.save_image(earlier / "old.png", 240, 240, 9, "PNG")
    run_cli("scan", earlier, "-o", root / "last week", "--model", tiny_model_dir, "--workers", "0",
            "--heatmaps", "png", "--quiet")
    single = tmp_path_factory.mktemp("single") / "alone.png"
    gen.save_image(single, 230, 230, 7, "PNG")
    return root, single


@pytest.fixture(scope="module")
def scanned(tree, tiny_model_dir, tmp_path_factory):
    root, single = tree
    out = tmp_path_factory.mktemp("scan") / "out"
    run_cli("scan", root, single, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--shard-size", "3",
            "--heatmaps", "png", "--quiet", "--commit-every", "3600")  # whole shards, whatever the machine's speed
    return root, single, out


EXPECTED = {  # relpath -> (status, is member)
    "a/one.png": "ok", "a/b/deux été.jpg": "ok", "ünï/三.webp": "ok", "broken.jpg": "error",
    "batch.tar!x/inner.jpg": "ok", "batch.tar!naïve.jpg": "ok",
}


def test_layout_results_are_the_only_parquet(scanned):
    _, _, out = scanned
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == \
        [f"results/shard-0000{i}.parquet" for i in range(3)]
    assert sorted(p.name for p in (out / "plan").iterdir()) == \
        ["plan.json", "shard-00000.arrow", "shard-00001.arrow", "shard-00002.arrow"]
    assert not (out / "parts").exists()
    assert json.loads((out / "commits" / "shard-00000.json").read_text())["part"] == "results/shard-00000.parquet"
    assert run_cli("verify", out).returncode == 0


def test_junk_and_the_old_output_get_no_rows(scanned):
    _, _, out = scanned
    assert json.loads((out / "run.json").read_text())["filtered"] == {"junk": 6, "old_output": 1}
    assert not [r for r in read_rows(out) if "last week" in r["locator"] or "DS_Store" in r["locator"]
                or "MACOSX" in r["locator"] or r["relpath"].rsplit("/", 1)[-1].startswith("._")]


def test_locator_root_and_relpath(scanned):
    root, single, out = scanned
    rows = read_rows(out)
    assert len(rows) == len(EXPECTED) + 1
    by_rel = {(r["input_root"], r["relpath"]): r for r in rows}
    for rel, status in EXPECTED.items():
        r = by_rel[(str(root), rel)]
        assert r["status"] == status
        if r["member"] is None:
            assert r["locator"] == r["path"] == f"{root}/{rel}"
        else:
            assert r["locator"] == f"{r['path']}!{r['member']}" == f"{root}/{rel}"
    alone = by_rel[(str(single.parent), "alone.png")]  # a file named directly: its directory is the root
    assert alone["locator"] == str(single)


def test_labelled_probabilities_and_heatmap_paths(scanned):
    _, _, out = scanned
    for r in read_rows(out):
        if r["status"] != "ok":
            assert r["base_class_probs"] is None and r["heatmap_path"] is None
            continue
        probs = dict(r["base_class_probs"])
        assert list(probs) == ["authentic", "synthetic"]
        assert list(probs.values()) == pytest.approx(r["base_probs"])
        assert r["heatmap_path"] == f"heatmaps/{r['input_id'][:2]}/{r['input_id']}.png"
        assert (out / r["heatmap_path"]).is_file()


def _readme_block(lang: str, after: str) -> str:
    start = README.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(README, start)
    return m.group(1)


def test_readme_duckdb_queries_count_right(scanned):
    duckdb = pytest.importorskip("duckdb")
    _, _, out = scanned
    sql = _readme_block("sql", "Queries, DuckDB:").replace("'out/", f"'{out}/")
    queries = [q for q in sql.split(";") if re.sub(r"--[^\n]*\n", "", q).strip()]
    results = [duckdb.sql(q).fetchall() for q in queries]
    n = len(EXPECTED) + 1
    top, by_status, per_patch, decided, evidence, per_root, by_name = results
    root = scanned[0]
    assert len(top) == n - 1 and f"{root}/batch.tar!x/inner.jpg" in {t[0] for t in top}
    assert sum(c for _, _, c in by_status) == n
    assert sum(c for *_, c in decided) == n - 1
    assert sum(c for _, _, c in per_root) == n and len(per_root) == 2
    assert len(by_name) == n - 1 and all(0.0 <= p <= 1.0 for _, p, _ in by_name)
    assert all(h.startswith("heatmaps/") for *_, h in by_name)
    assert duckdb.sql(f"select count(*) from '{out}/**/*.parquet'").fetchall() == [(n,)]  # the plan is not Parquet
    assert len(per_patch) >= n - 1 and {t[0] for t in per_patch} == {t[0] for t in top}
    assert evidence == []  # generated images carry no provenance


def test_readme_pandas_and_polars_snippets_run(scanned):
    pytest.importorskip("pandas")
    pytest.importorskip("polars")
    _, _, out = scanned
    code = _readme_block("python", "pandas and polars:").replace('"out/', f'"{out}/')
    lines = code.strip().splitlines()
    env: dict = {}
    values = []
    for line in lines:  # each expression line is evaluated, as a notebook would show it
        try:
            values.append(eval(line, env))
        except SyntaxError:
            exec(line, env)
    df = env["df"]
    assert len(df) == len(EXPECTED) + 1  # no JSON marker or plan file is read
    top = [v for v in values if hasattr(v, "columns") and "locator" in v.columns]
    assert len(top[0]) == len(EXPECTED) and len(top[1]) == len(EXPECTED)
    counts = values[-1]
    assert sorted(zip(counts["status"].to_list(), counts["len"].to_list())) == [("error", 1), ("ok", 6)]


def _to_older(out: Path, version: int) -> None:
    """Rewrite an output of this version as an earlier release wrote it: schema 3 with OUT/parts, Parquet plan
    files and no v4 columns; schema 4 with OUT/results, Arrow plan files and no v5 columns."""
    from gcage_fast.hashing import sha256_file
    from gcage_fast.output.schema import ROW_SCHEMAS

    results = "parts" if version == 3 else "results"
    if version == 3:
        (out / "results").rename(out / "parts")
    info = json.loads((out / "plan" / "plan.json").read_text())
    for shard in info["shards"]:
        arrow = out / "plan" / f"shard-{shard['shard']:05d}.arrow"
        with pa.memory_map(str(arrow)) as src:
            table = pa.ipc.open_file(src).read_all()
        table = table.drop_columns([c for c in ("sidecars", "carried") if c in table.column_names])
        if version == 3:
            arrow.unlink()
            pq.write_table(table, arrow.with_suffix(".parquet"))
            shard["sha256"] = sha256_file(arrow.with_suffix(".parquet"))
        else:
            with pa.ipc.new_file(str(arrow), table.schema) as writer:
                writer.write_table(table)
            shard["sha256"] = sha256_file(arrow)
        part = out / results / f"shard-{shard['shard']:05d}.parquet"
        old = pq.read_table(part)
        schema = ROW_SCHEMAS[version]
        pq.write_table(pa.table({f.name: old.column(f.name) for f in schema}, schema=schema), part)
        marker_path = out / "commits" / f"shard-{shard['shard']:05d}.json"
        marker = json.loads(marker_path.read_text())
        marker.update(sha256=sha256_file(part), part=f"{results}/{part.name}", schema_version=version)
        marker_path.write_text(json.dumps(marker))
    info["schema_version"] = version
    (out / "plan" / "plan.json").write_text(json.dumps(info))
    run = json.loads((out / "run.json").read_text())
    run["schema_version"] = version
    (out / "run.json").write_text(json.dumps(run))


@pytest.mark.parametrize("version", [3, 4])
def test_older_outputs_are_read_and_not_resumed(scanned, tmp_path, tiny_model_dir, version):
    import shutil

    root, single, out = scanned
    old = tmp_path / "old"
    shutil.copytree(out, old)
    _to_older(old, version)
    res = run_cli("verify", old, "--json")
    assert json.loads(res.stdout)["ok"] and json.loads(res.stdout)["n_rows"] == len(EXPECTED) + 1
    run_cli("report", old, "-o", tmp_path / "r.html")
    if version == 3:
        assert "parts" in (tmp_path / "r.html").read_text()
    bad = run_cli("scan", root, single, "-o", old, "--model", tiny_model_dir, "--resume", "--workers", "0",
                  check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"Error: cannot resume: {old} was written with output schema v{version} and this version writes v5; scan "
        "into a new directory, or --overwrite")
    assert os.path.isdir(old / ("parts" if version == 3 else "results"))
