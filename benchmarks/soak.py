"""Soak test (RELIABILITY.md §3.2): a large generated corpus with hostile files and archives, a SIGKILL part-way,
a resume, and pass criteria on rows, memory, file descriptors, throughput and output hygiene.

    .venv/bin/python benchmarks/soak.py --files 100000 --report benchmarks/results/soak-2core.md

The corpus (hard links to a few hundred rendered files, so it is quick to make) goes under --work (default
$TMPDIR/gcage-soak). The scan runs as a user would run it (the CLI, in a subprocess) with a small untrained model:
the soak tests the scanner, not the detector. Exit status 0 when every criterion passes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import genarchives as arc  # noqa: E402
import genbad as bad  # noqa: E402
import genimages as gen  # noqa: E402
from benchmarks.common import children as _children  # noqa: E402
from benchmarks.common import rss as _rss  # noqa: E402

SHARD = 2000


# ------------------------------------------------------------------------------------------------ corpus
def build_corpus(root: Path, n_files: int, seed: int = 0) -> tuple[Counter, int]:
    """Returns (expected counts of (status, error_code) for the loose files, number of archive members)."""
    rng = np.random.default_rng(seed)
    base = root / "_base"
    base.mkdir(parents=True)
    combos = []
    for fmt, modes in (("JPEG", ("RGB", "L", "CMYK")), ("PNG", ("RGB", "L", "RGBA", "P")), ("WEBP", ("RGB",))):
        for mode in modes:
            for side in (64, 128, 256, 384, 512):
                p = gen.save_image(base / f"{fmt}-{mode}-{side}.img", side, side * 3 // 4 + 16, side, fmt, mode)
                combos.append(p)
    combos.append(gen.gray16_png(base / "g16.img", 320, 240, 1))
    mids = [gen.save_image(base / f"mid{i}.img", w, h, 1000 + i) for i, (w, h) in
            enumerate([(1200, 900), (1600, 1200), (2000, 1500), (2400, 1600), (1000, 1000)])]
    n_adv = n_files // 100
    n_mid = n_files // 50
    n_small = n_files - n_adv - n_mid
    expected: Counter = Counter()

    def place(i: int) -> Path:
        d = root / f"d{i % 100:02d}"
        d.mkdir(exist_ok=True)
        return d

    for i in range(n_small):
        os.link(combos[int(rng.integers(len(combos)))], place(i) / f"s{i:06d}.img")
    expected[("ok", None)] += n_small
    for i in range(n_mid):
        os.link(mids[i % len(mids)], place(i) / f"m{i:06d}.jpg")
    expected[("ok", None)] += n_mid
    adversarial = [
        (lambda p: bad.pixel_bomb(p, 20000), ("error", "limit.pixels")),
        (bad.text_chunk_bomb, ("error", "limit.text_chunk")),
        (lambda p: gen.truncated(p, "JPEG", 1), ("error", "decode.truncated")),
        (lambda p: gen.truncated(p, "PNG", 2), ("error", "decode.truncated")),
        (gen.zero_byte, ("error", "decode.empty")),
        (gen.not_an_image, ("error", "decode.unidentified")),
        (lambda p: bad.magic_file(p, b"%PDF-1.7\n"), ("skipped", "decode.format_not_allowed")),
        (lambda p: bad.sized_png(p, 1, 1), ("ok", None)),
        (bad.many_frame_gif, ("ok", None)),
        (lambda p: bad.png_flipped_idat(p, 3), ("error", "decode.corrupt")),
        (lambda p: bad.appended_zip(p, 4), ("ok", None)),
        (lambda p: bad.sized_png(p, 100000, 2), ("error", "limit.aspect")),
    ]
    rendered = []
    for k, (make, outcome) in enumerate(adversarial):
        rendered.append((make(base / f"adv{k}.img"), outcome))
    for i in range(n_adv):
        d = place(i)
        kind = i % 20
        if kind == 0:
            os.mkfifo(d / f"fifo{i:05d}.jpg")
            expected[("skipped", "fs.not_regular")] += 1
        elif kind == 1:
            os.symlink("..", d / f"loop{i:05d}")
            expected[("skipped", "fs.symlink_skipped")] += 1
        elif kind == 2:
            name = os.fsencode(d) + b"/caf\xe9\x1b[2J%05d.jpg" % i
            os.link(combos[0], name)
            expected[("ok", None)] += 1
        else:
            src, outcome = rendered[i % len(rendered)]
            os.link(src, d / f"a{i:05d}.img")
            expected[outcome] += 1
    members = 0
    arch = root / "archives"
    arch.mkdir()
    small = [p.read_bytes() for p in combos[:10]]
    import tarfile

    for a in range(18):
        entries = [(f"m{j:04d}.img", small[j % len(small)]) for j in range(1000)]
        if a % 3 == 0:
            arc.zip_with(arch / f"a{a:02d}.zip", entries)
        else:
            arc.tar_with(arch / (f"a{a:02d}.tar" + (".gz" if a % 3 == 1 else "")),
                         [(n, d, tarfile.REGTYPE, "") for n, d in entries], "w:gz" if a % 3 == 1 else "w")
        members += 1000
    arc.ratio_bomb_zip(arch / "bomb.zip")
    bomb_tgz = arch / "bomb.tar.gz"
    with tarfile.open(bomb_tgz, "w:gz") as tf:
        import io

        zeros = b"\x00" * (200 * 2**20)
        info = tarfile.TarInfo("zeros.img")
        info.size = len(zeros)
        tf.addfile(info, io.BytesIO(zeros))
    expected[("error", "archive.bomb_ratio")] += 2
    expected[("ok", None)] += members
    shutil.rmtree(base)  # hard links keep the content
    return expected, members


# ------------------------------------------------------------------------------------------------ monitoring
def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def run_monitored(cmd: list[str], env: dict[str, str], out: Path, interval: float = 2.0) -> tuple[int, list[dict]]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = []
    while proc.poll() is None:
        kids = _children(proc.pid)
        samples.append({"t": time.time(), "parent_rss": _rss(proc.pid),
                        "tree_rss": _rss(proc.pid) + sum(_rss(k) for k in kids), "fds": _fds(proc.pid),
                        "committed": len(list((out / "commits").glob("*.json"))) if (out / "commits").is_dir() else 0})
        time.sleep(interval)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, -signal.SIGKILL):
        print(err, file=sys.stderr)
    return proc.returncode, samples


# ------------------------------------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gcage-soak")
    ap.add_argument("--report", type=Path, default=ROOT / "benchmarks" / "results" / "soak.md")
    ap.add_argument("--kill-at", type=float, default=0.4, help="fraction of inputs after which to SIGKILL")
    ap.add_argument("--rss-ceiling-mib", type=int, default=3072, help="peak RSS allowed for the process tree")
    args = ap.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    corpus, out, model = args.work / "corpus", args.work / "out", args.work / "model"
    t0 = time.time()
    expected, members = build_corpus(corpus, args.files)
    t_gen = time.time() - t0
    gcage = [sys.executable, "-m", "gcage_fast"]
    subprocess.run(gcage + ["init-model", "-o", str(model), "--width", "8"], check=True, capture_output=True)
    env = dict(os.environ, GCAGE_CACHE_DIR=str(args.work / "cache"))
    total = sum(expected.values())
    cmd = gcage + ["scan", str(corpus), "-o", str(out), "--model", str(model), "--workers", "2", "--shard-size",
                   str(SHARD), "--quiet", "--timeout", "30"]
    before = {p for p in args.work.rglob("*")}
    t1 = time.time()
    rc1, s1 = run_monitored(cmd, dict(env, GCAGE_FAULT_AT=f"image:{int(total * args.kill_at)}"), out)
    t_kill = time.time() - t1
    t2 = time.time()
    rc2, s2 = run_monitored(cmd + ["--resume"], env, out)
    t_resume = time.time() - t2
    verify = subprocess.run(gcage + ["verify", str(out), "--json"], capture_output=True, text=True)
    report = json.loads(verify.stdout)

    import pyarrow.dataset as ds

    table = ds.dataset(out / "results", format="parquet").to_table(columns=["status", "error_code", "input_id"])
    got = Counter(zip(table["status"].to_pylist(), table["error_code"].to_pylist()))
    unique_ids = len(set(table["input_id"].to_pylist()))
    after = {p for p in args.work.rglob("*")}
    outside = sorted(str(p) for p in after - before if out not in p.parents and p != out
                     and (args.work / "cache") not in p.parents and p != args.work / "cache")
    tmp_left = sorted(str(p) for p in out.rglob("*.tmp-*"))

    samples = s1 + s2
    peak_tree = max(s["tree_rss"] for s in samples)
    peak_parent = max(s["parent_rss"] for s in samples)
    half = s2[len(s2) // 2:]
    slope = 0.0
    if len(half) > 3:
        x = np.array([s["committed"] * SHARD for s in half], dtype=float)
        y = np.array([s["parent_rss"] for s in half], dtype=float)
        if np.ptp(x) > 0:
            slope = float(np.polyfit(x, y, 1)[0]) * 10_000 / 2**20  # MiB per 10k files
    steady = [s for s in s2 if s["committed"] > min(x["committed"] for x in s2)] or s2  # after startup
    fds = [s["fds"] for s in steady]
    marks = sorted((p.stat().st_mtime, json.loads(p.read_text())["rows"]) for p in (out / "commits").glob("*.json"))
    resume_marks = [m for m in marks if m[0] >= t2]
    rates = []
    for k in range(5, len(resume_marks), 5):  # windows of 5 shards = 10k files
        (ta, _), (tb, _) = resume_marks[k - 5], resume_marks[k]
        rows = sum(r for _, r in resume_marks[k - 4:k + 1])
        rates.append(rows / max(tb - ta, 1e-9))
    med = statistics.median(rates) if rates else 0.0
    spread = max((abs(r - med) / med for r in rates), default=0.0) if med else 0.0

    checks = {
        "killed at the fault point (SIGKILL)": rc1 == -signal.SIGKILL,
        "resume completed": rc2 == 0,
        f"rows = inputs ({total})": table.num_rows == total == unique_ids,
        "verify OK": report["ok"],
        "every expected (status, error_code) count matches": got == expected,
        f"peak RSS of the process tree <= {args.rss_ceiling_mib} MiB": peak_tree <= args.rss_ceiling_mib * 2**20,
        "parent RSS growth over the second half < 1 MiB per 10k files": slope < 1.0,
        # Descriptors come and go (worker pipes on recycling, the open archive, the part being written); a leak
        # shows as growth: the last third of the run may not reach above the first third's maximum + 2.
        "parent file descriptors do not grow (last third max <= first third max + 2)":
            (max(fds[-(len(fds) // 3 or 1):]) <= max(fds[:len(fds) // 3 or 1]) + 2) if fds else True,
        "throughput per 10k-file window within ±25% of the median": spread <= 0.25,
        "no temporary files left": not tmp_left,
        "nothing written outside the output directory": not outside,
    }
    lines = [
        "# Soak report",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; date {time.strftime('%Y-%m-%d')}. Command: "
        f"`python benchmarks/soak.py --files {args.files}`.",
        "",
        f"- Corpus: {args.files} files ({args.files // 100} adversarial: bombs, truncated, empty, HTML-as-JPEG, PDF, "
        "corrupt, 1×1, 2000-frame GIF, appended zip, 100000×2 stripe, FIFOs, link loops, non-UTF-8/escape-sequence "
        f"names) + 20 archives ({members} members in 18 tar/tar.gz/zip, 2 ratio bombs); generated in {t_gen:.0f} s.",
        f"- Scan: 2 decode workers, shard size {SHARD}, untrained width-8 model on ONNX Runtime CPU; SIGKILL after "
        f"{int(total * args.kill_at)} inputs ({t_kill:.0f} s), then `--resume` ({t_resume:.0f} s).",
        f"- Rows: {table.num_rows} for {total} planned inputs; {unique_ids} distinct input_ids; verify: "
        f"{'OK' if report['ok'] else 'FAILED ' + '; '.join(report['problems'][:3])}.",
        f"- Peak RSS: process tree {peak_tree / 2**20:.0f} MiB, scanner process {peak_parent / 2**20:.0f} MiB; "
        f"scanner RSS slope over the second half of the resumed run {slope:+.2f} MiB per 10k files.",
        f"- Open file descriptors of the scanner during the resumed run, after its first commit: "
        f"{min(fds) if fds else 0}-{max(fds) if fds else 0} (first third of the samples: max "
        f"{max(fds[:len(fds) // 3 or 1]) if fds else 0}; last third: max {max(fds[-(len(fds) // 3 or 1):]) if fds else 0}).",
        f"- Throughput of the resumed run per 10k-file window (files/s): "
        f"{', '.join(f'{r:.0f}' for r in rates) or 'n/a'}; median {med:.0f}, largest deviation {spread:.0%}.",
        "",
        "| criterion | result |",
        "|---|---|",
        *[f"| {k} | {'pass' if v else 'FAIL'} |" for k, v in checks.items()],
        "",
        "Rows by (status, error_code):",
        "",
        "| status | error_code | expected | got |",
        "|---|---|---|---|",
        *[f"| {s} | {c or ''} | {expected.get((s, c), 0)} | {got.get((s, c), 0)} |"
          for s, c in sorted(set(expected) | set(got), key=lambda k: (k[0], k[1] or ""))],
    ]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
