"""Deterministic enumeration: byte order, raw names, links, special files, unreadable directories, path lists."""

import os

import pytest

import genimages as gen
from gcage_fast.errors import InputError
from gcage_fast.ingest.sources import display_path, enumerate_inputs, input_id
from helpers import read_rows, run_cli


def paths(refs):
    return [r.path_bytes for r in refs]


def test_sorted_by_path_bytes_and_deduplicated(tmp_path):
    for name in ["b.jpg", "a.jpg", "a/z.jpg", "a.b/c.jpg", "B.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    refs = enumerate_inputs([str(tmp_path), str(tmp_path / "a.jpg"), str(tmp_path)])
    root = os.fsencode(tmp_path)
    assert paths(refs) == sorted(root + b"/" + n for n in [b"b.jpg", b"a.jpg", b"a/z.jpg", b"a.b/c.jpg", b"B.jpg"])
    assert [r.preset for r in refs] == [None] * 5


def test_raw_names_are_kept_and_escaped_for_display(tmp_path):
    raw = os.fsencode(tmp_path) + b"/bad\xff\x1bname.jpg"
    with open(raw, "wb") as fh:
        fh.write(b"x")
    (ref,) = enumerate_inputs([str(tmp_path)])
    assert ref.path_bytes == raw
    assert ref.path == str(tmp_path) + "/bad\\xff\\x1bname.jpg"
    assert display_path(b"tab\there") == "tab\\there"
    assert ref.input_id == input_id(raw) != input_id(raw, b"member")


def test_links_special_files_and_unreadable_dirs(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "img.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "d" / "img.jpg", tmp_path / "link.jpg")
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    os.symlink(tmp_path / "gone", tmp_path / "dangling.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if os.fsencode(path).endswith(b"/locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    by_name = {os.path.basename(r.path_bytes): r.preset for r in enumerate_inputs([str(tmp_path)])}
    assert by_name[b"img.jpg"] is None
    assert by_name[b"link.jpg"][:2] == ("skipped", "fs.symlink_skipped")
    assert by_name[b"loop"][:2] == ("skipped", "fs.symlink_skipped")
    assert by_name[b"pipe.jpg"] == ("skipped", "fs.not_regular", "FIFO, not scanned")
    assert by_name[b"locked"][:2] == ("error", "fs.permission")
    followed = {os.path.basename(r.path_bytes): r.preset
                for r in enumerate_inputs([str(tmp_path)], follow_symlinks=True)}
    assert followed[b"link.jpg"] is None
    assert followed[b"loop"][:2] == ("skipped", "fs.symlink_loop")
    assert followed[b"dangling.jpg"][:2] == ("error", "fs.vanished")


def test_missing_argument_vs_missing_list_entry(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        enumerate_inputs([str(tmp_path / "nope.jpg")])
    (tmp_path / "ok.jpg").write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"ok.jpg\r\n\n" + os.fsencode(tmp_path / "gone.jpg") + b"\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        refs = enumerate_inputs([], from_list=str(listing))
    finally:
        os.chdir(cwd)
    assert [(os.path.basename(r.path_bytes), r.preset and r.preset[1]) for r in refs] == [
        (b"gone.jpg", "fs.vanished"), (b"ok.jpg", None)]


def test_scan_gives_every_odd_entry_a_row(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    gen.save_image(src / "real.jpg", 300, 300, 1)
    os.symlink(src / "real.jpg", src / "alias.jpg")
    os.mkfifo(src / "fifo.jpg")
    with open(os.fsencode(src) + b"/caf\xe9.jpg", "wb") as fh:
        fh.write(gen.encode(gen.photo_like(240, 240, 2), "JPEG"))
    listing = tmp_path / "list.txt"
    listing.write_text(str(tmp_path / "vanished.jpg") + "\n")
    out = tmp_path / "out"
    run_cli("scan", src, "--from-list", "-", "-o", out, "--model", tiny_model_dir, "--workers", "1", "--quiet",
            input=listing.read_text(), timeout=120)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_rows(out)}
    assert {k: (v["status"], v["error_code"]) for k, v in rows.items()} == {
        "real.jpg": ("ok", None),
        "caf\\xe9.jpg": ("ok", None),
        "alias.jpg": ("skipped", "fs.symlink_skipped"),
        "fifo.jpg": ("skipped", "fs.not_regular"),
        "vanished.jpg": ("error", "fs.vanished"),
    }
    assert rows["caf\\xe9.jpg"]["path_bytes"].endswith(b"caf\xe9.jpg")
    run_cli("verify", out)
