"""E3 (rest): a full disk stops the run without publishing a partial part; SIGTERM stops it promptly with no
orphan workers and a resumable output; the circuit breaker stops a run whose environment is broken."""

import json
import signal
import subprocess
import sys
import uuid

import genimages as gen
from helpers import read_rows, run_cli
from test_workers import processes_with


def test_disk_full_is_a_run_level_error(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    for i in range(12):
        gen.save_image(src / f"{i}.jpg", 260, 240, i)
    out = tmp_path / "out"
    args = ["scan", src, "-o", out, "--model", tiny_model_dir, "--shard-size", "4", "--workers", "0", "--quiet",
            "--commit-every", "3600"]  # whole shards only, whatever the machine's speed
    res = run_cli(*args, env={"GCAGE_FAULT_AT": "enospc:1"}, check=False)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (f"Error: cannot write shard 1 to {out}: No space left on device "
                                                   "(GCAGE_FAULT_AT)")
    assert sorted(p.name for p in (out / "results").iterdir()) == ["shard-00000.parquet"]  # nothing partial
    assert sorted(p.name for p in (out / "commits").iterdir()) == ["shard-00000.json"]
    run_cli(*args, "--resume")
    assert len(read_rows(out)) == 12
    run_cli("verify", out)


def test_sigterm_stops_promptly_and_resumes(tmp_path, tiny_model_dir):
    """The scan waits for a signal after 15 images (GCAGE_FAULT_AT=pause:15, past the first commit at 10) and says
    so on stderr, so the SIGTERM always meets a running scan at a known point, however loaded the machine; it
    stops at once (communicate's timeout only catches a hang), leaves no worker behind and resumes to the full
    set."""
    src = tmp_path / "src"
    for i in range(40):
        gen.save_image(src / f"{i:02d}.jpg", 300, 260, i)
    out = tmp_path / "out"
    tag = f"gcage-test-{uuid.uuid4().hex}"
    args = [sys.executable, "-m", "gcage_fast", "scan", str(src), "-o", str(out), "--model", str(tiny_model_dir),
            "--shard-size", "10", "--workers", "2", "--quiet", "--commit-every", "3600"]
    import os

    proc = subprocess.Popen(args, env=dict(os.environ, GCAGE_TEST_TAG=tag, GCAGE_FAULT_AT="pause:15"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # blocks until the scan says it is paused (or exits)
        seen.append(line)
        if line.startswith("GCAGE_FAULT_AT: paused after 15 images"):
            break
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == ("Error: interrupted by SIGTERM: 10 of 40 inputs are committed, 5 scored "
                                            "since the last commit will be redone; run the same command with "
                                            "--resume to continue")
    assert processes_with(tag) == []
    run = json.loads((out / "run.json").read_text())
    assert run["state"] == "interrupted" and run["last_attempt"]["lost"] == 5
    assert sorted(p.name for p in (out / "commits").iterdir()) == ["shard-00000.json"]
    resumed = json.loads(run_cli(*[a for a in args[3:] if a != "--quiet"], "--resume", "--json").stdout)
    assert (resumed["committed_before"], resumed["redone"], resumed["processed"]) == (10, 5, 30)
    assert len(read_rows(out)) == 40
    run_cli("verify", out)


def test_circuit_breaker(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"{i}.jpg").write_bytes(b"GCAGE-TEST-ABORT" + bytes([i]) * 32)
    out = tmp_path / "out"
    res = run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--quiet",
                  "--max-consecutive-failures", "3", env={"GCAGE_TEST_HOOKS": "1"}, check=False, timeout=180)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1].startswith(
        "Error: 3 consecutive files failed with worker.crash (the decode worker died twice on this file (SIGABRT))")
