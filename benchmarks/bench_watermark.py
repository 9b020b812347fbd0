"""Watermark detector benchmark: ``python benchmarks/bench_watermark.py [--repeats 7] [--sizes 512,1024,2048,4096]
[--out FILE]``.

Times :func:`gcage_fast.evidence.watermark.detect_watermarks` (scheme ``sd``: both messages, both channel orders)
per square image size on a seeded natural-looking image carrying the SDXL watermark, and the package's own
decoder (``imwatermark.WatermarkDecoder(...).decode(bgr, 'dwtDct')`` once per message, one channel order) as the
reference it replaces. Reports the median over the repeats after one untimed warm-up, with the spread (min-max),
and ms per megapixel of the image (above ``MAX_DECODE_PIXELS`` the detector decodes the top rows only, so its
per-megapixel cost falls). Writes a markdown table (default benchmarks/results/cpu-<cores>core-watermark.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, machine  # noqa: E402
from gcage_fast.evidence import watermark as wm  # noqa: E402

__all__ = ["main"]


def natural(size: int, seed: int = 0) -> np.ndarray:
    """A seeded natural-looking RGB image (gradients, soft shapes, mild noise) of size x size."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.empty((size, size, 3), np.float32)
    for c in range(3):
        img[:, :, c] = 128 + 60 * np.sin(rng.uniform(2, 6) * np.pi * (rng.uniform(-1, 1) * x + rng.uniform(-1, 1) * y))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.2)
        img += (np.clip(1 - np.hypot(y - cy, x - cx) / r, 0, 1) ** 0.5)[:, :, None] * rng.uniform(-80, 80, 3)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def watermarked(size: int) -> np.ndarray:
    from imwatermark import WatermarkEncoder

    enc = WatermarkEncoder()
    enc.set_watermark("bits", [int(b) for b in bin(wm.SDXL_MESSAGE)[2:]])
    bgr = enc.encode(np.ascontiguousarray(natural(size)[:, :, ::-1]), "dwtDct")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` runs of ``fn`` after one untimed warm-up."""
    fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def package_decode(rgb: np.ndarray) -> None:
    from imwatermark import WatermarkDecoder

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    for length in (136, 48):
        WatermarkDecoder("bits", length).decode(bgr, "dwtDct")


def cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return ", ".join(f for f in ("avx2", "avx512f", "avx512bw", "avx512vl") if f in flags) or "no avx2"
    except OSError:
        pass
    return "unknown"


def versions() -> str:
    import importlib.metadata as md

    import cv2

    out = [f"Python {sys.version.split()[0]}", f"numpy {np.__version__}", f"opencv {cv2.__version__}"]
    for dist in ("invisible-watermark", "PyWavelets"):
        try:
            out.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            out.append(f"{dist} -")
    return ", ".join(out)


def row(impl: str, size: int, runs: list[float], note: str) -> str:
    ms = [r * 1000 for r in runs]
    med = statistics.median(ms)
    mp = size * size / 1e6
    return (f"| {impl} | {size}x{size} | {mp:.2f} | {med:.1f} ({min(ms):.1f}-{max(ms):.1f}) | {med / mp:.1f} | "
            f"{len(runs)} | {note} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--sizes", default="512,1024,2048,4096", help="comma list of square image sides in pixels")
    p.add_argument("--package-max", type=int, default=2048, help="largest side timed with the package decoder")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    facts = machine()
    out = args.out or ROOT / "benchmarks" / "results" / f"cpu-{facts['cores']}core-watermark.md"
    lines = []
    for size in sizes:
        rgb = watermarked(size)
        found = wm.detect_watermarks(rgb)[0]
        assert [e.generator for e in found] == ["Stable Diffusion XL"], found
        note = "top 4 MiP decoded" if size * size > wm.MAX_DECODE_PIXELS else ""
        lines.append(row("detect_watermarks (vectorised, 2 messages x 2 orders)", size,
                         timed(lambda: wm.detect_watermarks(rgb), args.repeats), note))
        if size <= args.package_max:
            lines.append(row("imwatermark decode (2 messages x 1 order)", size,
                             timed(lambda: package_decode(rgb), args.repeats), "reference"))
    command = "python benchmarks/bench_watermark.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = "\n".join([
        "# Benchmark: watermark detector (dwtDct, scheme sd)", "",
        f"Machine: {facts['machine']} ({cpu_flags()}), {facts['cores']} cores, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', '-')}; {versions()}; {time.strftime('%Y-%m-%d')}.",
        f"Command: `{command.strip()}`.", "",
        "Seeded natural-looking RGB images carrying the SDXL watermark (imwatermark's encoder). Median over the "
        "repeats after one untimed warm-up, with the spread (min-max); ms/MP divides the median by the image's "
        "megapixels. The detector decodes at most MAX_DECODE_PIXELS (4 MiP, the top rows) of larger images.", "",
        "| implementation | image | MP | ms (min-max) | ms/MP | repeats | note |", "|---|---|---|---|---|---|---|",
        *lines, ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
