"""scan --skip-known OUT_OLD: an input whose content (sha256) an earlier output scored is not decoded or scored
again; its row is status skipped, error_code known.sha256, and its `known` column points at the old row. The set
is frozen into the new output at plan time, so a resume after a kill uses exactly that set."""

import json
import shutil
import signal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import genarchives
import genimages as gen
from helpers import read_rows, run_cli

from gcage_fast.hashing import sha256_file


def _scan(inputs, out, model, *extra, **kw):
    return run_cli("scan", inputs, "-o", out, "--model", model, "--workers", "1", *extra, **kw)


def _run_id(out):
    return json.loads((out / "run.json").read_text())["run_id"]


def _by_name(rows):
    return {r["locator"].rsplit("/", 1)[-1]: r for r in rows}


def _pointer(out, row):
    return {"output": str(out), "run_id": _run_id(out), "input_id": row["input_id"], "locator": row["locator"]}


@pytest.fixture(scope="module")
def first(tiny_model_dir, tmp_path_factory):
    """An earlier output: three images and a zip with one image member."""
    root = tmp_path_factory.mktemp("skip-known")
    old = root / "old"
    for i in range(3):
        gen.save_image(old / f"img{i}.jpg", 240, 230, seed=20 + i)
    genarchives.zip_with(old / "batch.zip", [("member.jpg", genarchives.jpeg(25))])
    out = root / "out-old"
    _scan(old, out, tiny_model_dir, "--quiet")
    return root, old, out


@pytest.fixture(scope="module")
def second(first, tiny_model_dir):
    """The same files again, a renamed copy, the zip member's bytes as a plain file, and two new images."""
    root, old, out_old = first
    new = root / "new"
    shutil.copytree(old, new)
    shutil.copy(old / "img0.jpg", new / "copy of img0.jpg")
    (new / "was-a-member.jpg").write_bytes(genarchives.jpeg(25))
    gen.save_image(new / "fresh.png", 250, 240, seed=31, fmt="PNG")
    gen.save_image(new / "fresh2.jpg", 260, 230, seed=32)
    out = root / "out-new"
    res = _scan(new, out, tiny_model_dir, "--skip-known", out_old, "--json")
    return new, out, json.loads(res.stdout)


def test_known_content_is_skipped_and_points_at_the_old_row(first, second):
    _, _, out_old = first
    new, out, summary = second
    old = _by_name(read_rows(out_old))
    rows = read_rows(out)
    assert len(rows) == len({r["input_id"] for r in rows}) == summary["n_inputs"] == 8  # one row per input
    got = _by_name(rows)
    expected_old = {"img0.jpg": "img0.jpg", "img1.jpg": "img1.jpg", "img2.jpg": "img2.jpg",
                    "copy of img0.jpg": "img0.jpg", "batch.zip!member.jpg": "batch.zip!member.jpg",
                    "was-a-member.jpg": "batch.zip!member.jpg"}
    for name, old_name in expected_old.items():
        r, o = got[name], old[old_name]
        assert (r["status"], r["error_code"]) == ("skipped", "known.sha256"), name
        assert r["known"] == _pointer(out_old, o), name
        assert r["sha256"] == o["sha256"]
        assert r["error_detail"] == f"already scored as {o['locator']} in {out_old} (run {_run_id(out_old)})"
        assert r["p_fake"] is None and r["verdict"] is None and r["evidence"] is None and r["format"] is None
    for name in ("fresh.png", "fresh2.jpg"):
        assert got[name]["status"] == "ok" and got[name]["known"] is None and got[name]["p_fake"] is not None
    assert summary["status"] == {"ok": 2, "skipped": 6}
    assert summary["error_codes"] == {"known.sha256": 6}
    assert summary["processed"] == 8 and summary["patches"] == 2  # the known files cost no patch
    run_cli("verify", out)

    frozen = out / "plan" / "known.arrow"
    with pa.memory_map(str(frozen)) as src:
        table = pa.ipc.open_file(src).read_all()
    shas = table.column("sha256").to_pylist()
    assert shas == sorted(shas) and len(shas) == 4  # the old output's four scored rows
    fp = json.loads((out / "run.json").read_text())["fingerprint"]["skip_known"]
    assert fp == {"entries": 4, "outputs": [str(out_old)], "run_ids": [_run_id(out_old)],
                  "sha256": sha256_file(frozen)}


def test_resume_after_a_kill_keeps_the_frozen_set_and_pointers_lead_to_scored_rows(first, second, tiny_model_dir,
                                                                                    tmp_path):
    root, _, out_old = first
    new, out_new, _ = second
    older = tmp_path / "older"  # a copy of the second output: it holds pointers and scored rows
    shutil.copytree(out_new, older)
    third = tmp_path / "third"
    third.mkdir()
    shutil.copy(new / "img1.jpg", third / "again.jpg")  # a pointer in `older`: leads to the first output
    shutil.copy(new / "fresh.png", third / "fresh-again.png")  # scored in `older`
    gen.save_image(third / "brand-new.jpg", 250, 250, seed=41)
    out = tmp_path / "out"
    killed = _scan(third, out, tiny_model_dir, "--skip-known", older, "--quiet", env={"GCAGE_FAULT_AT": "after_plan:0"},
                   check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    frozen = (out / "plan" / "known.arrow").read_bytes()
    shutil.rmtree(older)  # the resume reads the frozen set, not the old output again

    other = _scan(third, out, tiny_model_dir, "--skip-known", out_old, "--resume", "--quiet", check=False)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1].startswith(
        "Error: cannot resume with different settings (skip_known: was {'entries': 6, ")

    summary = json.loads(_scan(third, out, tiny_model_dir, "--skip-known", older, "--resume", "--json").stdout)
    assert summary["resumed"] is True and summary["status"] == {"ok": 1, "skipped": 2}
    assert (out / "plan" / "known.arrow").read_bytes() == frozen
    run_cli("verify", out)
    got = _by_name(read_rows(out))
    first_rows, second_rows = _by_name(read_rows(out_old)), _by_name(read_rows(out_new))
    assert got["again.jpg"]["known"] == _pointer(out_old, first_rows["img1.jpg"])
    assert got["fresh-again.png"]["known"] == {**_pointer(out_new, second_rows["fresh.png"]), "output": str(older)}
    assert got["brand-new.jpg"]["status"] == "ok"


def test_a_path_that_is_not_an_output_is_refused_before_anything_is_written(first, tiny_model_dir, tmp_path):
    _, old, _ = first
    out = tmp_path / "out"
    res = _scan(old, out, tiny_model_dir, "--skip-known", old, check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (f"Error: --skip-known {old}: not a gcage_fast output directory "
                                                   "(no run.json)")
    assert not out.exists()


def test_outputs_of_schema_3_point_by_path_and_member(first, tmp_path):
    """v2/v3 outputs (OUT/parts, no locator column): the pointer's locator is path, or path!member."""
    from gcage_fast.hashing import sha256_file
    from gcage_fast.output.schema import ROW_SCHEMAS
    from gcage_fast.scanning.known import build

    _, old, out_old = first
    v3 = tmp_path / "v3"
    shutil.copytree(out_old, v3)
    (v3 / "results").rename(v3 / "parts")
    for part in (v3 / "parts").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(pa.table({f.name: table.column(f.name) for f in ROW_SCHEMAS[3]}, schema=ROW_SCHEMAS[3]),
                       part)
        marker_path = v3 / "commits" / f"{part.stem}.json"  # as that release wrote them: parts/, its sha256
        marker = json.loads(marker_path.read_text())
        marker.update(sha256=sha256_file(part), part=f"parts/{part.name}")
        marker_path.write_text(json.dumps(marker))

    def pointers(out):
        with pa.ipc.open_file(pa.BufferReader(build([str(out)], ["r"]))) as reader:
            return {r["sha256"]: (r["input_id"], r["locator"]) for r in reader.read_all().to_pylist()}

    got = pointers(v3)
    assert got == pointers(out_old)
    assert sorted(loc for _, loc in got.values()) == [f"{old}/batch.zip!member.jpg", f"{old}/img0.jpg",
                                                      f"{old}/img1.jpg", f"{old}/img2.jpg"]


def test_only_committed_rows_of_an_old_output_are_known(first, tmp_path):
    """A part without its marker (a shard an interrupted scan may still redo) gives no pointers."""
    from gcage_fast.scanning.known import build

    _, _, out_old = first
    copy = tmp_path / "copy"
    shutil.copytree(out_old, copy)
    markers = sorted((copy / "commits").glob("*.json"))
    def known(out):
        with pa.ipc.open_file(pa.BufferReader(build([str(out)], ["r"]))) as reader:
            return {r["sha256"] for r in reader.read_all().to_pylist()}

    everything = known(copy)
    dropped = {r["sha256"] for r in
               pq.read_table(copy / "results" / f"{markers[0].stem}.parquet", columns=["sha256"]).to_pylist()}
    markers[0].unlink()
    assert everything & dropped and known(copy) == everything - dropped


def test_readme_query_joins_the_pointer_to_the_old_rows(first, second):
    import re
    from pathlib import Path

    duckdb = pytest.importorskip("duckdb")
    _, _, out_old = first
    _, out, _ = second
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("Every input of the new output with its verdict")
    sql = re.compile(r"```sql\n(.*?)```", re.S).search(readme, start).group(1)
    sql = sql.replace("'results-2/", f"'{out}/").replace("'results-1/", f"'{out_old}/")
    got = {loc.rsplit("/", 1)[-1]: (status, verdict, p_fake, scored_as)
           for loc, status, verdict, p_fake, scored_as in duckdb.sql(sql).fetchall()}
    old = _by_name(read_rows(out_old))
    assert len(got) == 8
    for name, old_name in (("copy of img0.jpg", "img0.jpg"), ("was-a-member.jpg", "batch.zip!member.jpg")):
        o = old[old_name]
        assert got[name] == ("skipped", o["verdict"], o["p_fake"], o["locator"])
    assert all(v[1] is not None and v[2] is not None for v in got.values())
