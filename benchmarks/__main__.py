"""Benchmarks of gcage_fast: ``python -m benchmarks [--suites engine,pipeline,stages,scaling] [--quick]``.

Every run appends its rows to ``RESULTS/runs.csv`` and writes one markdown table per suite to
``RESULTS/<tag>-<suite>.md`` (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from benchmarks.common import ROOT, append_csv, machine, markdown

SUITES = ("engine", "pipeline", "stages", "scaling")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default="engine,pipeline,stages",
                    help=f"comma list of {', '.join(SUITES)} (default: engine,pipeline,stages)")
    ap.add_argument("--quick", action="store_true", help="small image set, 1 repeat, batch 8 (a smoke run)")
    ap.add_argument("--model", help="model name or directory (default: the bundled model)")
    ap.add_argument("--backends", default="ort,torch", help="comma list of ort, torch")
    ap.add_argument("--batch-sizes", default="8,32", help="engine suite batch sizes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="engine threads (default: one per core)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline in the pipeline suite")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="cpu", help="prefix of the markdown files (e.g. the machine)")
    args = ap.parse_args(argv)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        ap.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    batches = [8] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    repeats = 1 if args.quick else args.repeats
    facts = machine()
    command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    from benchmarks import suites as s

    for suite in suites:
        t0 = time.perf_counter()
        print(f"[{suite}] running ...", file=sys.stderr, flush=True)
        if suite == "stages":
            stage_rows = s.stages_suite(args.model, backends[0], args.quick, args.threads)
            text = _stages_markdown(stage_rows, facts, command)
        else:
            if suite == "engine":
                rows = s.engine_suite(args.model, backends, batches, repeats, args.quick, args.threads)
            elif suite == "pipeline":
                rows = s.pipeline_suite(args.model, backends, repeats, args.quick, args.threads,
                                        baseline=not args.no_baseline)
            else:
                rows = s.scaling_suite(args.model, backends[0], args.quick, args.threads)
            records = [r.record(facts) for r in rows]
            append_csv(args.results / "runs.csv", records)
            text = markdown(records, facts, f"Benchmark: {suite}", command)
        path = args.results / f"{args.tag}-{suite}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(text, flush=True)
        print(f"[{suite}] {time.perf_counter() - t0:.0f} s -> {path}", file=sys.stderr, flush=True)
    return 0


def _stages_markdown(rows: list[dict], facts: dict[str, str], command: str) -> str:
    lines = ["# Benchmark: stages", "",
             f"Machine: {facts['machine']}, {facts['cores']} cores; torch {facts['torch']}, onnxruntime "
             f"{facts['onnxruntime']}; {time.strftime('%Y-%m-%d')}. Command: `{command}`.",
             f"{rows[0]['images']} images, {rows[0]['patches']} patches, backend {rows[0]['backend']}; each stage run "
             "alone over the whole set in one process (a scan overlaps decoding with the engines).", "",
             "| stage | seconds | share | per image (ms) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['seconds']:.3f} | {r['share']:.1%} | "
                     f"{1000 * r['seconds'] / r['images']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
