"""A scan's output in an S3 store (``-o s3://bucket/prefix``), against a real S3-compatible server on 127.0.0.1
(tests/s3server.py): the rows are those of a local output, ``verify`` follows the markers, a scan killed between a
part's upload and its marker resumes to a clean output, the first attempt to create a marker wins (the loser's part
is deleted), and wrong credentials, a missing bucket or a bucket without a prefix are one Error line."""

import json
import os
import signal

import pyarrow.fs as pafs
import pytest

import genimages as gen
from gcage_fast.output import objectout
from gcage_fast.output.location import output_dir
from gcage_fast.output.outdir import json_bytes, shard_rows
from helpers import read_rows, run_cli

#: Columns that differ between two scans of the same files (when and where they were scanned).
VARYING = {"run_id", "scanned_at", "heatmap_path"}


pytestmark = pytest.mark.usefixtures("no_aws_environment")


@pytest.fixture(scope="module")
def server(s3_server):
    return s3_server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    for i, (fmt, ext) in enumerate([("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("JPEG", "jpg"),
                                    ("PNG", "png")]):
        gen.save_image(root / f"im{i}.{ext}", 240 + 10 * i, 240, i, fmt)
    gen.truncated(root / "cut.jpg", "JPEG", 9)
    (root / "notes.txt").write_text("not an image\n")
    return root


def scan(server, out, model, *args, env=None, **kw):
    return run_cli("scan", *args, "-o", out, "--model", model, "--workers", "1", "--quiet",
                   env=server.env(**(env or {})), **kw)


def remote(server, monkeypatch, uri):
    """The ObjectOutputDir of ``uri``, in this process, with the server's environment."""
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    objectout.forget_clients()
    return output_dir(uri)


def remote_rows(out):
    """Every committed row of an object-store output, in plan order (through the markers)."""
    rows = []
    for ref in out.result_files(shard_rows(out.read_plan_info())):
        rows.extend(out.read_result(ref).to_pylist())
    return rows


def keys(server, prefix):
    fs = server.filesystem()
    infos = fs.get_file_info(pafs.FileSelector(f"{server.bucket}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path.split("/", 2)[2] for i in infos if i.type == pafs.FileType.File)


def test_an_output_in_s3_has_the_rows_of_a_local_one_and_verifies(server, images, tiny_model_dir, tmp_path,
                                                                   monkeypatch):
    local = tmp_path / "local"
    scan(server, local, tiny_model_dir, images, "--shard-size", "3", "--heatmaps", "png")
    res = scan(server, "s3://imgs/out-same", tiny_model_dir, images, "--shard-size", "3", "--heatmaps", "png")
    assert server.secret_key not in res.stderr + res.stdout
    out = remote(server, monkeypatch, "s3://imgs/out-same")
    got, want = remote_rows(out), read_rows(local)
    assert len(got) == 7
    assert [{k: v for k, v in r.items() if k not in VARYING} for r in got] == \
        [{k: v for k, v in r.items() if k not in VARYING} for r in want]  # paths, scores, statuses: bit for bit
    assert [r["heatmap_path"] for r in got] == [r["heatmap_path"] for r in want]
    listed = keys(server, "out-same")
    parts = [k for k in listed if k.startswith("results/")]
    assert [k.split(".")[0] for k in parts] == ["results/shard-00000", "results/shard-00001", "results/shard-00002"]
    assert all(len(k.split(".")) == 3 for k in parts)  # shard-NNNNN.<attempt>.parquet: an attempt's own key
    markers = [json.loads(out.read_bytes(f"commits/shard-0000{i}.json")) for i in range(3)]
    assert [m["part"] for m in markers] == parts and all(m["etag"] for m in markers)
    assert {k for k in listed if k.startswith("heatmaps/")} == {f"heatmaps/{r['heatmap_path'].split('/', 1)[1]}"
                                                                 for r in got if r["heatmap_path"]}
    assert {"run.json", "plan/plan.json"} <= set(listed)
    report = json.loads(run_cli("verify", "s3://imgs/out-same", "--json", env=server.env()).stdout)
    assert (report["ok"], report["n_rows"], report["n_committed"], report["path"]) == (True, 7, 3, "s3://imgs/out-same")
    run = json.loads(out.read_bytes("run.json"))
    assert (run["state"], run["config"]["output"]) == ("finished", "s3://imgs/out-same")
    again = scan(server, "s3://imgs/out-same", tiny_model_dir, images, "--shard-size", "3", "--heatmaps", "png",
                 "--resume", "--json")
    assert (json.loads(again.stdout)["shards_skipped"], len(keys(server, "out-same"))) == (3, len(listed))
    secret = server.secret_key.encode()
    for key in listed:  # no credential in run.json, the plan, the markers, the results
        assert secret not in out.read_bytes(key), key


def test_a_scan_killed_between_part_and_marker_resumes_clean(server, images, tiny_model_dir, monkeypatch):
    uri = "s3://imgs/out-killed"
    killed = scan(server, uri, tiny_model_dir, images, "--shard-size", "3",
                  env={"GCAGE_FAULT_AT": "after_rename:1"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [k.split(".")[0] for k in keys(server, "out-killed") if k.startswith(("results/", "commits/"))] == [
        "commits/shard-00000", "results/shard-00000", "results/shard-00001"]  # shard 1: a part, no marker
    check = run_cli("verify", uri, env=server.env(), check=False)
    assert check.returncode == 1
    problems = check.stdout.splitlines()[1:]
    assert "  - shard 1: not committed (scan incomplete; run it again with --resume)" in problems
    orphan = next(k for k in keys(server, "out-killed") if k.startswith("results/shard-00001"))
    assert f"  - part no commit marker names: {orphan} (an attempt that was cut off or lost the commit to " \
           "another; the next --resume deletes it)" in problems
    scan(server, uri, tiny_model_dir, images, "--shard-size", "3", "--resume")
    listed = keys(server, "out-killed")
    assert orphan not in listed
    assert len([k for k in listed if k.startswith("results/")]) == 3
    assert run_cli("verify", uri, env=server.env()).stdout.startswith(f"OK: {uri}: 7/7 rows, 3/3 shards committed")
    out = remote(server, monkeypatch, uri)
    assert len({r["input_id"] for r in remote_rows(out)}) == 7  # once each


def test_the_first_attempt_to_commit_a_shard_wins(server, monkeypatch):
    out = remote(server, monkeypatch, "s3://imgs/out-race")
    first = out.commit_part(0, None, b"rows of the first attempt", {"shard": 0, "rows": 1, "bytes": 25})
    second = out.commit_part(0, None, b"rows of the second", {"shard": 0, "rows": 1, "bytes": 18})
    assert second == first  # the marker that stands is the first attempt's
    assert keys(server, "out-race") == ["commits/shard-00000.json", first["part"]]  # the loser's part is deleted
    assert out.read_bytes(first["part"]) == b"rows of the first attempt"
    assert json.loads(out.read_bytes("commits/shard-00000.json")) == first
    assert out.create("commits/other.json", json_bytes({"n": 1})) is True
    assert out.create("commits/other.json", json_bytes({"n": 2})) is False
    assert json.loads(out.read_bytes("commits/other.json")) == {"n": 1}


@pytest.mark.parametrize("case, uri, env, message", [
    ("wrong secret", "s3://imgs/out-x", {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
     "Error: cannot write the output to s3://imgs/out-x: the S3 endpoint {endpoint} refused the credentials "
     "(SignatureDoesNotMatch); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile in AWS_PROFILE)"),
    ("missing bucket", "s3://nobucket/out", {},
     "Error: cannot write the output to s3://nobucket/out: bucket nobucket does not exist at the S3 endpoint "
     "{endpoint}"),
    ("no prefix", "s3://imgs/", {}, "Error: cannot write the output to s3://imgs/: name a prefix in the bucket for "
     "it (s3://bucket/results), not the bucket itself"),
    ("another scheme", "gs://imgs/out", {}, "Error: cannot write the output to gs://imgs/out: outputs in object "
     "stores are written to s3:// URIs (AWS S3, or an S3-compatible store through AWS_ENDPOINT_URL)"),
    ("unreachable", "s3://imgs/out-x", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
     "Error: cannot write the output to s3://imgs/out-x: cannot reach the S3 endpoint http://127.0.0.1:9 "
     "(EndpointConnectionError)"),
])
def test_problems_of_the_output_are_one_error_line(server, images, tiny_model_dir, case, uri, env, message):
    res = scan(server, uri, tiny_model_dir, images / "im0.jpg", env=env, check=False)
    assert res.returncode == 1
    endpoint = env.get("AWS_ENDPOINT_URL", server.endpoint)
    assert res.stderr.strip().splitlines() == [message.format(endpoint=endpoint)]
    assert server.secret_key not in res.stderr
    assert not os.path.exists("s3:") and not os.path.exists("gs:")


def test_an_output_prefix_in_use_and_verify_of_nothing(server, images, tiny_model_dir):
    fs = server.filesystem()
    with fs.open_output_stream("imgs/someone-else/data.csv") as fh:
        fh.write(b"a,b\n")
    for mode, message in (((), "Error: output s3://imgs/someone-else is not empty; use --resume to continue that "
                                "scan or --overwrite to replace it"),
                          (("--overwrite",), "Error: refusing to overwrite s3://imgs/someone-else: it is not a "
                                             "gcage_fast output")):
        res = scan(server, "s3://imgs/someone-else", tiny_model_dir, images / "im0.jpg", *mode, check=False)
        assert res.stderr.strip().splitlines() == [message]
    assert keys(server, "someone-else") == ["data.csv"]
    res = run_cli("verify", "s3://imgs/nothing-here", env=server.env(), check=False)
    assert res.stderr.strip().splitlines() == [
        "Error: s3://imgs/nothing-here is not a gcage_fast output directory (no run.json)"]
    res = run_cli("verify", "s3://imgs/nothing-here", env=server.env(AWS_SECRET_ACCESS_KEY="bad"), check=False)
    assert res.stderr.strip().splitlines() == [
        f"Error: cannot read s3://imgs/nothing-here: the S3 endpoint {server.endpoint} refused the credentials "
        "(SignatureDoesNotMatch); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile in "
        "AWS_PROFILE)"]


def test_overwrite_replaces_an_output_in_s3(server, images, tiny_model_dir, monkeypatch):
    uri = "s3://imgs/out-over"
    scan(server, uri, tiny_model_dir, images, "--shard-size", "2")
    assert len([k for k in keys(server, "out-over") if k.startswith("results/")]) == 4
    scan(server, uri, tiny_model_dir, images / "im0.jpg", images / "im1.png", "--overwrite")
    assert [k.split(".")[0] for k in keys(server, "out-over") if k.startswith(("results/", "commits/"))] == [
        "commits/shard-00000", "results/shard-00000"]
    assert len(remote_rows(remote(server, monkeypatch, uri))) == 2
    assert run_cli("verify", uri, env=server.env()).returncode == 0
