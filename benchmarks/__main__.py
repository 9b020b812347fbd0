"""Benchmarks of gcage_fast: ``python -m benchmarks [--suites engine,pipeline,stages,scaling,kernels,precision,evidence]
[--precisions fp32,int8,...] [--quick]``.

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
from gcage_fast.precision import SCAN_PRECISIONS

SUITES = ("engine", "pipeline", "stages", "scaling", "kernels", "precision", "evidence")
FACES = ROOT.parent / "shared" / "data" / "faces"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default="engine,pipeline,stages",
                    help=f"comma list of {', '.join(SUITES)} (default: engine,pipeline,stages)")
    ap.add_argument("--quick", action="store_true", help="small image set, 1 repeat, batch 8 (a smoke run)")
    ap.add_argument("--model", help="model name or directory (default: the bundled model)")
    ap.add_argument("--backends", default="ort,torch", help="comma list of ort, torch")
    ap.add_argument("--batch-sizes", default="8,32", help="engine suite batch sizes")
    ap.add_argument("--precisions", default="fp32",
                    help="comma list of fp32, fp16, int8 (ort) and bf16 (torch) for the engine, pipeline and "
                         "precision suites (default: fp32; the precision suite defaults to all four)")
    ap.add_argument("--calibration", help="int8 calibration images (default: the bundled samples)")
    ap.add_argument("--faces", type=Path, default=FACES, help="faces data for the precision suite's AP")
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

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for suite in suites:
        t0 = time.perf_counter()
        print(f"[{suite}] running ...", file=sys.stderr, flush=True)
        if suite == "kernels":
            from benchmarks import bench_kernels

            bench_kernels.run(args.quick, args.results, tag=args.tag, command=command)
            print(f"[{suite}] {time.perf_counter() - t0:.0f} s -> {args.results}/{args.tag}-kernels.md",
                  file=sys.stderr, flush=True)
            continue
        if suite == "precision":
            wanted = precisions if args.precisions != "fp32" else list(SCAN_PRECISIONS)
            prec_rows = s.precision_suite(args.model, repeats, args.quick, args.threads, wanted, args.calibration,
                                          args.faces)
            text = _precision_markdown(prec_rows, facts, command, args.calibration)
        elif suite == "stages":
            stage_rows = s.stages_suite(args.model, backends[0], args.quick, args.threads)
            text = _stages_markdown(stage_rows, facts, command)
        else:
            if suite == "engine":
                rows = s.engine_suite(args.model, backends, batches, repeats, args.quick, args.threads, precisions,
                                      args.calibration)
            elif suite == "pipeline":
                rows = s.pipeline_suite(args.model, backends, repeats, args.quick, args.threads,
                                        baseline=not args.no_baseline, precisions=precisions,
                                        calibration=args.calibration)
            elif suite == "evidence":
                rows = s.evidence_suite(args.model, backends[0], repeats, args.quick, args.threads)
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


def _precision_markdown(rows: list[dict], facts: dict[str, str], command: str, calibration: str | None) -> str:
    def rate(r: dict, key: str) -> str:
        return f"{r[key]:.1f} ({r[key + '_min']:.1f}-{r[key + '_max']:.1f})"

    lines = ["# Benchmark: precision", "",
             f"Machine: {facts['machine']}, {facts['cores']} cores, GPU {facts['gpu']}; torch {facts['torch']}, "
             f"onnxruntime {facts['onnxruntime']}; {time.strftime('%Y-%m-%d')}. Command: `{command}`.",
             f"int8 calibration: {calibration or 'the bundled sample images'}. Engine: base graph + fused step + "
             "head graph on pre-made patch batches of 32; scan: end-to-end `scan --heatmaps none` over the "
             f"benchmark image set ({rows[0]['images']} images, {rows[0]['patches']} patches); medians with the "
             "spread (min-max). AP: `gcage-fast eval` on the faces test split, same backend and precision.", "",
             "| backend | precision | engine patches/s | × fp32 | scan images/s | × fp32 | AP G-CAGE | AP base |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ap = r["ap"] or {}
        lines.append(f"| {r['backend']} | {r['precision']} | {rate(r['engine'], 'patches_per_s')} | "
                     f"{r['engine_ratio']:.2f} | {rate(r['scan'], 'images_per_s')} | {r['scan_ratio']:.2f} | "
                     f"{ap.get('gcage', float('nan')):.4f} | {ap.get('base', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


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
