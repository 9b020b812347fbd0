"""`verify` catches every way an output can break: missing markers, altered parts, wrong rows, leftovers."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import genimages as gen
from gcage_fast.hashing import sha256_file
from gcage_fast.output.schema import ROW_SCHEMA
from gcage_fast.output.verify import verify_output
from helpers import run_cli


@pytest.fixture(scope="module")
def good(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("v")
    for i in range(9):
        gen.save_image(root / "in" / f"{i}.jpg", 260 + 10 * i, 240, i)
    gen.zero_byte(root / "in" / "z.jpg")
    out = root / "out"
    run_cli("scan", root / "in", "-o", out, "--model", tiny_model_dir, "--shard-size", "4", "--workers", "0",
            "--quiet", "--commit-every", "3600")  # whole shards, whatever the machine's speed
    return out


@pytest.fixture
def copy(good, tmp_path):
    import shutil

    dst = tmp_path / "out"
    shutil.copytree(good, dst)
    return dst


def test_good_output_verifies(good):
    report = verify_output(good)
    assert report.ok and report.n_rows == report.n_planned == 10 and report.n_committed == 3
    assert report.status == {"ok": 9, "error": 1}


def test_missing_marker(copy):
    (copy / "commits" / "shard-00001.json").unlink()
    report = verify_output(copy)
    assert not report.ok
    assert report.problems == ["shard 1: not committed (scan incomplete; run it again with --resume)"]


def test_altered_part(copy):
    part = copy / "results" / "shard-00000.parquet"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    assert verify_output(copy).problems == [
        "shard 0: shard-00000.parquet does not match the sha256 in its commit marker"]


def _rewrite(copy, shard, fn):
    part = copy / "results" / f"shard-{shard:05d}.parquet"
    table = fn(pq.read_table(part))
    pq.write_table(table, part)
    marker_path = copy / "commits" / f"shard-{shard:05d}.json"
    marker = json.loads(marker_path.read_text())
    marker["sha256"] = sha256_file(part)
    marker["rows"] = table.num_rows
    marker_path.write_text(json.dumps(marker))


def test_duplicated_and_missing_rows(copy):
    _rewrite(copy, 0, lambda t: pa.concat_tables([t.slice(0, 3), t.slice(0, 1)]))
    problems = verify_output(copy).problems
    assert "shard 0: rows do not match the plan (1 missing, 0 unplanned, 1 duplicated)" in problems


def test_scores_on_error_rows_are_flagged(copy):
    def leak(t):
        rows = t.to_pylist()
        for r in rows:
            if r["status"] != "ok":
                r["p_fake"] = 0.01
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)

    shard = next(s for s in range(3) if "error" in pq.read_table(
        copy / "results" / f"shard-{s:05d}.parquet").column("status").to_pylist())
    _rewrite(copy, shard, leak)
    assert f"shard {shard}: 1 rows with status != ok have a non-null p_fake" in verify_output(copy).problems


def test_leftover_temp_and_cli_exit_code(copy):
    (copy / "results" / "shard-00002.parquet.tmp-abc").write_bytes(b"")
    res = run_cli("verify", copy, check=False)
    assert res.returncode == 1
    assert res.stdout.startswith(f"FAILED: {copy}: 10/10 rows")
    assert "temporary file left behind: results/shard-00002.parquet.tmp-abc" in res.stdout
