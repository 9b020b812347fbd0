"""Mean size of one heatmap overlay file per image, for each `scan --heatmaps` format, on generated images.

Each image (tests/genimages.py photo_like, seeded) is reduced to the preview a scan keeps (longest side at most
1024 px, as gcage_fast/ingest/prepare.py does), five 224-px patches get a smooth random 7×7 CAM upsampled as the
scan's stored CAMs are, and the overlay is rendered and encoded by gcage_fast/output/heatmaps.py exactly as a scan
writes it (render_overlay with the verdict label, encode_heatmap). No model is run: the size depends on the
pixels and the format, not on the scores.

    .venv/bin/python benchmarks/heatmap_sizes.py --out benchmarks/results/heatmap-sizes.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import genimages as gen  # noqa: E402
from benchmarks.common import machine, publish  # noqa: E402
from gcage_fast.kernels.reference import PATCH, upsample_cams  # noqa: E402
from gcage_fast.output.heatmaps import PREVIEW_MAX, encode_heatmap, render_overlay  # noqa: E402

#: (width, height, label): a phone photo and two common upload sizes.
SIZES = ((640, 480, "640×480 (0.3 MP)"), (1600, 1200, "1600×1200 (1.9 MP)"), (4032, 3024, "4032×3024 (12 MP)"))
FORMATS = (("png", None), ("jpeg", 85), ("webp", 85), ("jpeg", 60), ("webp", 60))


def overlay(width: int, height: int, seed: int) -> Image.Image:
    """The overlay a scan writes for one generated image (preview, five patches, label)."""
    rgb = gen.photo_like(width, height, seed)
    scale = min(1.0, PREVIEW_MAX / max(width, height))
    preview = rgb if scale >= 1.0 else np.asarray(Image.fromarray(rgb).resize(
        (round(width * scale), round(height * scale)), Image.Resampling.BILINEAR, reducing_gap=2.0))
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, width // PATCH, size=5) * PATCH
    ys = rng.integers(0, height // PATCH, size=5) * PATCH
    boxes = np.stack([xs, ys], axis=1)
    heat = np.clip(upsample_cams(rng.random((5, 7, 7), dtype=np.float32), PATCH), 0.0, 1.0)
    return render_overlay(preview, scale, boxes, heat, label=f"fake p_fake={rng.random():.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10, help="generated images per size")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "heatmap-sizes.md")
    args = ap.parse_args()
    facts = machine()
    labels = [fmt if q is None else f"{fmt} q{q}" for fmt, q in FORMATS]
    lines = [
        "# Heatmap overlay size per image, by `scan --heatmaps` format",
        "",
        f"CPU: {facts['machine']}, {facts['cores']} cores; {time.strftime('%Y-%m-%d')}. Command: "
        f"`python benchmarks/heatmap_sizes.py {' '.join(sys.argv[1:])}`.",
        f"{args.images} generated images per size (tests/genimages.py photo_like, seeds 0-{args.images - 1}); the "
        "overlay is the scan's: preview of at most 1024 px, five patches with their CAMs, the verdict label. "
        "Mean file size in KB (1 KB = 1000 bytes); png is lossless (compress level 1, as the scan writes it), "
        "jpeg and webp at `--heatmap-quality` q. Last column: mean encode time of one overlay per format, in ms.",
        "",
        "| image size | " + " | ".join(labels) + " | encode ms (" + ", ".join(labels) + ") |",
        "|---|" + "---|" * len(labels) + "---|",
    ]
    for width, height, label in SIZES:
        images = [overlay(width, height, seed) for seed in range(args.images)]
        sizes, times = [], []
        for fmt, q in FORMATS:
            n, t = [], []
            for im in images:
                t0 = time.perf_counter()
                n.append(len(encode_heatmap(im, fmt, q or 85)))
                t.append(time.perf_counter() - t0)
            sizes.append(statistics.mean(n) / 1000)
            times.append(statistics.mean(t) * 1000)
        lines.append(f"| {label} | " + " | ".join(f"{s:.0f}" for s in sizes) + " | "
                     + ", ".join(f"{t:.0f}" for t in times) + " |")
    table = "\n".join(lines) + "\n"
    publish(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
