"""What the Ray runner costs on one machine: the same scan by the local runner and by ``--runner ray`` in Ray's local
mode (an instance started in this process), side by side in one run.

The benchmark image set (benchmarks/common.py image_set: the bundled photographs at 0.3-4 MP, JPEG/PNG/WebP),
hard-linked ``--replicate`` times, scanned into a fresh output per run with the bundled model (or ``--model``),
fp32, no heatmaps, each shard size of ``--shard-sizes``. Both runners get the same decode processes (one per
core less one locally; one per decode task under Ray, with a decode task per free CPU) and the same engine threads.
Each cell is the median over ``--repeats`` timed runs after one untimed warm-up, with the spread (min-max); the
two runners take turns, repeat by repeat, so a changing load on the machine hits both alike. The Ray instance is
started once before the runs (its start-up is reported on its own line) and shut down at the end. Also measured:
the bytes one Ray row carries per input, with and without heatmaps.

    .venv/bin/python benchmarks/ray_overhead.py --out benchmarks/results/ray-overhead-2core.md
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import image_set, machine, publish, rss  # noqa: E402
from benchmarks.suites import replicated  # noqa: E402


def _tree(pid: int, skip=None) -> list[int]:
    """``pid`` and all its descendants (Ray's raylet and its workers are grandchildren of this process), less the
    processes ``skip`` says to leave out and everything under them."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    todo, out = [pid], []
    while todo:
        p = todo.pop()
        if p != pid and skip is not None and skip(p):
            continue
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _is_ray(pid: int) -> bool:
    try:
        return b"/ray/" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class TreeRss:
    """Peak RSS of this process and all its descendants, sampled every half second; ``with_ray=False`` leaves out
    the Ray instance's processes (idle beside a local run) and everything under them."""

    def __init__(self, with_ray: bool = True) -> None:
        self.with_ray = with_ray
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(rss(p) for p in _tree(os.getpid(), skip=None if self.with_ray
                                                                  else _is_ray)))
            self._stop.wait(0.5)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one_scan(src: Path, runner: str, shard_size: int, model: str | None) -> tuple[float, float, int, int]:
    """(wall s of the whole scan call, s decoding and scoring, images, shards) of one scan into a fresh output."""
    from gcage_fast.config import ScanConfig
    from gcage_fast.scanning.local import scan

    with tempfile.TemporaryDirectory(prefix="gcage-bench-ray-") as tmp:
        t0 = time.perf_counter()
        s = scan(ScanConfig(inputs=(str(src),), output=str(Path(tmp) / "o"), model=model, shard_size=shard_size,
                            runner=runner))
        wall = time.perf_counter() - t0
    assert s.processed == s.n_inputs and s.state == "finished", s
    return wall, s.scan_s, s.processed, s.shards_total


def row_bytes(src: Path, model: str | None, heatmaps: str) -> float:
    """Mean bytes per input of what a Ray row carries from a decode task to an engine actor (the pickle of a shard's
    prepared inputs, as gcage_fast.scanning.ray_runner makes it), over the files of ``src`` as one shard."""
    import contextlib
    import pickle

    from gcage_fast.config import ScanConfig
    from gcage_fast.ingest.prepare import prepare, prepare_failure
    from gcage_fast.ingest.workers import SupervisedPool
    from gcage_fast.output.outdir import OutputDir
    from gcage_fast.scanning import session
    from gcage_fast.scanning.stages import pool_limits, prepare_shard

    with tempfile.TemporaryDirectory(prefix="gcage-bench-ray-") as tmp:
        config = ScanConfig(inputs=(str(src),), output=str(Path(tmp) / "o"), model=model, heatmaps=heatmaps,
                            shard_size=10**6, workers=0)
        setup = session.resolve(config)
        out = OutputDir(config.output)
        refs = session.inputs(config, out)
        pair = session.engines(setup)
        with pair.base, (pair.head or contextlib.nullcontext()), out:
            run = session.open_run(setup, out, refs, pair, workers=0)
            (spec,) = run.pending
            with SupervisedPool(0, prepare, prepare_failure, pool_limits(config)) as pool:
                items = list(prepare_shard(run.ctx, spec, pool))
    return len(pickle.dumps((spec, items), protocol=pickle.HIGHEST_PROTOCOL)) / len(items)


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicate", type=int, default=4, help="copies of the image set (default 4: 96 images)")
    ap.add_argument("--shard-sizes", default="24,96", help="comma list of --shard-size values (default 24,96)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", help="model name or directory (default: the bundled model)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray-overhead-2core.md")
    args = ap.parse_args()
    shard_sizes = [int(x) for x in args.shard_sizes.split(",") if x.strip()]
    facts = machine()
    load_before = os.getloadavg()[0]
    ray_tmp = tempfile.mkdtemp(prefix="rb-", dir="/tmp")  # short: Ray's socket paths live under it
    os.environ.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="disabled")  # no ~/.ray/auth_token
    import ray

    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="gcage-bench-set-") as tmp:
            src = replicated(image_set(False), Path(tmp) / "set", args.replicate)
            one_scan(src, "local", shard_sizes[0], args.model)  # the export cache, the page cache
            sizes = {heat: row_bytes(image_set(False), args.model, heat) for heat in ("none", "png")}
            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.2",
                     log_to_driver=False)
            ray_start = time.perf_counter() - t0
            for shard_size in shard_sizes:
                runs: dict[str, list] = {"local": [], "ray": []}
                peaks = dict.fromkeys(runs, 0)
                for runner in runs:
                    one_scan(src, runner, shard_size, args.model)  # warm-up
                for _ in range(args.repeats):  # interleaved, so a changing load on the machine hits both alike
                    for runner in runs:
                        with TreeRss(with_ray=runner == "ray") as peak:
                            runs[runner].append(one_scan(src, runner, shard_size, args.model))
                        peaks[runner] = max(peaks[runner], peak.peak)
                rows += [(shard_size, runner, runs[runner], peaks[runner]) for runner in runs]
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [
        "# Ray runner overhead on one machine: the local runner and `--runner ray` in Ray's local mode",
        "",
        f"CPU: {facts['machine']}, {facts['cores']} cores; torch {facts['torch']}, onnxruntime "
        f"{facts['onnxruntime']}, ray {ray.__version__}; {time.strftime('%Y-%m-%d')}. Command: "
        f"`python benchmarks/ray_overhead.py {' '.join(sys.argv[1:])}`.",
        "",
        f"{rows[0][2][0][2]} images (the benchmark set x {args.replicate}), bundled model unless `--model`, ort, fp32, "
        "no heatmaps. Medians over "
        f"{args.repeats} runs after one warm-up, with the spread (min-max). wall = the whole `scan()` call (model, "
        "engines, plan, job); scan = decoding and scoring (ScanSummary.scan_s; for Ray: the job, engine actors "
        "and decode tasks started in it). Peak RSS: this process and every process under it; for the Ray runs "
        "with the whole Ray instance, for the local runs without it.",
        "",
        f"Ray local instance started once before the runs: {ray_start:.1f} s (`ray.init`, 127.0.0.2, no dashboard). "
        f"The machine is shared: load average {load_before:.1f} before the runs, {os.getloadavg()[0]:.1f} after; the "
        "two runners run in turn, repeat by repeat.",
        "",
        "| shard size | shards | runner | wall s | scan s | images/s (over wall) | overhead (wall) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    local_wall: dict[int, float] = {}
    for shard_size, runner, runs, peak in rows:
        walls, scans = [r[0] for r in runs], [r[1] for r in runs]
        images, shards = runs[0][2], runs[0][3]
        med = statistics.median(walls)
        if runner == "local":
            local_wall[shard_size] = med
        overhead = ("—" if runner == "local"
                    else f"{med - local_wall[shard_size]:+.1f} s ({med / local_wall[shard_size] - 1:+.0%})")
        rates = [images / w for w in walls]
        lines.append(f"| {shard_size} | {shards} | {runner} | {_cell(walls)} | {_cell(scans)} | {_cell(rates)} | "
                     f"{overhead} | {peak / 2**20:.0f} |")
    lines += [
        "",
        "What one Ray row carries from a decode task to an engine actor (through Ray's object store), per input, "
        f"mean over the {len(list(image_set(False).iterdir()))} images of the set: "
        f"{sizes['none'] / 1e6:.2f} MB with `--heatmaps none` (the selected patches), {sizes['png'] / 1e6:.2f} MB "
        "with `--heatmaps png` (the patches and the preview overlays are drawn on). A shard of N inputs is one row "
        "of N times that.",
    ]
    table = "\n".join(lines) + "\n"
    publish(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
