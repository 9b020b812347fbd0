"""http:// URLs as inputs (fsspec's HTTP filesystem, the http extra), against a real HTTP server on 127.0.0.1 (the
standard library's, serving a directory): a list of URLs gives the rows the same files give locally (scores bit
for bit), an archive URL gives its members, 404 and 403 are fs.vanished and fs.permission rows, an object changed
after the plan is fs.changed on --resume, and a URL with credentials in it is refused."""

import http.server
import importlib.util
import signal
import threading

import pytest

import genarchives as arc
import genimages as gen
from helpers import read_rows, run_cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("aiohttp") is None,
                                reason="aiohttp is not installed (pip install 'gcage-fast[http]', in the dev extra)")

VARYING = {"input_id", "path", "path_bytes", "locator", "input_root", "relpath", "run_id", "scanned_at"}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Files of the served directory; anything under /private/ is refused (403)."""

    def send_head(self):
        if self.path.startswith("/private/"):
            self.send_error(403)
            return None
        return super().send_head()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    gen.save_image(root / "a.jpg", 260, 240, 1, "JPEG")
    gen.save_image(root / "b.png", 250, 240, 2, "PNG")
    arc.zip_with(root / "batch.zip", [("x.jpg", arc.jpeg(5)), ("y.jpg", arc.jpeg(6))])
    gen.truncated(root / "cut.jpg", "JPEG", 8)
    (root / "private").mkdir()
    gen.save_image(root / "private" / "p.jpg", 240, 240, 3, "JPEG")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a, **kw: _Handler(*a, directory=str(root), **kw))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def scan(out, model, *args, **kw):
    return run_cli("scan", *args, "-o", out, "--model", model, "--workers", "1", "--quiet", **kw)


def test_urls_give_the_rows_of_the_same_files(site, tiny_model_dir, tmp_path):
    root, base = site
    listed = tmp_path / "urls.txt"
    names = ["a.jpg", "b.png", "batch.zip", "cut.jpg"]
    listed.write_text("".join(f"{base}/{n}\n" for n in names + ["gone.jpg", "private/p.jpg"]))
    scan(tmp_path / "web", tiny_model_dir, "--from-list", listed)
    local_list = tmp_path / "local.txt"
    local_list.write_text("".join(f"{root / n}\n" for n in names))
    scan(tmp_path / "local", tiny_model_dir, "--from-list", local_list)
    got, want = read_rows(tmp_path / "web"), read_rows(tmp_path / "local")
    by = {r["locator"]: r for r in got}
    assert sorted(by) == sorted([f"{base}/{n}" for n in ("a.jpg", "b.png", "cut.jpg", "gone.jpg", "private/p.jpg")]
                                + [f"{base}/batch.zip!x.jpg", f"{base}/batch.zip!y.jpg"])
    same = [{k: v for k, v in by[r["locator"].replace(str(root), base)].items() if k not in VARYING} for r in want]
    assert same == [{k: v for k, v in r.items() if k not in VARYING} for r in want]  # scores, sha256: bit for bit
    assert (by[f"{base}/gone.jpg"]["error_code"], by[f"{base}/gone.jpg"]["error_detail"]) == (
        "fs.vanished", "no such object")
    assert (by[f"{base}/private/p.jpg"]["error_code"], by[f"{base}/private/p.jpg"]["error_detail"]) == (
        "fs.permission", "the server refused it (HTTP 403)")
    assert by[f"{base}/cut.jpg"]["error_code"] == "decode.truncated"
    assert run_cli("verify", tmp_path / "web").returncode == 0


def test_a_url_named_on_the_command_line_and_one_changed_after_the_plan(site, tiny_model_dir, tmp_path):
    root, base = site
    (root / "moving.png").write_bytes((root / "b.png").read_bytes())
    out = tmp_path / "out"
    killed = scan(out, tiny_model_dir, f"{base}/moving.png", f"{base}/a.jpg",
                  env={"GCAGE_FAULT_AT": "after_plan:0"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (root / "moving.png").write_bytes((root / "a.jpg").read_bytes())  # another size
    scan(out, tiny_model_dir, f"{base}/moving.png", f"{base}/a.jpg", "--resume")
    rows = {r["locator"]: r for r in read_rows(out)}
    assert rows[f"{base}/a.jpg"]["status"] == "ok"
    moved = rows[f"{base}/moving.png"]
    assert moved["error_code"] == "fs.changed"
    assert moved["error_detail"] == (f"the object changed since it was planned: size "
                                     f"{(root / 'b.png').stat().st_size} when planned, "
                                     f"{(root / 'a.jpg').stat().st_size} now")
    missing = scan(tmp_path / "missing", tiny_model_dir, f"{base}/nothing.jpg", check=False)
    assert missing.stderr.strip().splitlines() == [
        f"Error: input not found: {base}/nothing.jpg (no object has this key, and none is under it)"]
    secret = scan(tmp_path / "secret", tiny_model_dir, "http://user:hunter22@127.0.0.1:9/x.jpg", check=False)
    assert secret.stderr.strip().splitlines() == [
        "Error: a URL with credentials in it (http://user:secret@host/...) is not accepted: they would be written "
        "into the rows and run.json; serve the files without them"]


def test_a_large_object_is_read_whole_and_within_the_limit(site):
    """A streamed read gives what has arrived (64 KiB, say): the bytes come whole, or limit.bytes."""
    import random

    from gcage_fast.ingest import webobjects
    from gcage_fast.ingest.decode import DecodeFailure

    root, base = site
    data = random.Random(4).randbytes(3_000_000)
    (root / "big.bin").write_bytes(data)
    stat, got = webobjects.read(f"{base}/big.bin", 10_000_000)
    assert (stat[0], len(got), got == data) == (3_000_000, 3_000_000, True)
    with pytest.raises(DecodeFailure) as info:
        webobjects.read(f"{base}/big.bin", 1000)
    assert (info.value.code, info.value.detail) == ("limit.bytes", "3000000 bytes is over the limit of 1000")
