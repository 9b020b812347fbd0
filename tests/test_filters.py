"""What directories and archives hold that is not an input: the default junk list, --include/--exclude globs,
earlier gcage-fast outputs and the scan's own output. None gets a row; each is counted by reason in the summary
and run.json, and a resume must keep the filters."""

import json
import os
import tarfile
from pathlib import Path

import pytest

import genarchives as arc
import genimages as gen
from gcage_fast.ingest.filters import PathFilter, is_junk
from gcage_fast.ingest.sources import discover_inputs
from helpers import read_rows, run_cli

SCAN = ("--workers", "0", "--top-k", "1")


@pytest.fixture(scope="module")
def tree(tmp_path_factory, tiny_model_dir):
    """A tree as users copy it: images (one with non-ASCII names), a text file, macOS and Windows junk, a zip and
    a tar holding __MACOSX/._x.png, and an earlier gcage-fast output (with PNG overlays) inside it."""
    root = tmp_path_factory.mktemp("filters")
    src = root / "src"
    gen.save_image(src / "a.jpg", 240, 240, 1)
    gen.save_image(src / "sub" / "b.png", 240, 240, 2, fmt="PNG")
    gen.save_image(src / "Фото" / "снимок.jpg", 240, 240, 3)
    (src / "notes.txt").write_text("not an image\n")
    for junk in (".DS_Store", "THUMBS.DB", "Desktop.ini", "._a.jpg", "__MACOSX/._b.png", "__MACOSX/sub/c.jpg"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    arc.zip_with(src / "bundle.zip", [("x.jpg", arc.jpeg(4)), ("__MACOSX/._x.png", b"\x00\x05\x16\x07"),
                                      (".DS_Store", b"junk")])
    arc.tar_with(src / "bundle.tar", [("y.jpg", arc.jpeg(5), tarfile.REGTYPE, ""),
                                      ("__MACOSX/._x.png", b"\x00\x05\x16\x07", tarfile.REGTYPE, "")])
    seed = root / "seed"
    gen.save_image(seed / "s.jpg", 240, 240, 6)
    run_cli("scan", seed, "-o", src / "old", "--model", tiny_model_dir, *SCAN, "--heatmaps", "png", "--quiet")
    assert list((src / "old" / "heatmaps").rglob("*.png"))
    return src


def _scan(src, out, model, *extra, check=True):
    res = run_cli("scan", src, "-o", out, "--model", model, *SCAN, "--json", *extra, check=check)
    return res, (json.loads(res.stdout) if res.returncode == 0 else None)


def _names(out, src):
    """Each row by its member name, else its path below ``src``."""
    return sorted(r["member"] or os.path.relpath(r["path"], src) for r in read_rows(out))


DEFAULT_ROWS = ["a.jpg", "notes.txt", "sub/b.png", "x.jpg", "y.jpg", "Фото/снимок.jpg"]
JUNK = 6 + 2 + 1  # in the tree, in the zip, in the tar


def test_junk_and_old_output_get_no_rows_and_are_counted(tree, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    res, summary = _scan(tree, out, tiny_model_dir)
    assert _names(out, tree) == sorted(DEFAULT_ROWS)
    rows = {os.path.basename(r["path"]): r for r in read_rows(out) if r["member"] is None}
    assert (rows["notes.txt"]["status"], rows["a.jpg"]["status"]) == ("error", "ok")
    assert summary["n_inputs"] == 6
    assert summary["filtered"] == {"junk": JUNK, "old_output": 1}
    info = json.loads((out / "run.json").read_text())
    assert info["filtered"] == {"junk": JUNK, "old_output": 1}
    notices = [ln for ln in res.stderr.splitlines() if "earlier gcage-fast output" in ln]
    assert notices == [f"gcage-fast: skipping {tree / 'old'}: an earlier gcage-fast output directory"]
    text = run_cli("scan", tree, "-o", tmp_path / "text", "--model", tiny_model_dir, *SCAN).stdout
    assert f"  not inputs (no rows): junk {JUNK}, old_output 1\n" in text
    run_cli("verify", out)


def test_include_exclude(tree, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    _, summary = _scan(tree, out, tiny_model_dir, "--include", "*.jpg", "--exclude", "Фото/**")
    # the archives are opened whatever --include says; it applies to their members
    assert _names(out, tree) == ["a.jpg", "x.jpg", "y.jpg"]
    assert summary["filtered"] == {"excluded": 1, "junk": JUNK, "not_included": 2, "old_output": 1}
    out2 = tmp_path / "out2"
    _, summary = _scan(tree, out2, tiny_model_dir, "--exclude", "*.txt", "--exclude", "sub", "--exclude",
                       "bundle.*", "--no-default-excludes")
    # "sub" names a directory at any depth: __MACOSX/sub/ goes too
    assert _names(out2, tree) == sorted(["a.jpg", "Фото/снимок.jpg", ".DS_Store", "THUMBS.DB", "Desktop.ini",
                                         "._a.jpg", "__MACOSX/._b.png"])
    assert summary["filtered"] == {"excluded": 5, "old_output": 1}


def test_explicit_files_are_always_inputs(tree, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    listing = f"{tree / 'notes.txt'}\n{tree / '._a.jpg'}\n"
    res = run_cli("scan", tree / ".DS_Store", tree / "bundle.zip", "--from-list", "-", "-o", out, "--model",
                  tiny_model_dir, *SCAN, "--json", "--exclude", "*.txt", input=listing)
    summary = json.loads(res.stdout)
    rows = sorted((os.path.basename(r["path"]), r["member"]) for r in read_rows(out))
    # the members of a named archive are still filtered
    assert rows == [(".DS_Store", None), ("._a.jpg", None), ("bundle.zip", "x.jpg"), ("notes.txt", None)]
    assert summary["filtered"] == {"junk": 2}


def test_resume_refuses_changed_filters(tree, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    _scan(tree, out, tiny_model_dir, "--exclude", "*.txt")
    res, _ = _scan(tree, out, tiny_model_dir, "--resume", check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "Error: cannot resume with different settings (filters: was {'default_excludes': True, 'exclude': "
        "['*.txt'], 'include': []}, now None); use the original options, or --overwrite to start again")
    res, _ = _scan(tree, out, tiny_model_dir, "--exclude", "*.txt", "--no-default-excludes", "--resume", check=False)
    assert res.returncode == 1 and "cannot resume with different settings (filters: was {" in res.stderr
    res, summary = _scan(tree, out, tiny_model_dir, "--exclude", "*.txt", "--resume")
    assert summary["resumed"] and summary["filtered"] == {"excluded": 1, "junk": JUNK, "old_output": 1}


def test_own_output_in_a_listed_directory_is_skipped(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    gen.save_image(src / "a.jpg", 240, 240, 1)
    out = src / "results"
    args = ("--from-list", "-", "-o", out, "--model", tiny_model_dir, *SCAN, "--json", "--heatmaps", "png")
    first = json.loads(run_cli("scan", *args, input=f"{src}\n").stdout)
    assert first["n_inputs"] == 1
    again = json.loads(run_cli("scan", *args, "--overwrite", input=f"{src}\n").stdout)
    assert again["n_inputs"] == 1 and again["filtered"] == {"own_output": 1}


# ---- the rules, without scanning


def test_glob_rules():
    f = PathFilter(exclude=("*.txt", "/old", "cache", "raw/**", "**/tmp/*.png", "[!a]?.jpg"))
    assert [f.reason(p) for p in ("a.txt", "x/y/a.txt", "old/a.jpg", "x/old/a.jpg", "x/cache/y/z.jpg",
                                  "raw", "raw/a/b.jpg", "tmp/a.png", "q/tmp/a.png", "q/tmp/a.jpg", "b1.jpg",
                                  "a1.jpg", "Фото/снимок.jpg")] == [
        "excluded", "excluded", "excluded", None, "excluded", "excluded", "excluded", "excluded", "excluded", None,
        "excluded", None, None]
    inc = PathFilter(include=("*.jpg", "batch/**"))
    assert [inc.reason(p) for p in ("a.jpg", "d/a.png", "batch/x.png", "[a].jpg")] == [
        None, "not_included", None, None]
    assert inc.reason("d/a.png", include=False) is None
    assert PathFilter(include=("*.jpg",), exclude=("a.jpg",)).reason("a.jpg") == "excluded"


@pytest.mark.parametrize("path, junk", [
    ("._x.png", True), ("a/._x.png", True), ("__MACOSX/x.jpg", True), ("a/__MACOSX/b/c.jpg", True),
    (".DS_Store", True), ("a/.DS_Store", True), ("thumbs.db", True), ("THUMBS.DB", True), ("Desktop.INI", True),
    (".ds_store", False), ("_x.png", False), ("macosx/x.jpg", False), ("x._png", False), ("thumbs.db.jpg", False),
])
def test_junk_list(path, junk):
    assert is_junk(path.split("/")) is junk
    assert PathFilter().reason(path) == ("junk" if junk else None)
    assert PathFilter(default_excludes=False).reason(path) is None


def test_discovery_keeps_undecodable_names_and_skips_old_outputs(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    Path(os.fsdecode(raw)).write_bytes(b"x")
    (tmp_path / "._caf.jpg").write_bytes(b"x")
    old = tmp_path / "prev"
    (old / "plan").mkdir(parents=True)
    (old / "run.json").write_text(json.dumps({"tool": "gcage_fast", "run_id": "0"}))
    (old / "a.png").write_bytes(b"x")
    other = tmp_path / "notours"  # a run.json of something else is an ordinary directory
    (other / "plan").mkdir(parents=True)
    (other / "run.json").write_text(json.dumps({"tool": "else"}))
    found = discover_inputs([str(tmp_path)], filters=PathFilter(exclude=("caf?.jpg",)))
    assert [r.path_bytes for r in found.refs] == [os.fsencode(other / "run.json")]
    assert found.filtered == {"excluded": 1, "junk": 1, "old_output": 1}
    unfiltered = discover_inputs([str(tmp_path)], filters=None)
    assert len(unfiltered.refs) == 5 and unfiltered.filtered == {}
