"""scan --input-format webdataset: one row per sample key (its image scored, named by the image member), the other
members as the row's sidecar JSON and never rows of their own; a sample without an image is one
webdataset.no_image row; a killed scan resumes with the same sidecars; the format is part of the fingerprint."""

import json
import signal
import tarfile

import pytest

import genarchives as arc
from gcage_fast.ingest.archives import ArchiveMember
from gcage_fast.ingest.sources import input_id
from gcage_fast.ingest.webdataset import SIDECAR_MAX_BYTES, sample_key, samples, sidecar_json
from helpers import read_rows, run_cli

WDS = ("--input-format", "webdataset")
SIDECARS = [
    {"json": {"caption": "a red barn", "width": 260}, "txt": "a red barn\n"},
    {"cls": "3"},
    {"json": {"note": "the image was removed", "tags": ["x", "y"]}},
    {"json": {"caption": "café", "score": 0.5}, "txt": "café"},
    {"cls": "0\n"},
]
MEMBERS = ["train/0001.jpg", "train/0002.png", "train/0003", "train/0004.jpg", "train/0005.png"]
IGNORED = {"run_id", "scanned_at"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds") / "shards"
    root.mkdir()
    arc.webdataset_shard(root / "shard-000.tar", arc.five_samples())
    return root


def scan_args(shards, out, model, *extra):
    return ["scan", shards, "-o", out, "--model", model, *WDS, "--shard-size", "2", "--commit-every", "3600",
            "--quiet", *extra]


@pytest.fixture(scope="module")
def scanned(shards, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wds-out") / "out"
    run_cli(*scan_args(shards, out, tiny_model_dir, "--workers", "1"))
    return out


def ordered(rows):
    return sorted(rows, key=lambda r: r["member_index"])


def test_one_row_per_sample_with_its_sidecars(shards, scanned):
    rows = ordered(read_rows(scanned))
    assert [r["member"] for r in rows] == MEMBERS
    assert [r["member_index"] for r in rows] == [0, 3, 5, 6, 9]  # the image member; the first member without one
    assert [json.loads(r["sidecar"]) for r in rows] == SIDECARS
    assert [r["status"] for r in rows] == ["ok", "ok", "error", "ok", "ok"]
    assert [r["format"] for r in rows] == ["JPEG", "PNG", None, "JPEG", "PNG"]
    no_image = rows[2]
    assert no_image["error_code"] == "webdataset.no_image"
    assert no_image["error_detail"] == ("sample train/0003 has no image member (one of jpg, jpeg, png, webp, ppm, "
                                        "bmp, tif, tiff); its members' extensions: json")
    assert all(r["error_code"] is None for r in rows if r is not no_image)  # sidecars are no error rows
    tar = shards / "shard-000.tar"
    for r in rows:
        assert r["path"] == str(tar) and r["flags"] == []
        assert r["locator"] == f"{tar}!{r['member']}" and r["input_root"] == str(shards)
        assert r["relpath"] == f"shard-000.tar!{r['member']}"
        assert r["input_id"] == input_id(r["path_bytes"], r["member_bytes"], r["member_index"])
    res = run_cli("verify", scanned, "--json")
    assert json.loads(res.stdout)["ok"] and json.loads(res.stdout)["n_rows"] == 5


def test_without_the_option_every_member_is_an_input(shards, tiny_model_dir, tmp_path):
    run_cli("scan", shards, "-o", tmp_path / "out", "--model", tiny_model_dir, "--workers", "0", "--quiet")
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 11 and {r["sidecar"] for r in rows} == {None}
    assert sorted(r["member"] for r in rows if r["status"] == "ok") == sorted(m for m in MEMBERS if "." in m)


def test_resume_after_a_kill_keeps_the_sidecars(shards, scanned, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    args = scan_args(shards, out, tiny_model_dir, "--workers", "0")
    killed = run_cli(*args, env={"GCAGE_FAULT_AT": "after_commit:0"}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in (out / "commits").iterdir()) == ["shard-00000.json"]
    run_cli(*args, "--resume")  # the second shard starts in the middle of the tar
    run_cli("verify", out)
    strip = [{k: v for k, v in r.items() if k not in IGNORED} for r in ordered(read_rows(out))]
    assert strip == [{k: v for k, v in r.items() if k not in IGNORED} for r in ordered(read_rows(scanned))]
    other = run_cli(*[a for a in args if a not in WDS], "--resume", check=False)
    assert other.returncode == 1
    assert other.stderr.strip().splitlines()[-1] == (
        "Error: cannot resume with different settings (input_format: was 'webdataset', now None); use the original "
        "options, or --overwrite to start again")


def test_sidecar_limits_extra_images_junk_and_plain_files(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    src.mkdir()
    big = b"x" * (SIDECAR_MAX_BYTES + 1)
    arc.tar_with(src / "odd.tar.gz", [
        ("k1.png", arc.gen.encode(arc.gen.photo_like(240, 240, 40), "PNG"), tarfile.REGTYPE, ""),
        ("k1.jpg", arc.jpeg(41), tarfile.REGTYPE, ""),
        ("k1.txt", big, tarfile.REGTYPE, ""),
        ("k1.npy", b"\x93NUMPY\x01\x00\xff\xfe", tarfile.REGTYPE, ""),
        ("k1.json", b"{not json", tarfile.REGTYPE, ""),
        ("__MACOSX/._k1.jpg", b"\x00\x05\x16\x07", tarfile.REGTYPE, ""),
        ("k2.jpg", arc.jpeg(42), tarfile.REGTYPE, ""),
    ], "w:gz")
    arc.gen.save_image(src / "plain.jpg", 240, 240, 43, "JPEG")
    out = tmp_path / "out"
    run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "0", "--quiet", *WDS)
    rows = {r["member"]: r for r in read_rows(out)}
    assert sorted(rows, key=str) == [None, "k1.jpg", "k2.jpg"]  # jpg before png; the junk member is no input
    k1 = rows["k1.jpg"]
    assert k1["status"] == "ok" and k1["member_index"] == 1
    assert json.loads(k1["sidecar"]) == {"txt": None, "npy": None, "json": "{not json"}
    assert k1["flags"] == ["webdataset.images_unscanned", "webdataset.sidecar_too_large", "webdataset.sidecar_binary",
                           "webdataset.sidecar_invalid_json"]
    assert json.loads(rows["k2.jpg"]["sidecar"]) == {} and rows["k2.jpg"]["flags"] == []
    assert rows[None]["sidecar"] is None and rows[None]["status"] == "ok"  # a plain file is no sample
    assert json.loads((out / "run.json").read_text())["filtered"] == {"junk": 1}
    run_cli("verify", out)


def test_samples_are_runs_of_adjacent_keys():
    members = [ArchiveMember(0, b"d/a.jpg"), ArchiveMember(1, b"d/b.jpg"), ArchiveMember(2, b"d/a.json"),
               ArchiveMember(3, b"d/c.seg.png"), ArchiveMember(4, b"d/c.JPG", flags=("archive.unsafe_name",)),
               ArchiveMember(5, b"d/l.jpg", preset=("skipped", "archive.link_member", "link")),
               ArchiveMember(6, b"d/l.json", preset=("skipped", "archive.link_member", "link"))]
    got = samples(members)
    assert [(s.member, s.member_index) for s in got] == [(b"d/a.jpg", 0), (b"d/b.jpg", 1), (b"d/a", 2),
                                                         (b"d/c.JPG", 4), (b"d/l.jpg", 5)]
    assert got[2].preset[1] == "webdataset.no_image" and got[2].sidecars == ((2, b"d/a.json"),)
    assert got[3].flags == ("archive.unsafe_name", "webdataset.images_unscanned") and got[3].sidecars == ()
    assert got[4].preset[1] == "archive.link_member" and got[4].sidecars == ()  # links are never read
    assert sample_key(b"x/y/0001.meta.json") == (b"x/y/0001", b"meta.json")


def test_sidecar_json_forms():
    text, flags = sidecar_json([(b"k.json", b'{"a": [1, 2.5, null]}'), (b"k.meta.json", b"NaN"),
                                (b"k.json", b'{"second": true}'), (b"k.txt", "zwölf\n".encode()),
                                (b"k.bin", b"\xff"), (b"k.big", None), (b"k.esc", b'{"s": "\\ud800"}')])
    assert json.loads(text) == {"json": {"a": [1, 2.5, None]}, "meta.json": "NaN", "txt": "zwölf\n", "bin": None,
                                "big": None, "esc": '{"s": "\\ud800"}'}
    assert flags == ["webdataset.sidecar_invalid_json", "webdataset.sidecar_binary", "webdataset.sidecar_too_large"]
    text, _ = sidecar_json([(b"k.json", b'{"s": "\\ud800"}')])  # a lone surrogate stays escaped
    assert text == '{"json": {"s": "\\ud800"}}' and text.encode("utf-8")
