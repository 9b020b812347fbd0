"""Mistakes a new user makes get one `Error: ...` line on stderr (never a traceback) and the documented exit code:
1 for a problem of the run, 2 for a usage mistake; and the commands name their options alike."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import genimages as gen
from genoutput import synthetic_output
from helpers import permissions_enforced, run_cli

ROOT = Path(__file__).resolve().parents[1]


def error_line(proc) -> str:
    """The one ``Error: ...`` line of a failed command, checked to be the last line of stderr and the only one."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, proc.stdout
    assert sum(ln.startswith("Error:") for ln in lines) == 1, proc.stderr
    assert lines[-1].startswith("Error:"), proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """A small synthetic scan output (no scanning needed: the report reads its parts)."""
    return synthetic_output(tmp_path_factory.mktemp("scan") / "out", 30, shard_size=10)


@pytest.fixture
def read_only_dir(tmp_path):
    if not permissions_enforced():
        pytest.skip("running as root without setpriv: permissions are not enforced")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    yield d
    d.chmod(0o700)


# ------------------------------------------------------------------------------- 1. unwritable file outputs
UNWRITABLE = {  # -o value -> the message's tail after "Error: cannot ... the <what> <path>"
    "proc": ("/proc/x.html", "cannot write the {what} /proc/x.html: No such file or directory"),
    "proc-missing-dir": ("/proc/nope/x.html",
                         "cannot create the directory of the {what} /proc/nope/x.html: No such file or directory"),
}


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_report_to_an_unwritable_path_is_one_error_line(scanned, case):
    path, message = UNWRITABLE[case]
    proc = run_cli("report", scanned, "-o", path, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == "Error: " + message.format(what="report")


def test_report_into_a_read_only_directory(scanned, read_only_dir):
    target = read_only_dir / "r.html"
    proc = run_cli("report", scanned, "-o", target, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == f"Error: cannot write the report {target}: Permission denied"
    sub = read_only_dir / "sub" / "r.html"
    proc = run_cli("report", scanned, "-o", sub, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == f"Error: cannot create the directory of the report {sub}: Permission denied"
    assert list(read_only_dir.iterdir()) == []


def test_report_creates_a_missing_parent_directory(scanned, tmp_path):
    target = tmp_path / "new" / "dir" / "r.html"
    proc = run_cli("report", scanned, "-o", target, "--top", "2", "--no-sources")
    assert target.read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.html"]  # no probe file left behind
    assert proc.stderr == ""


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return gen.save_image(tmp_path_factory.mktemp("img") / "a.jpg", 300, 300, 1)


@pytest.mark.parametrize("case", sorted(UNWRITABLE))
def test_explain_to_an_unwritable_path_is_one_error_line(image, tiny_model_dir, case):
    path, message = UNWRITABLE[case]
    png = path.replace(".html", ".png")
    proc = run_cli("explain", image, "-o", png, "--model", tiny_model_dir, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == "Error: " + message.replace("x.html", "x.png").format(what="picture")
    proc = run_cli("explain", image, "-o", "/tmp/never-written.png", "--json", path.replace(".html", ".json"),
                   "--model", tiny_model_dir, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == "Error: " + message.replace("x.html", "x.json").format(what="JSON record")


def test_explain_into_a_read_only_directory(image, tiny_model_dir, read_only_dir):
    target = read_only_dir / "why.png"
    proc = run_cli("explain", image, "-o", target, "--model", tiny_model_dir, check=False)
    assert proc.returncode == 1
    assert error_line(proc) == f"Error: cannot write the picture {target}: Permission denied"
    assert list(read_only_dir.iterdir()) == []


def test_explain_creates_missing_parent_directories(image, tiny_model_dir, tmp_path):
    png, js = tmp_path / "a" / "why.png", tmp_path / "b" / "why.json"
    run_cli("explain", image, "-o", png, "--json", js, "--model", tiny_model_dir, "--backend", "torch")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "patches" in json.loads(js.read_text())
    assert sorted(p.name for p in png.parent.iterdir()) == ["why.png"]


# ------------------------------------------------------------------------------- 5. an unfinished scan
@pytest.mark.parametrize("state, held, why", [
    ("running", True, "A scan is writing it now (it holds the output's lock): this report shows what is committed "
     "so far."),
    ("running", False, "Its scan ended without finishing (killed, or the machine stopped): resume it with "
     "<code>gcage-fast scan ... --resume</code>."),
    ("planning", False, "Its scan ended without finishing (killed, or the machine stopped): resume it with "
     "<code>gcage-fast scan ... --resume</code>."),
    ("interrupted", False, "Its scan was interrupted: resume it with <code>gcage-fast scan ... --resume</code>."),
    ("stopped", False, "Its scan was stopped by an error: resume it with <code>gcage-fast scan ... --resume</code>."),
])
def test_report_of_an_unfinished_scan_says_whether_it_is_running(tmp_path, state, held, why):
    """run.json says running until a scan ends, and after a kill too: the report tells them apart by the lock."""
    from gcage_fast.output.outdir import OutputDir

    out = synthetic_output(tmp_path / "o", 30, shard_size=10)
    run = json.loads((out / "run.json").read_text())
    run["state"] = state
    (out / "run.json").write_text(json.dumps(run))
    (out / "commits" / "shard-00002.json").unlink()
    holder = OutputDir(out)
    if held:
        holder.open_for_scan("resume")  # what a running scan holds: the flock on OUT/.lock
    try:
        run_cli("report", out, "-o", tmp_path / "r.html")
    finally:
        holder.close()
    text = (tmp_path / "r.html").read_text()
    assert (f"<p class=warn>This scan is <b>incomplete</b> (run.json state {state}): 20 of 30 planned inputs have "
            f"committed rows. {why}</p>") in text


def test_report_of_a_finished_scan_with_missing_parts_points_at_verify(tmp_path):
    out = synthetic_output(tmp_path / "o", 30, shard_size=10)
    (out / "commits" / "shard-00001.json").unlink()
    run_cli("report", out, "-o", tmp_path / "r.html")
    text = (tmp_path / "r.html").read_text()
    assert ("(run.json state finished): 20 of 30 planned inputs have committed rows. Parts are missing from a "
            "finished scan; <code>gcage-fast verify</code> says which.</p>") in text
    assert "--resume" not in text


# ------------------------------------------------------------------------------- 6. captions wrap at words
def test_report_captions_wrap_on_word_boundaries(scanned, tmp_path):
    run_cli("report", scanned, "-o", tmp_path / "r.html", "--top", "3", "--no-sources")
    text = (tmp_path / "r.html").read_text()
    css = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    caption = re.search(r"figcaption\{([^}]*)\}", css).group(1).split(";")
    assert "overflow-wrap:anywhere" in caption  # long unbroken file names still break
    assert "word-break:break-all" not in css and "word-break" not in caption  # words are never split
    assert text.count("<figcaption>") == 3


# ------------------------------------------------------------------------------- 7. -o/--output everywhere
def test_report_output_option_and_its_old_name(scanned, tmp_path):
    for flag in ("-o", "--output", "--html"):
        target = tmp_path / f"{flag.strip('-')}.html"
        proc = run_cli("report", scanned, flag, target, "--top", "1", "--no-sources")
        assert proc.stdout.startswith(f"{target}: 30 rows, 1 thumbnails, ")
        assert target.read_text().startswith("<!doctype html>")
    helptext = run_cli("report", "--help").stdout
    assert "-o, --output FILE" in helptext and "--html" not in helptext
    proc = run_cli("report", scanned, check=False)
    assert proc.returncode == 2
    assert error_line(proc) == "Error: Missing option '-o' / '--output'."


@pytest.mark.parametrize("command", ["scan", "explain", "export", "init-model", "import-susy", "report",
                                     "train-base", "calibrate"])
def test_every_output_is_dash_o_output(command):
    assert re.search(r"^\s+-o, --output ", run_cli(command, "--help").stdout, re.M), command


# ------------------------------------------------------------------------------- 8. one ScoreCAM cost
def test_scorecam_cost_agrees_with_its_measurement():
    measured = json.loads((ROOT / "docs/images/explain-rocket-all-cams.json").read_text())
    seconds = round(measured["patches"][0]["seconds"]["scorecam"])
    readme = " ".join((ROOT / "README.md").read_text().split())
    helptext = " ".join(run_cli("explain", "--help").stdout.split())
    assert f"one patch takes about {seconds} s with `scorecam`" in readme
    assert f"about {seconds} s per patch for the bundled model on 2 CPU cores" in helptext


# ------------------------------------------------------------------------------- 2. --resume with --overwrite
def test_resume_and_overwrite_together_is_a_usage_error(image, tiny_model_dir, tmp_path):
    proc = run_cli("scan", image, "-o", tmp_path / "out", "--model", tiny_model_dir, "--resume", "--overwrite",
                   check=False)
    assert proc.returncode == 2
    assert error_line(proc) == ("Error: --resume and --overwrite exclude each other: --resume continues the scan "
                                "in OUTPUT, --overwrite deletes it and starts again; give one")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- 3. no inputs at all
def test_scan_without_inputs_is_a_usage_error(tiny_model_dir, tmp_path):
    proc = run_cli("scan", "-o", tmp_path / "out", "--model", tiny_model_dir, check=False)
    assert proc.returncode == 2
    assert error_line(proc) == ("Error: no inputs: name files, directories or archives to scan (INPUTS), or give "
                                "--from-list FILE ('-' for standard input)")
    assert proc.stderr.startswith("Usage: gcage-fast scan [OPTIONS] [INPUTS]...")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- 4, 9. what a scan found
@pytest.fixture(scope="module")
def mixed_src(tmp_path_factory):
    """One good image, one truncated (error row), one too small with --small-images skip (skipped row)."""
    src = tmp_path_factory.mktemp("mixed") / "in"
    gen.save_image(src / "good.jpg", 300, 300, 1)
    gen.truncated(src / "broken.png", "PNG", 2)
    gen.save_image(src / "tiny.jpg", 100, 100, 3)
    return src


@pytest.fixture(scope="module")
def mixed_scan(mixed_src, tiny_model_dir):
    src, root = mixed_src, mixed_src.parent
    proc = run_cli("scan", src, "-o", root / "out", "--model", tiny_model_dir, "--small-images", "skip",
                   "--workers", "1", "--backend", "torch")
    return proc, read_codes(root / "out")


def read_codes(out):
    from helpers import read_rows

    codes = {"error": {}, "skipped": {}}
    for r in read_rows(out, ["status", "error_code"]):
        if r["status"] != "ok":
            codes[r["status"]][r["error_code"]] = codes[r["status"]].get(r["error_code"], 0) + 1
    return codes


def test_summary_lists_error_and_skipped_codes_apart(mixed_scan):
    proc, codes = mixed_scan
    assert codes["skipped"] == {"limit.too_small": 1} and sum(codes["error"].values()) == 1, codes
    lines = proc.stdout.splitlines()
    errors = [ln for ln in lines if ln.startswith("  errors:")]
    skipped = [ln for ln in lines if ln.startswith("  skipped:")]
    assert errors == ["  errors:   " + ", ".join(f"{k} {v}" for k, v in sorted(codes["error"].items()))]
    assert skipped == ["  skipped:  " + ", ".join(f"{k} {v}" for k, v in sorted(codes["skipped"].items()))]
    assert not set(codes["skipped"]) & set(codes["error"])
    assert all(code not in errors[0] for code in codes["skipped"])


def test_json_summary_counts_skipped_codes_apart(mixed_src, mixed_scan, tiny_model_dir, tmp_path):
    _, codes = mixed_scan
    summary = json.loads(run_cli("scan", mixed_src, "-o", tmp_path / "again", "--model", tiny_model_dir, "--small-images",
                                 "skip", "--workers", "1", "--backend", "torch", "--json").stdout)
    assert summary["skipped_codes"] == codes["skipped"] == {"limit.too_small": 1}
    assert summary["status"] == {"ok": 1, "error": 1, "skipped": 1}


def test_summary_text_without_skipped_rows_has_no_skipped_line():
    from gcage_fast.cli.scan import _summary_text
    from gcage_fast.scanning.summary import ScanSummary

    s = ScanSummary(output="out", run_id="r", resumed=False, n_inputs=3, status={"ok": 1, "error": 2},
                    error_codes={"decode.truncated": 2}, verdicts={"real": 1}, processed=3, patches=3, wall_s=1.0,
                    scan_s=1.0, shards_total=1, shards_written=1, shards_skipped=0, model_id="m", backend="b",
                    cam_method="gradcam")
    text = _summary_text(s)
    assert "  errors:   decode.truncated 2\n" in text and "skipped:" not in text
    text = _summary_text(s, {"decode.truncated": 1})  # one code under both statuses: each line counts its own
    assert "  errors:   decode.truncated 1\n  skipped:  decode.truncated 1\n" in text


@pytest.mark.parametrize("kind", ["empty-directory", "empty-list"])
def test_nothing_to_scan_exits_0_with_a_warning(tiny_model_dir, tmp_path, kind):
    empty = tmp_path / "empty"
    if kind == "empty-directory":
        empty.mkdir()
        args, named = [empty], str(empty)
    else:
        empty.write_text("")
        args, named = ["--from-list", empty], str(empty)
    proc = run_cli("scan", *args, "-o", tmp_path / "out", "--model", tiny_model_dir, "--backend", "torch", "-q")
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"gcage-fast: no inputs found in {named}"]
    assert proc.stdout == ""


# ------------------------------------------------------------------------------- 10. docs name real models
def test_export_examples_name_models_that_exist():
    from gcage_fast.models.registry import list_models

    names = {e.name for e in list_models()}
    helptext = run_cli("export", "--help").stdout
    readme = (ROOT / "README.md").read_text()
    for text in (helptext, readme):
        for model in re.findall(r"gcage-fast export [^\n]*(?<!\[)--model (\S+)", text):
            assert model in names or model == "models/susy", model  # models/susy: the import-susy example's
    assert "--model susy " not in helptext + readme
