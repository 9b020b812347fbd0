"""Objects in an S3 store as inputs, against a real S3-compatible server on 127.0.0.1 (tests/s3server.py): a prefix
gives the rows the same files give locally (locator columns aside, scores bit-identical); lists and tables name
objects; an object changed or deleted after the plan is an fs.changed or fs.vanished row on --resume; wrong
credentials, a missing bucket and an unreachable endpoint are one Error line; no credential reaches run.json, the
results or the log."""

import json
import signal
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import genarchives as arc
import genimages as gen
from gcage_fast.errors import InputError
from gcage_fast.ingest import objectstore
from gcage_fast.ingest.objectstore import ObjectStat, parse
from gcage_fast.ingest.sources import input_id
from helpers import read_rows, run_cli

#: Columns that say where an input is or when it was scanned: the only ones that differ from a local scan.
LOCATION = {"input_id", "path", "path_bytes", "locator", "input_root", "relpath", "run_id", "scanned_at", "shard"}
FILES = ["a.jpg", "b.png", "c.webp", "batch.zip", "cut.jpg", "notes.txt", "sub/d.jpg", "sub/old.tar"]


pytestmark = pytest.mark.usefixtures("no_aws_environment")


@pytest.fixture(scope="module")
def server(s3_server):
    return s3_server


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, server):
    """The same files on disk and under s3://imgs/corpus/: images, a zip and a tar, a truncated JPEG, text."""
    root = tmp_path_factory.mktemp("objects") / "corpus"
    gen.save_image(root / "a.jpg", 260, 240, 1, "JPEG")
    gen.save_image(root / "b.png", 250, 240, 2, "PNG")
    gen.save_image(root / "c.webp", 240, 240, 3, "WEBP")
    gen.save_image(root / "sub" / "d.jpg", 300, 250, 4, "JPEG")
    arc.zip_with(root / "batch.zip", [("x.jpg", arc.jpeg(5)), ("y.jpg", arc.jpeg(6))])
    arc.tar_with(root / "sub" / "old.tar", [("z.jpg", arc.jpeg(7), tarfile.REGTYPE, ""),
                                            ("link.jpg", b"", tarfile.SYMTYPE, "z.jpg")])
    gen.truncated(root / "cut.jpg", "JPEG", 8)
    (root / "notes.txt").write_text("not an image\n")
    upload(server, root, "corpus")
    return root


def upload(server, root, prefix):
    fs = server.filesystem()
    for name in FILES:
        with fs.open_output_stream(f"{server.bucket}/{prefix}/{name}") as fh:
            fh.write((root / name).read_bytes())


def scan(server, out, model, *inputs, env=None, **kw):
    return run_cli("scan", *inputs, "-o", out, "--model", model, "--workers", "1", "--quiet",
                   env=server.env(**(env or {})), **kw)


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in LOCATION} for r in rows]


def test_a_prefix_gives_the_rows_of_the_same_files_scanned_locally(server, corpus, tiny_model_dir, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "remote"
    scan(server, local, tiny_model_dir, corpus)
    res = scan(server, remote, tiny_model_dir, "s3://imgs/corpus/")
    got, want = read_rows(remote), read_rows(local)
    assert comparable(got) == comparable(want)  # sha256, p_fake, patches and every status: bit for bit
    assert [r["locator"] for r in got] == [
        "s3://imgs/corpus/a.jpg", "s3://imgs/corpus/b.png", "s3://imgs/corpus/batch.zip!x.jpg",
        "s3://imgs/corpus/batch.zip!y.jpg", "s3://imgs/corpus/c.webp", "s3://imgs/corpus/cut.jpg",
        "s3://imgs/corpus/notes.txt", "s3://imgs/corpus/sub/d.jpg", "s3://imgs/corpus/sub/old.tar!z.jpg",
        "s3://imgs/corpus/sub/old.tar!link.jpg"]
    assert [r["relpath"] for r in got] == [r["relpath"] for r in want]
    assert {r["input_root"] for r in got} == {"s3://imgs/corpus"}
    assert [r["input_id"] for r in got if r["member"] is None] == [
        input_id(r["path_bytes"]) for r in got if r["member"] is None]
    assert got[0]["path_bytes"] == b"s3://imgs/corpus/a.jpg"
    assert [(r["status"], r["error_code"]) for r in got][5:] == [
        ("error", "decode.truncated"), ("error", "decode.unidentified"), ("ok", None), ("ok", None),
        ("skipped", "archive.link_member")]
    assert json.loads(run_cli("verify", remote, "--json").stdout)["ok"]
    plan = pa.ipc.open_file(pa.memory_map(str(remote / "plan" / "shard-00000.arrow"))).read_all()
    info = plan.column("object_info").to_pylist()
    assert [i["size"] for i in info] == [(corpus / r["relpath"].split("!")[0]).stat().st_size for r in got]
    assert all(i["etag"] for i in info)
    secret = server.secret_key
    assert secret not in res.stderr + res.stdout
    for path in remote.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path  # run.json, the plan, markers, results


def test_lists_and_tables_name_objects(server, corpus, tiny_model_dir, tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("s3://imgs/corpus/sub\ns3://imgs/corpus/b.png\ns3://imgs/corpus/gone.jpg\n"
                      "ftp://example.com/x.jpg\n")
    out = tmp_path / "from-list"
    scan(server, out, tiny_model_dir, "--from-list", listed)
    rows = read_rows(out)
    assert [(r["locator"], r["input_root"], r["status"], r["error_code"]) for r in rows] == [
        ("ftp://example.com/x.jpg", "ftp://example.com", "error", "fs.unsupported_scheme"),
        ("s3://imgs/corpus/b.png", "s3://imgs/corpus", "ok", None),
        ("s3://imgs/corpus/gone.jpg", "s3://imgs/corpus", "error", "fs.vanished"),
        ("s3://imgs/corpus/sub/d.jpg", "s3://imgs/corpus/sub", "ok", None),
        ("s3://imgs/corpus/sub/old.tar!z.jpg", "s3://imgs/corpus/sub", "ok", None),
        ("s3://imgs/corpus/sub/old.tar!link.jpg", "s3://imgs/corpus/sub", "skipped", "archive.link_member")]
    assert rows[0]["error_detail"] == ("ftp:// is not read (yet): local paths, s3:// or gs:// objects and http(s):// "
                                       "URLs are")
    assert rows[2]["error_detail"] == "no such object"
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"file": ["s3://imgs/corpus/c.webp", "s3://imgs/corpus/sub", str(corpus / "a.jpg"),
                                      "s3://imgs/corpus/batch.zip"], "user_id": [1, 2, 3, 4]}), table)
    out = tmp_path / "from-table"
    scan(server, out, tiny_model_dir, "--from-table", table, "--path-column", "file", "--keep-columns", "user_id")
    rows = read_rows(out)
    assert [(r["locator"], r["user_id"], r["error_code"]) for r in rows] == [
        ("s3://imgs/corpus/c.webp", 1, None), ("s3://imgs/corpus/sub", 2, "fs.is_directory"),
        (str(corpus / "a.jpg"), 3, None), ("s3://imgs/corpus/batch.zip!x.jpg", 4, None),
        ("s3://imgs/corpus/batch.zip!y.jpg", 4, None)]


def test_objects_changed_or_deleted_after_the_plan(server, corpus, tiny_model_dir, tmp_path):
    upload(server, corpus, "moving")
    out = tmp_path / "out"
    killed = scan(server, out, tiny_model_dir, "s3://imgs/moving", env={"GCAGE_FAULT_AT": "after_plan:0"},
                  check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    fs = server.filesystem()
    same_size = bytearray((corpus / "a.jpg").read_bytes())
    same_size[len(same_size) // 2] ^= 0xFF  # other bytes, same size: the ETag tells
    for key, data in (("a.jpg", bytes(same_size)), ("batch.zip", (corpus / "b.png").read_bytes())):
        with fs.open_output_stream(f"imgs/moving/{key}") as fh:
            fh.write(data)
    fs.delete_file("imgs/moving/cut.jpg")
    refused = scan(server, out, tiny_model_dir, "s3://imgs/moving", "--resume",
                   env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, check=False)
    assert refused.returncode == 1  # credentials refused while scanning: the run stops, no row is written
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: cannot read s3://imgs/moving/a.jpg: the S3 endpoint {server.endpoint} refused the credentials "
        "(SIGNATURE_DOES_NOT_MATCH); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile in "
        "AWS_PROFILE)")
    assert json.loads((out / "run.json").read_text())["state"] == "stopped" and not read_rows(out)
    scan(server, out, tiny_model_dir, "s3://imgs/moving", "--resume")
    rows = {r["relpath"]: r for r in read_rows(out)}
    assert len(rows) == 10
    changed = {k: (r["status"], r["error_code"]) for k, r in rows.items() if r["status"] != "ok"}
    assert changed == {"a.jpg": ("error", "fs.changed"), "batch.zip!x.jpg": ("error", "fs.changed"),
                       "batch.zip!y.jpg": ("error", "fs.changed"), "cut.jpg": ("error", "fs.vanished"),
                       "notes.txt": ("error", "decode.unidentified"),
                       "sub/old.tar!link.jpg": ("skipped", "archive.link_member")}
    assert rows["a.jpg"]["error_detail"].startswith("the object changed since it was planned: etag ")
    assert rows["batch.zip!x.jpg"]["error_detail"] == (
        f"the object changed since it was planned: size {(corpus / 'batch.zip').stat().st_size} when planned, "
        f"{(corpus / 'b.png').stat().st_size} now")
    assert rows["cut.jpg"]["error_detail"] == "the object no longer exists"
    assert rows["a.jpg"]["sha256"] is None and rows["a.jpg"]["p_fake"] is None  # never scored
    run_cli("verify", out)


@pytest.mark.parametrize("case, uri, message", [
    ("wrong secret", "s3://imgs/corpus", "Error: cannot read s3://imgs/corpus: the S3 endpoint {endpoint} refused "
     "the credentials (SIGNATURE_DOES_NOT_MATCH); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile "
     "in AWS_PROFILE)"),
    ("unknown key", "s3://imgs/corpus/a.jpg", "Error: cannot read s3://imgs/corpus/a.jpg: the S3 endpoint "
     "{endpoint} refused the credentials (INVALID_ACCESS_KEY_ID); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
     "(or the profile in AWS_PROFILE)"),
    ("missing bucket", "s3://nobucket/corpus", "Error: cannot read s3://nobucket/corpus: bucket nobucket does not "
     "exist at the S3 endpoint {endpoint}"),
    ("missing prefix", "s3://imgs/nothing-here", "Error: input not found: s3://imgs/nothing-here (no object has "
     "this key, and none is under it)"),
    ("unreachable", "s3://imgs/corpus", "Error: cannot read s3://imgs/corpus: cannot reach the S3 endpoint "
     "{endpoint} (NETWORK_CONNECTION)"),
    ("credentials in the URI", "s3://key:hunter22@imgs/corpus", "Error: a URI with credentials in it "
     "(s3://user:secret@bucket/...) is not accepted; give them through the environment (AWS_ACCESS_KEY_ID and "
     "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"),
    ("unsupported scheme", "ftp://example.com/x.jpg", "Error: cannot read ftp://example.com/x.jpg: ftp:// "
     "inputs are not read (local paths, file://, s3://, gs://, http:// and https:// are)"),
])
def test_problems_of_the_run_are_one_error_line(server, corpus, tiny_model_dir, tmp_path, case, uri, message):
    env = {"wrong secret": {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
           "unknown key": {"AWS_ACCESS_KEY_ID": "nobody"},
           "unreachable": {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}}.get(case, {})
    out = tmp_path / "out"
    res = scan(server, out, tiny_model_dir, uri, env=env, check=False)
    assert res.returncode == 1
    endpoint = env.get("AWS_ENDPOINT_URL", server.endpoint)
    assert res.stderr.strip().splitlines() == [message.format(endpoint=endpoint)]
    assert not out.exists()
    assert server.secret_key not in res.stderr and "hunter22" not in res.stderr


def test_resolve_gives_the_filesystem_inputs_are_read_with(server, corpus, monkeypatch):
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    objectstore.forget_filesystems()
    try:
        fs, path = objectstore.resolve("s3://imgs/corpus/sub/d.jpg")
        assert path == "imgs/corpus/sub/d.jpg"
        assert fs.get_file_info(path).size == (corpus / "sub" / "d.jpg").stat().st_size
    finally:
        objectstore.forget_filesystems()


class _Inline:
    """A ThreadPoolExecutor that runs each read at once, counting them (what the read-ahead asks is deterministic)."""

    submitted: list[str] = []

    def __init__(self, **kw):
        pass

    def submit(self, fn, entry):
        from concurrent.futures import Future

        _Inline.submitted.append(entry.path)
        done = Future()
        done.set_result(fn(entry))
        return done

    def shutdown(self, **kw):
        pass


def test_objects_are_read_ahead_in_plan_order_within_the_budget(monkeypatch):
    from gcage_fast.config import ScanConfig
    from gcage_fast.ingest import feed
    from gcage_fast.output.outdir import PlanEntry

    half = feed.READAHEAD_BYTES // 2
    sizes = {"s3://b/big1": half, "s3://b/big2": half, "s3://b/big3": half}
    entries = [PlanEntry(i, str(i), p, p.encode(), None, None, object_info={"size": sizes.get(p, 10)})
               for i, p in enumerate([f"s3://b/{i}" for i in range(12)] + list(sizes))]
    entries.insert(3, PlanEntry(99, "local", "/tmp/x.jpg", b"/tmp/x.jpg", None, None))  # no read ahead
    monkeypatch.setattr(feed, "ThreadPoolExecutor", _Inline)
    _Inline.submitted = []
    reader = feed.InputFeed(None, [], ScanConfig(inputs=("x",), output="o"), 5, 0, None)
    monkeypatch.setattr(reader, "_fetch", lambda entry: entry.path.encode())
    seen = []
    for shard, entry, future in reader._read_ahead((0, e) for e in entries):
        seen.append((entry.path, future.result() if future else None, len(_Inline.submitted)))
    assert [p for p, _, _ in seen] == [e.path for e in entries]  # plan order, whatever was read ahead
    assert all(data == path.encode() for path, data, _ in seen if path.startswith("s3://"))
    ahead = [submitted - sum(1 for p, _, _ in seen[:i + 1] if p.startswith("s3://")) for i, (_, _, submitted)
             in enumerate(seen)]
    assert max(ahead) == feed.READAHEAD  # objects read and not yet taken: never more than READAHEAD
    assert ahead[-3:] == [1, 1, 0]  # each big one is half the byte budget: two of them at most


def test_object_stat_change():
    planned = ObjectStat(10, '"e1"', None, "2026-01-01T00:00:00Z")
    assert planned.change(ObjectStat(10, '"e1"', None, "2026-01-02T00:00:00Z")) is None  # the ETag decides
    assert planned.change(ObjectStat(11, '"e1"')) == "size 10 when planned, 11 now"
    assert planned.change(ObjectStat(10, '"e2"')) == 'etag "e1" when planned, "e2" now'
    no_etag = ObjectStat(10, None, None, "2026-01-01T00:00:00Z")
    assert no_etag.change(ObjectStat(10, None, None, "2026-01-02T00:00:00Z")) == (
        "last-modified 2026-01-01T00:00:00Z when planned, 2026-01-02T00:00:00Z now")
    assert ObjectStat.from_dict(planned.to_dict()) == planned
    assert parse(b"S3://imgs/a/b/").uri == "s3://imgs/a/b" and parse(b"gcs://b/k").uri == "gs://b/k"
    with pytest.raises(InputError, match="an object key is UTF-8"):
        parse(b"s3://imgs/\xff.jpg")
