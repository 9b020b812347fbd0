"""Time-based commits (scan --commit-every): a shard is committed in pieces as it goes, so an interrupt loses at
most one commit interval; pieces end only where no batch is open, so resumed rows are bit-identical; the interrupt
message and the resume summary say exactly how many inputs are committed and how many are redone.

The clock never decides a test: --commit-every 0 commits at every batch boundary (deterministic), 3600 never
within a shard, and score_pieces is driven by a scripted ``due``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import genimages as gen
from gcage_fast.config import Limits, ScanConfig
from gcage_fast.output.outdir import OutputDir
from gcage_fast.output.verify import verify_output
from gcage_fast.scanning import local
from helpers import read_rows, run_cli

IGNORED = {"scanned_at", "run_id"}


def comparable(rows):
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in sorted(rows, key=lambda r: r["input_id"])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("commit-every") / "src"
    for i in range(18):  # three 224-patches in a row each: at top-k 3 and batches of 8 patches, a batch is 3 images
        gen.save_image(root / f"{i:02d}.jpg", 680 + 11 * i, 230 + 5 * (i % 4), i)
    gen.not_an_image(root / "07-bad.jpg")
    gen.zero_byte(root / "12-empty.jpg")
    return root


def _args(src, out, model, every):
    return ["scan", str(src), "-o", str(out), "--model", str(model), "--shard-size", "8", "--workers", "1",
            "--batch-size", "8", "--top-k", "3", "--commit-every", str(every)]


@pytest.fixture(scope="module")
def reference(corpus, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out"
    run_cli(*_args(corpus, out, tiny_model_dir, 3600), "--quiet")
    return read_rows(out)


def _interrupt(args, pause_after, sig=signal.SIGINT):
    """Run ``gcage-fast`` ARGS until it says it paused after ``pause_after`` images, then send ``sig``."""
    env = dict(os.environ, GCAGE_FAULT_AT=f"pause:{pause_after}")
    proc = subprocess.Popen([sys.executable, "-m", "gcage_fast", *args, "--quiet"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(f"GCAGE_FAULT_AT: paused after {pause_after} images"):
            break
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.strip().splitlines()[-1]


def test_sigint_with_commit_every_0_loses_nothing(corpus, tiny_model_dir, reference, tmp_path):
    """Plan order: shard 0 = 00-06 and 07-bad, shard 1 = 07-11, 12-empty, 12, 13, shard 2 = 14-17. A batch is three
    images, and wherever no batch is open the scored inputs are committed: shard 0 as [0, 3), [3, 6), [6, 8), and
    after 11 inputs 07-09 of shard 1 closed a batch, so all 11 are committed and nothing is lost."""
    out = tmp_path / "out"
    args = _args(corpus, out, tiny_model_dir, 0)
    code, last = _interrupt(args, 11)
    assert code == 130
    assert last == ("Error: interrupted by SIGINT: 11 of 20 inputs are committed; run the same command with "
                    "--resume to continue")
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "interrupted"
    attempt = run["last_attempt"]
    assert (attempt["processed"], attempt["committed"], attempt["lost"]) == (11, 11, 0)
    stems = sorted(p.name[:-5] for p in (out / "commits").glob("*.json"))
    assert stems == ["shard-00000-000000", "shard-00000-000003", "shard-00000-000006", "shard-00001-000000"]
    assert sorted(p.name for p in (out / "results").iterdir()) == [f"{s}.parquet" for s in stems]
    markers = [json.loads((out / "commits" / f"{s}.json").read_text()) for s in stems]
    assert [(m["offset"], m["rows"]) for m in markers] == [(0, 3), (3, 3), (6, 2), (0, 3)]
    assert all(m["piece"] and m["shard_rows"] == 8 for m in markers)
    assert all(set(m["stats"]) == {"status", "wall_s", "images_per_s"} for m in markers)
    assert [m["stats"]["status"] for m in markers] == [{"ok": 3}, {"ok": 3}, {"ok": 1, "error": 1}, {"ok": 3}]
    partial = verify_output(out)
    assert partial.problems[0] == "shard 1: 3 of its 8 inputs committed (scan incomplete; run it again with --resume)"

    summary = json.loads(run_cli(*args, "--resume", "--json").stdout)
    assert (summary["committed_before"], summary["redone"], summary["processed"]) == (11, 0, 9)
    assert verify_output(out).ok
    assert comparable(read_rows(out)) == comparable(reference)  # p_fake, patches, cams: bit-identical


def test_interrupt_and_resume_count_the_redone_inputs_exactly(corpus, tiny_model_dir, reference, tmp_path):
    """With no time-based cut, 11 inputs in the first shard 8 are committed and 3 are lost: the message, run.json
    and the resume summary (text and JSON) all say 3."""
    out = tmp_path / "out"
    args = _args(corpus, out, tiny_model_dir, 3600)
    code, last = _interrupt(args, 11, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert last == ("Error: interrupted by SIGTERM: 8 of 20 inputs are committed, 3 scored since the last commit "
                    "will be redone; run the same command with --resume to continue")
    text = run_cli(*args, "--resume").stdout
    assert ("  resumed:  8 inputs were committed before; redone (scored by the interrupted attempt, not "
            "committed): 3") in text.splitlines()
    run = json.loads((out / "run.json").read_text())
    assert run["resumed_from"] == {"committed": 8, "redone": 3} and run["state"] == "finished"
    assert comparable(read_rows(out)) == comparable(reference)


def test_a_killed_attempt_resumes_with_the_redone_count_unknown(corpus, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "out"
    args = _args(corpus, out, tiny_model_dir, 0)
    killed = run_cli(*args, "--quiet", env={"GCAGE_FAULT_AT": "image:10"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    # shard 0 in three pieces; 07 and 08 of shard 1 wait in an open batch
    assert sum(json.loads(p.read_text())["rows"] for p in (out / "commits").glob("*.json")) == 8
    summary = json.loads(run_cli(*args, "--resume", "--json").stdout)
    assert (summary["committed_before"], summary["redone"], summary["processed"]) == (8, None, 12)
    text_run = run_cli(*args, "--resume").stdout  # a finished run resumes to nothing to do
    assert "redone (scored by the interrupted attempt, not committed): 0" in text_run
    assert verify_output(out).ok
    assert comparable(read_rows(out)) == comparable(reference)


def _config(src, out, model, **kw) -> ScanConfig:
    kw = {"workers": 0, "shard_size": 8, "batch_size": 8, "top_k": 3, "limits": Limits(timeout_s=120.0), **kw}
    return ScanConfig(inputs=(str(src),), output=str(out), model=str(model), **kw)


@pytest.mark.parametrize("pattern", [(True,), (False, True), (False, False, True, True)])
def test_pieces_cut_by_any_clock_give_the_rows_of_whole_shards(pattern, corpus, tiny_model_dir, reference, tmp_path,
                                                                monkeypatch):
    """Whatever the commit clock says and when, the rows (and so every score) are those of whole shards, and every
    piece ends where no batch was open (after a multiple of three scored images, or an unscored input)."""
    calls = iter(pattern * 100)
    from gcage_fast.scanning import stages

    real = stages.score_pieces

    def scripted(ctx, scorer, spec, prepared, on_oom=None, due=None):
        return real(ctx, scorer, spec, prepared, on_oom=on_oom, due=lambda: next(calls))

    monkeypatch.setattr(local, "score_pieces", scripted)
    out = tmp_path / "out"
    summary = local.scan(_config(corpus, out, tiny_model_dir, commit_every=5.0))
    assert summary.n_inputs == 20
    assert verify_output(out).ok
    rows = read_rows(out)
    assert comparable(rows) == comparable(reference)
    markers = OutputDir(out).markers()
    pieces = [m for items in markers.values() for _, m in items]
    assert sum(1 for m in pieces if m.get("piece")) >= 3
    by_shard = {}
    for m in pieces:
        by_shard.setdefault(m["shard"], []).append((m.get("offset", 0), m["rows"]))
    for shard, spans in by_shard.items():
        ends = [o + n for o, n in sorted(spans)]
        assert [o for o, _ in sorted(spans)] == [0, *ends[:-1]] and ends[-1] == (4 if shard == 2 else 8)
        ordered = sorted(read_rows(out), key=lambda r: r["path"])
        shard_rows = [r for r in ordered if r["shard"] == shard]
        for end in ends[:-1]:  # no batch open at a cut: the scored images before it fill whole batches
            scored = sum(1 for r in shard_rows[:end] if r["status"] == "ok")
            assert scored % 3 == 0, (shard, spans)
