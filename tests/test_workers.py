"""E2: a native crash, a hang and a memory blow-up in a decode worker each cost exactly one error row; the scan
completes, and no worker process outlives it."""

import uuid
from pathlib import Path


import genimages as gen
from gcage_fast.ingest.workers import PoolLimits, SupervisedPool
from helpers import pool_double, pool_failure_code, read_rows, run_cli


def processes_with(tag: str) -> list[int]:
    """PIDs whose environment carries ``tag`` (ours and our children's)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if tag.encode() in (d / "environ").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def test_pool_keeps_order_and_survives_crashes_and_hangs():
    limits = PoolLimits(timeout_s=2.0, max_tasks=3)
    items = [(i, x, None) for i, x in enumerate([1, 2, -1, 3, -2, 4, 5, 6, 7])] + [(9, None, "ready")]
    with SupervisedPool(2, pool_double, pool_failure_code, limits) as pool:
        out = list(pool.imap(items, window=4))
        stats = dict(pool.stats)
    assert out == [(0, 2), (1, 4), (2, "worker.crash"), (3, 6), (4, "limit.timeout"), (5, 8), (6, 10), (7, 12),
                   (8, 14), (9, "ready")]
    assert stats["crashes"] == 2 and stats["retried"] == 1 and stats["timeouts"] == 1 and stats["recycled"] >= 1


def test_scan_isolates_crashes_hangs_and_memory_blowups(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    for i in range(6):
        gen.save_image(src / f"ok{i}.jpg", 300, 260, i)
    expected = {
        "abort.jpg": (b"GCAGE-TEST-ABORT", "worker.crash", "SIGABRT"),
        "segv.png": (b"GCAGE-TEST-SEGV", "worker.crash", "SIGSEGV"),
        "hang.jpg": (b"GCAGE-TEST-HANG", "limit.timeout", "no result within 6 s"),
        "alloc.webp": (b"GCAGE-TEST-ALLOC", "limit.rss", "memory limit"),
    }
    for name, (magic, _, _) in expected.items():
        (src / name).write_bytes(magic + b"\x00" * 64)
    tag = f"gcage-test-{uuid.uuid4().hex}"
    out = tmp_path / "out"
    run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "2", "--timeout", "6",
            "--worker-memory", "1024", "--quiet", env={"GCAGE_TEST_HOOKS": "1", "GCAGE_TEST_TAG": tag}, timeout=180)
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert len(rows) == 10
    for name, (_, code, detail) in expected.items():
        assert (rows[name]["status"], rows[name]["error_code"]) == ("error", code), rows[name]["error_detail"]
        assert detail in rows[name]["error_detail"]
    assert all(rows[f"ok{i}.jpg"]["status"] == "ok" for i in range(6))
    run_cli("verify", out)
    assert processes_with(tag) == []


def test_hooks_are_off_by_default(tmp_path, tiny_model_dir):
    src = tmp_path / "src"
    src.mkdir()
    (src / "abort.jpg").write_bytes(b"GCAGE-TEST-ABORT" + b"\x00" * 64)
    out = tmp_path / "out"
    run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--workers", "1", "--quiet",
            env={"GCAGE_TEST_HOOKS": "0"})
    (row,) = read_rows(out)
    assert row["error_code"] == "decode.unidentified"
