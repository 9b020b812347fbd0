"""What provenance the evidence stage finds in a labelled image folder (default: ../shared/data/broad): per
generator or real source, how many files carry each kind of evidence and claim, the C2PA states, the flags, and
what the evidence-first policy would decide without the model. Also the evidence stage's time per file.

    python -m benchmarks.provenance_survey [DATA] [--watermarks sd] [--out benchmarks/results/provenance-broad.md]

The numbers in docs/PROVENANCE.md come from this script's output.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.common import machine, publish

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "broad"


def survey(data: Path, watermarks: tuple[str, ...] = ()) -> tuple[dict[str, Counter], list[float]]:
    """folder (ai/<generator> or real/<source>) -> counts; and seconds per file of the byte-level readers."""
    import numpy as np
    from PIL import Image

    from gcage_fast.evidence.collect import DEFAULT_TRUST_ANCHORS, EvidenceOptions, read_evidence
    from gcage_fast.evidence.policy import fuse
    from gcage_fast.ingest.decode import sniff_format

    options = EvidenceOptions(trust_anchors=DEFAULT_TRUST_ANCHORS, watermarks=watermarks)
    stats: dict[str, Counter] = defaultdict(Counter)
    seconds = []
    files = sorted(p for p in data.glob("*/*/*") if p.is_file() and p.parent.parent.name in ("ai", "real"))
    read_evidence(files[0].read_bytes(), None, options)  # warm-up: the C2PA library and the trust list load once
    for f in files:
        blob = f.read_bytes()
        t0 = time.perf_counter()
        found = read_evidence(blob, sniff_format(blob), options)
        seconds.append(time.perf_counter() - t0)
        if watermarks:
            from gcage_fast.evidence.collect import read_pixel_evidence

            with Image.open(f) as im:
                read_pixel_evidence(np.asarray(im.convert("RGB")), options, found)
        s = stats[f"{f.parent.parent.name}/{f.parent.name}"]
        s["files"] += 1
        s["with evidence"] += bool(found.evidence)
        for kind, claim in sorted({(e.kind, e.claim) for e in found.evidence}):
            s[f"{kind} {claim}"] += 1
        if found.c2pa is not None:
            s[f"c2pa {found.c2pa.state}"] += 1
        for flag in found.flags:
            s[f"flag {flag}"] += 1
        s["decided " + fuse(found.evidence, "model")[1]] += 1
    return stats, seconds


def markdown(stats: dict[str, Counter], seconds: list[float], data: Path, command: str) -> str:
    facts = machine()
    total = Counter()
    for s in stats.values():
        total.update(s)
    lines = ["# Provenance survey", "",
             f"Data: `{data}` ({total['files']} files). Machine: {facts['machine']}, {facts['cores']} cores; "
             f"{time.strftime('%Y-%m-%d')}. Command: `{command}`.",
             "Per folder: files with each evidence kind and claim (a file counts once per pair), C2PA validation "
             "states against the shipped official trust list, flags, and the verdict source the evidence-first "
             "policy gives before the model is asked ('decided model' = no deciding evidence).", "",
             "| folder | files | with evidence | what was found |", "|---|---|---|---|"]
    for folder in sorted(stats, key=lambda k: (not k.startswith("ai/"), k)):
        s = stats[folder]
        found = ", ".join(f"{k} {v}" for k, v in sorted(s.items()) if k not in ("files", "with evidence",
                                                                                  "decided model"))
        lines.append(f"| {folder} | {s['files']} | {s['with evidence']} | {found or '-'} |")
    ai = Counter()
    real = Counter()
    for folder, s in stats.items():
        (ai if folder.startswith("ai/") else real).update(s)
    lines += ["", f"AI images decided by evidence: {ai['files'] - ai['decided model']} of {ai['files']} "
              f"({(ai['files'] - ai['decided model']) / max(ai['files'], 1):.1%}); real photographs decided fake by "
              f"evidence: {real['files'] - real['decided model']} of {real['files']}.",
              f"Evidence stage (C2PA + metadata, on bytes in memory) per file: median "
              f"{1000 * statistics.median(seconds):.3f} ms, min {1000 * min(seconds):.3f}, max "
              f"{1000 * max(seconds):.3f} ms over {len(seconds)} files."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--watermarks", default="", help="also decode watermarks (sd); needs the [watermark] extra")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/provenance-broad.md"))
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        ap.error(f"{args.data} is not a folder")
    schemes = tuple(w for w in args.watermarks.split(",") if w)
    stats, seconds = survey(args.data, schemes)
    command = "python -m benchmarks.provenance_survey " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(stats, seconds, args.data, command.strip())
    publish(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
