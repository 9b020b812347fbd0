"""Time and size of `gcage-fast report` on synthetic scan outputs of growing size (schema-exact rows, committed
shards, 1024×768 heatmap overlays for the 50 most suspicious rows).

    .venv/bin/python benchmarks/report_bench.py --rows 10000,100000,1000000 --out benchmarks/results/report-2core.md
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from genoutput import synthetic_output  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--top", type=int, default=50)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gcage-report-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "report.md")
    args = ap.parse_args()
    lines = [
        "# `gcage-fast report`: time and size",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}. Command: `python benchmarks/report_bench.py {' '.join(sys.argv[1:])}`.",
        "Synthetic outputs (tests/genoutput.py): shards of 2,000 rows, 97% ok with 3 patches each, 2% errors, "
        f"1% skipped; heatmap PNGs (1024×768) for the {args.top} most suspicious rows. Time: the `gcage-fast "
        f"report` command end to end (a fresh process each time), median of {args.repeat} runs (min-max).",
        "",
        "| rows | parquet on disk | report time (s) | report size | thumbnails | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for n in [int(v) for v in args.rows.split(",")]:
        out = args.work / f"out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        synthetic_output(out, n, heatmaps_for_top=args.top)
        disk = sum(p.stat().st_size for p in (out / "results").glob("*.parquet"))
        times, rss = [], 0
        html = args.work / f"report-{n}.html"
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "gcage_fast", "report", str(out), "-o", str(html), "--top",
                            str(args.top)], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
            rss = max(rss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
        size = html.stat().st_size
        thumbs = html.read_text().count("data:image/jpeg;base64,")
        lines.append(f"| {n:,} | {disk / 2**20:.1f} MiB | {statistics.median(times):.1f} ({min(times):.1f}-"
                     f"{max(times):.1f}) | {size / 2**20:.2f} MiB | {thumbs} | {rss / 2**20:.0f} MiB |")
        print(lines[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
