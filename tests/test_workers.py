"""E2: a native crash, a hang and a memory blow-up in a decode worker each cost exactly one error row; the scan
completes, and no worker process outlives it.

None of this may depend on how fast the machine is. The faults are driven so that their order cannot race: the
crashes are immediate, the memory hook asks for more than the worker's limit in one allocation (so it fails at
once instead of filling memory while the clock runs), and the per-file timeout is generous enough that only the
hang (which sleeps an hour) can reach it. The tests run beside their own CPU hog to prove it.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import genimages as gen
from gcage_fast.ingest.workers import PoolLimits, SupervisedPool
from helpers import pool_double, pool_failure_code, read_rows, run_cli

#: Per-file timeout of these tests: far beyond what decoding a small image takes on any loaded machine (a few
#: ms unloaded), far below the hang hooks (an hour in the scan, a minute in helpers.pool_double).
GENEROUS_TIMEOUT_S = 20


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()  # empty for a zombie: it has exited
    except OSError:
        return b""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def processes_with(tag: str, settle_s: float = 30.0) -> list[int]:
    """PIDs of live processes whose environment carries ``tag`` (ours and our children's), once those that are
    already on their way out have gone.

    A decode worker is stopped and joined by the scan itself, so it must be gone the moment the scan has exited.
    multiprocessing's resource tracker is not a worker: it exits by itself when the scan closes its end of the
    tracker's pipe, some time after the scan; it gets up to ``settle_s`` to do so (a hang that outlived the scan
    sleeps an hour, so a leak still shows).
    """
    def tagged() -> list[int]:
        return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit() and tag.encode() in
                _environ(int(d.name))]

    pids = tagged()
    if any("resource_tracker" not in _cmdline(p) for p in pids):
        return pids
    deadline = time.monotonic() + settle_s
    for pid in pids:  # wait for each tracker's exit on its pidfd: the kernel says when, no polling
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
    return tagged()


@contextlib.contextmanager
def cpu_hog():
    """One busy-loop process per core while the block runs: the machine is loaded on purpose."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(min(os.cpu_count() or 2, 8))]
    try:
        yield
        assert all(h.poll() is None for h in hogs), "a CPU hog stopped before the block ended"
    finally:
        for h in hogs:
            h.kill()
        for h in hogs:
            h.wait()


@pytest.fixture(scope="module")
def warm_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with its ONNX export cached, so the loaded scan below spends its time on the files."""
    warm = tmp_path_factory.mktemp("warm")
    gen.save_image(warm / "src" / "one.jpg", 260, 240, 0)
    run_cli("scan", warm / "src", "-o", warm / "out", "--model", tiny_model_dir, "--workers", "0", "--quiet")
    return tiny_model_dir


def test_pool_keeps_order_and_survives_crashes_and_hangs():
    limits = PoolLimits(timeout_s=GENEROUS_TIMEOUT_S, max_tasks=3)
    items = [(i, x, None) for i, x in enumerate([1, 2, -1, 3, -2, 4, 5, 6, 7])] + [(9, None, "ready")]
    with cpu_hog(), SupervisedPool(2, pool_double, pool_failure_code, limits) as pool:
        out = list(pool.imap(items, window=4))
        stats = dict(pool.stats)
    assert out == [(0, 2), (1, 4), (2, "worker.crash"), (3, 6), (4, "limit.timeout"), (5, 8), (6, 10), (7, 12),
                   (8, 14), (9, "ready")]
    assert stats["crashes"] == 2 and stats["retried"] == 1 and stats["timeouts"] == 1 and stats["recycled"] >= 1


def test_scan_isolates_crashes_hangs_and_memory_blowups(tmp_path, warm_model):
    src = tmp_path / "src"
    for i in range(6):
        gen.save_image(src / f"ok{i}.jpg", 300, 260, i)
    expected = {
        "abort.jpg": (b"GCAGE-TEST-ABORT", "worker.crash", "SIGABRT"),
        "segv.png": (b"GCAGE-TEST-SEGV", "worker.crash", "SIGSEGV"),
        "hang.jpg": (b"GCAGE-TEST-HANG", "limit.timeout", f"no result within {GENEROUS_TIMEOUT_S} s"),
        "alloc.webp": (b"GCAGE-TEST-ALLOC", "limit.rss", "memory limit"),
    }
    for name, (magic, _, _) in expected.items():
        (src / name).write_bytes(magic + b"\x00" * 64)
    tag = f"gcage-test-{uuid.uuid4().hex}"
    out = tmp_path / "out"
    with cpu_hog():
        run_cli("scan", src, "-o", out, "--model", warm_model, "--workers", "2", "--timeout", GENEROUS_TIMEOUT_S,
                "--worker-memory", "1024", "--quiet", env={"GCAGE_TEST_HOOKS": "1", "GCAGE_TEST_TAG": tag})
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert len(rows) == 10
    for name, (_, code, detail) in expected.items():
        assert (rows[name]["status"], rows[name]["error_code"]) == ("error", code), rows[name]["error_detail"]
        assert detail in rows[name]["error_detail"]
    assert all(rows[f"ok{i}.jpg"]["status"] == "ok" for i in range(6))
    run_cli("verify", out)
    assert processes_with(tag) == []


def test_memory_hook_fails_at_once_inside_its_limit():
    """The memory blow-up is one allocation over the worker's address-space limit: a MemoryError on the first
    try, with nothing filled first (what made the scan test race its timeout)."""
    code = ("import resource, time\n"
            "from gcage_fast.ingest.prepare import _test_hook\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "try:\n"
            "    _test_hook(b'GCAGE-TEST-ALLOC')\n"
            "except MemoryError:\n"
            "    rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
            "    print('MemoryError', rss < (1 << 29))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.split() == ["MemoryError", "True"], proc.stderr


def test_hooks_are_off_by_default(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "abort.jpg").write_bytes(b"GCAGE-TEST-ABORT" + b"\x00" * 64)
    out = tmp_path / "out"
    run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--quiet",
            env={"GCAGE_TEST_HOOKS": "0"})
    (row,) = read_rows(out)
    assert row["error_code"] == "decode.unidentified"
