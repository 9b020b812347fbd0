"""scan --from-table FILE --path-column COL --keep-columns a,b: every table row (Parquet, CSV, JSON Lines) is one
input, in table order, and its kept columns are result columns with the table's types; a URI of a scheme that is
not read is an fs.unsupported_scheme row (tests/test_object_inputs.py has tables of s3:// objects); a table that
cannot be read, a column it lacks or a kept name that is a result column is one Error line and nothing written; a
killed scan resumes with the same kept values."""

import csv
import json
import signal
import tarfile
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import genarchives as arc
import genimages as gen
from helpers import read_rows, run_cli

IGNORED = {"run_id", "scanned_at"}
FTP = "ftp://uploads/2024/k.jpg"
SFTP = "sftp://example.com/x.png"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("table-images")
    gen.save_image(root / "a.jpg", 260, 240, 1, "JPEG")
    gen.save_image(root / "b.png", 250, 240, 2, "PNG")
    gen.save_image(root / "c.webp", 240, 240, 3, "WEBP")
    arc.tar_with(root / "batch.tar", [("x.jpg", arc.jpeg(4), tarfile.REGTYPE, ""),
                                      ("y.jpg", arc.jpeg(5), tarfile.REGTYPE, "")])
    return root


def table_rows(images):
    """(path, user_id, upload_id) in table order: not sorted, a file twice, two URIs, an archive, a null value."""
    return [(str(images / "c.webp"), 30, "up-c"), (str(images / "a.jpg"), 10, "up-a"), (FTP, 20, "up-ftp"),
            (str(images / "a.jpg"), 11, "up-a2"), (SFTP, 50, None), (str(images / "batch.tar"), 40, "up-tar")]


def write_table(path, rows, fmt):
    paths, users, uploads = (list(c) for c in zip(*rows))
    if fmt == "parquet":
        pq.write_table(pa.table({"file": paths, "user_id": pa.array(users, pa.int32()),
                                 "upload_id": uploads, "note": ["n"] * len(rows)}), path)
    elif fmt == "csv":
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["file", "user_id", "upload_id", "note"])
            w.writerows([p, u, "" if up is None else up, "n"] for p, u, up in rows)
    else:
        path.write_text("".join(json.dumps({"file": p, "user_id": u, "upload_id": up, "note": "n"}) + "\n"
                                for p, u, up in rows))
    return path


def scan(table, out, model, *extra, **kw):
    return run_cli("scan", "--from-table", table, "--path-column", "file", "--keep-columns", "user_id,upload_id",
                   "-o", out, "--model", model, "--workers", "0", "--quiet", *extra, **kw)


@pytest.mark.parametrize("fmt, user_type, null_upload", [("parquet", "int32", None), ("csv", "int64", ""),
                                                          ("jsonl", "int64", None)])
def test_rows_in_table_order_carry_the_kept_columns(images, tiny_model_dir, tmp_path, fmt, user_type, null_upload):
    rows = table_rows(images)
    table = write_table(tmp_path / f"uploads.{fmt}", rows, fmt)
    out = tmp_path / "out"
    scan(table, out, tiny_model_dir)
    got = read_rows(out)
    tar = str(images / "batch.tar")
    assert [r["locator"] for r in got] == [p for p, _, _ in rows[:-1]] + [f"{tar}!x.jpg", f"{tar}!y.jpg"]
    assert [r["user_id"] for r in got] == [30, 10, 20, 11, 50, 40, 40]
    assert [r["upload_id"] for r in got] == ["up-c", "up-a", "up-ftp", "up-a2", null_upload, "up-tar", "up-tar"]
    assert [r["status"] for r in got] == ["ok", "ok", "error", "ok", "error", "ok", "ok"]
    assert len({r["input_id"] for r in got}) == 7  # the file named twice is two inputs
    for r, scheme in ((got[2], "ftp"), (got[4], "sftp")):
        assert r["error_code"] == "fs.unsupported_scheme"  # not a missing local file
        assert r["error_detail"] == (f"{scheme}:// is not read (yet): local paths, s3:// or gs:// objects and "
                                     "http(s):// URLs are")
    assert "note" not in got[0]
    schema = pq.read_schema(out / "results" / "shard-00000.parquet")
    assert schema.names[-2:] == ["user_id", "upload_id"]
    assert str(schema.field("user_id").type) == user_type and schema.field("user_id").nullable
    assert json.loads((out / "run.json").read_text())["kept_columns"] == [
        {"name": "user_id", "type": user_type}, {"name": "upload_id", "type": "string"}]
    assert json.loads(run_cli("verify", out, "--json").stdout)["ok"]


def test_verify_accepts_exactly_the_kept_columns(images, tiny_model_dir, tmp_path):
    table = write_table(tmp_path / "t.parquet", table_rows(images)[:2], "parquet")
    out = tmp_path / "out"
    scan(table, out, tiny_model_dir)
    run = json.loads((out / "run.json").read_text())
    run["kept_columns"] = run["kept_columns"][:1]
    (out / "run.json").write_text(json.dumps(run))
    res = run_cli("verify", out, "--json", check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout)["problems"] == [
        "shard 0: schema differs from output schema v5, plus the kept columns user_id (this version reads v2, v3, "
        "v4, v5)"]


def test_kill_and_resume_keep_the_values(images, tiny_model_dir, tmp_path):
    when = [datetime(2024, 5, d, 12, tzinfo=timezone.utc) for d in range(1, 6)]
    files = [images / n for n in ("a.jpg", "b.png", "c.webp", "b.png", "a.jpg")]
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"file": [str(f) for f in files], "user_id": pa.array(range(5), pa.int16()),
                             "upload_id": pa.array([f"u{i}" for i in range(5)]).dictionary_encode(),
                             "uploaded_at": pa.array(when, pa.timestamp("ms", tz="UTC"))}), table)
    args = ["--keep-columns", "uploaded_at,upload_id,user_id", "--shard-size", "2", "--commit-every", "3600"]
    ref = tmp_path / "ref"
    scan(table, ref, tiny_model_dir, *args)
    out = tmp_path / "out"
    killed = scan(table, out, tiny_model_dir, *args, env={"GCAGE_FAULT_AT": "after_commit:0"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    scan(table, out, tiny_model_dir, *args, "--resume")
    run_cli("verify", out)
    rows = read_rows(out)
    assert [{k: v for k, v in r.items() if k not in IGNORED} for r in rows] == \
        [{k: v for k, v in r.items() if k not in IGNORED} for r in read_rows(ref)]
    assert [(r["user_id"], r["upload_id"], r["uploaded_at"]) for r in rows] == [
        (i, f"u{i}", when[i]) for i in range(5)]
    schema = pq.read_schema(out / "results" / "shard-00002.parquet")
    assert [str(schema.field(n).type) for n in ("uploaded_at", "upload_id", "user_id")] == [
        "timestamp[ms, tz=UTC]", "string", "int16"]  # dictionary-encoded columns keep their values
    other = scan(table, out, tiny_model_dir, *args[2:], "--resume", check=False)  # other kept columns
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (
        "Error: cannot resume with different settings (from_table: was {'keep_columns': ['uploaded_at', 'upload_id', "
        f"'user_id'], 'path': '{table}', 'path_column': 'file'}}, now {{'path': '{table}', 'path_column': 'file', "
        "'keep_columns': ['user_id', 'upload_id']}); use the original options, or --overwrite to start again")


def _bad_tables(tmp_path, images):
    good = write_table(tmp_path / "good.csv", table_rows(images)[:2], "csv")
    (tmp_path / "broken.parquet").write_bytes(b"not a parquet file")
    return good


@pytest.mark.parametrize("args, message", [
    (["--path-column", "path"], "Error: --path-column path: {good} has no such column (its columns: file, user_id, "
                                "upload_id, note)"),
    (["--path-column", "file", "--keep-columns", "user_id,uid,gid"],
     "Error: --keep-columns uid, gid: {good} has no such column (its columns: file, user_id, upload_id, note)"),
    (["--path-column", "file", "--keep-columns", "user_id,status"],
     "Error: --keep-columns status: the results already have a column status; rename it in the table"),
    (["--path-column", "file", "--from-table", "{tmp}/gone.parquet"],
     "Error: cannot read table {tmp}/gone.parquet: No such file or directory"),
    (["--path-column", "file", "--from-table", "{tmp}/broken.parquet"],
     "Error: cannot read table {tmp}/broken.parquet as parquet: Could not open Parquet input source "
     "'{tmp}/broken.parquet': Parquet magic bytes not found in footer. Either the file is corrupted or this is not a "
     "parquet file."),
    (["--path-column", "file", "--from-table", "{tmp}/uploads.xlsx"],
     "Error: unsupported table {tmp}/uploads.xlsx: name a .parquet, .csv or .jsonl file (by its suffix)"),
    (["--path-column", "user_id", "--from-table", "{tmp}/t.jsonl"],
     "Error: --path-column user_id of {tmp}/t.jsonl holds int64 values, not paths (text or bytes)"),
])
def test_table_problems_are_one_error_line_and_nothing_written(images, tiny_model_dir, tmp_path, args, message):
    good = _bad_tables(tmp_path, images)
    write_table(tmp_path / "t.jsonl", table_rows(images)[:1], "jsonl")
    fill = {"good": good, "tmp": tmp_path}
    args = [a.format(**fill) for a in args]
    out = tmp_path / "out"
    res = run_cli("scan", "--from-table", good, *args, "-o", out, "--model", tiny_model_dir, "--quiet", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [message.format(**fill)]
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["{img}", "--keep-columns", "user_id"], "--keep-columns needs --from-table FILE: it names a column of that table"),
    (["{img}", "--path-column", "file"], "--path-column needs --from-table FILE: it names a column of that table"),
    (["--from-table", "{tab}"], "--from-table needs --path-column COL: the table's column that holds the paths"),
    (["{img}", "--from-table", "{tab}", "--path-column", "file"],
     "--from-table takes the place of INPUTS and --from-list: put every input in the table"),
])
def test_usage_mistakes_exit_2(images, tmp_path, args, message):
    fill = {"img": images / "a.jpg", "tab": write_table(tmp_path / "t.csv", table_rows(images)[:1], "csv")}
    res = run_cli("scan", *[a.format(**fill) for a in args], "-o", tmp_path / "out", check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"Error: {message}"
    assert not (tmp_path / "out").exists()
