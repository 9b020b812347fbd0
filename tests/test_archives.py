"""E4: archives are read in memory, member by member; hostile names, links, devices, bombs, nesting, encryption
and truncation each give the specified rows, and nothing is ever written outside the output directory."""

import os
import tarfile
from pathlib import Path


import genarchives as arc
from helpers import read_rows, run_cli


def snapshot(root: Path, skip: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        out |= {os.path.join(dirpath, f) for f in filenames + dirnames}
    return out - {str(skip)}


def scan(src, out, model, *extra):
    run_cli("scan", src, "-o", out, "--model", model, "--workers", "1", "--quiet", *extra, timeout=300)
    return read_rows(out)


def by_member(rows):
    return {(Path(r["path"]).name, r["member_index"]): r for r in rows}


def test_archive_formats(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    src.mkdir()
    members = [("a.jpg", arc.jpeg(1), tarfile.REGTYPE, ""), ("sub/b.jpg", arc.jpeg(2), tarfile.REGTYPE, "")]
    arc.tar_with(src / "plain.tar", members)
    arc.tar_with(src / "gz.tgz", members, "w:gz")
    arc.tar_with(src / "bz.tar.bz2", members, "w:bz2")
    arc.tar_with(src / "xz.tar.xz", members, "w:xz")
    arc.zip_with(src / "z.zip", [(m[0], m[1]) for m in members])
    arc.tar_with(src / "renamed.jpg", members, "w:gz")  # content decides, not the name
    rows = scan(src, tmp_path / "out", tiny_model_dir)
    assert len(rows) == 12
    for r in rows:
        assert r["status"] == "ok" and r["member"] in ("a.jpg", "sub/b.jpg"), r
        assert r["format"] == "JPEG" and r["flags"] == []
    assert len({r["input_id"] for r in rows}) == 12
    run_cli("verify", tmp_path / "out")


def test_hostile_names_links_and_devices(tmp_path, tiny_model_dir):
    src = tmp_path / "deep" / "er" / "src"
    src.mkdir(parents=True)
    arc.hostile_tar(src / "evil.tar")
    before = snapshot(tmp_path, tmp_path / "out")
    rows = by_member(scan(src, tmp_path / "out", tiny_model_dir))
    after = snapshot(tmp_path, tmp_path / "out")
    assert before == after  # nothing was written anywhere but the output directory
    assert not Path("/abs/path.jpg").exists() and not (tmp_path / "deep" / "escape.jpg").exists()
    expect = {
        0: ("ok.jpg", "ok", None, []),
        1: ("../../escape.jpg", "ok", None, ["archive.unsafe_name"]),
        2: ("/abs/path.jpg", "ok", None, ["archive.unsafe_name"]),
        3: ("a/../../b.jpg", "ok", None, ["archive.unsafe_name"]),
        4: ("C:\\windows\\w.jpg", "ok", None, ["archive.unsafe_name"]),
        5: ("passwd.jpg", "skipped", "archive.link_member", []),
        6: ("hard.jpg", "skipped", "archive.link_member", []),
        7: ("fifo.jpg", "skipped", "archive.special_member", []),
        8: ("tty.jpg", "skipped", "archive.special_member", []),
        10: ("ok.jpg", "ok", None, []),
    }
    assert sorted(i for _, i in rows) == sorted(expect)
    for index, (member, status, code, flags) in expect.items():
        r = rows[("evil.tar", index)]
        assert (r["member"], r["status"], r["error_code"], r["flags"]) == (member, status, code, flags)
    assert rows[("evil.tar", 0)]["sha256"] != rows[("evil.tar", 10)]["sha256"]  # duplicate names both scanned


def test_bombs_nesting_encryption(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    src.mkdir()
    arc.ratio_bomb_zip(src / "ratio.zip")
    arc.zip_with(src / "count.zip", [(f"m{i:02d}.jpg", arc.jpeg(i)) for i in range(30)])
    arc.tar_with(src / "bytes.tar.gz", [(f"b{i}.bin", os.urandom(300_000), tarfile.REGTYPE, "") for i in range(5)],
                 "w:gz")
    arc.nested_zip(src / "nested.zip")
    arc.encrypted_zip(src / "locked.zip")
    rows = scan(src, tmp_path / "out", tiny_model_dir, "--archive-max-members", "10", "--archive-max-bytes",
                "1000000")
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(Path(r["path"]).name, []).append((r["member"], r["status"], r["error_code"]))
    assert groups["ratio.zip"] == [(None, "error", "archive.bomb_ratio")]
    assert len(groups["count.zip"]) == 11 and groups["count.zip"][-1] == (None, "error", "archive.bomb_count")
    assert all(s == "ok" for _, s, _ in groups["count.zip"][:10])
    assert [c for _, _, c in groups["bytes.tar.gz"]] == ["decode.unidentified"] * 3 + ["archive.bomb_total"]
    assert groups["nested.zip"] == [("inner.zip", "skipped", "archive.nested"), ("top.jpg", "ok", None)]
    assert groups["locked.zip"] == [("secret.jpg", "error", "archive.encrypted")]
    run_cli("verify", tmp_path / "out")


def test_truncated_and_corrupt_archives(tmp_path, tiny_model_dir):
    work = tmp_path / "work"
    work.mkdir()
    members = [(f"{i}.jpg", arc.jpeg(10 + i), tarfile.REGTYPE, "") for i in range(4)]
    full_tgz = arc.tar_with(work / "full.tgz", members, "w:gz")
    full_zip = arc.zip_with(work / "full.zip", [(m[0], m[1]) for m in members])
    src = tmp_path / "src"
    src.mkdir()
    arc.chopped(src / "cut.tgz", full_tgz, cut=full_tgz.stat().st_size // 2)
    arc.chopped(src / "cut.zip", full_zip, cut=100)
    rows = scan(src, tmp_path / "out", tiny_model_dir)
    tgz = [(r["member"], r["status"], r["error_code"]) for r in rows if r["path"].endswith("cut.tgz")]
    assert 1 <= len(tgz) <= 5 and tgz[-1] == (None, "error", "archive.truncated")
    complete = [m for m in tgz[:-1] if m[1] == "ok"]
    assert complete and tgz[:len(complete)] == complete, tgz  # what could be read was scanned
    assert all(code == "archive.truncated" for _, _, code in tgz[len(complete):-1]), tgz
    assert [(r["member"], r["error_code"]) for r in rows if r["path"].endswith("cut.zip")] == [
        (None, "archive.corrupt")]
