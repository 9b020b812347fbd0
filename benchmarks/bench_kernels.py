"""Kernel benchmark: ``python -m benchmarks.bench_kernels [--quick] [--results DIR] [--device cpu|cuda]``.

Per kernel (patch_contrast, gather_patches, fuse_cam from CAMs, fuse_cam from activations) and implementation:
median time, effective bandwidth (bytes read + written / time) and its ratio to the device's measured copy
bandwidth (``clone`` of a 256 MiB tensor, read + write), and the speed-up over the NumPy oracle on the CPU.

On a CPU-only machine the rows are the torch ``reference`` kernels on CPU tensors and the NumPy oracle; Triton
runs only under the interpreter there, on tiny shapes, and those rows say ``interpreter, correctness only``
(their time is not a kernel speed). On a GPU the ``reference`` (torch on the GPU), ``triton`` and ``cuda`` rows
are timed with CUDA synchronisation.

Writes ``RESULTS/<tag>-kernels.md`` and ``RESULTS/<tag>-kernels.csv`` (tag = ``cpu-<cores>core`` or
``gpu-<name>``). :func:`run` is what the benchmark suite calls.
"""

from __future__ import annotations

import argparse
import csv
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import ROOT, machine

__all__ = ["run", "main", "COLUMNS"]

COLUMNS = ["kernel", "impl", "device", "mode", "images", "patches", "patch", "dtype", "ms", "ms_min", "ms_max",
           "mbytes", "gb_per_s", "copy_gb_per_s", "pct_of_copy", "x_numpy", "repeats", "note", "machine", "cores",
           "gpu", "torch", "triton", "date"]
INTERP = "interpreter, correctness only"


@dataclass
class _Case:
    images: list[np.ndarray]
    patch: int
    top_k: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Seconds per call, ``repeats`` times after one untimed warm-up."""
    fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def copy_bandwidth(device: torch.device, mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second of copying a ``mib`` MiB tensor on ``device`` (read + write counted): the better of
    ``clone`` (which on the CPU also pays for faulting in fresh pages) and ``copy_`` into a preallocated tensor."""
    x = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    x.fill_(1)
    y = torch.empty_like(x)
    t = min(statistics.median(_time(lambda: x.clone(), device, repeats)),
            statistics.median(_time(lambda: y.copy_(x), device, repeats)))
    return 2 * x.numel() / t


def _case(quick: bool, seed: int = 0) -> _Case:
    rng = np.random.default_rng(seed)
    shapes = [(768, 1024), (1080, 1440)] * (1 if quick else 4)
    return _Case([rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in shapes], 224, 5)


def _tiny_case() -> _Case:
    rng = np.random.default_rng(1)
    return _Case([rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(40, 50, 3), (35, 70, 3)]], 16, 2)


def _bench_impl(name: str, kernels, case: _Case, device: torch.device, repeats: int,
                numpy_ms: dict[str, float], copy_bps: float, mode: str) -> list[dict[str, Any]]:
    from gcage_fast.kernels.batching import grid_boxes, pack_images, patch_table, topk_per_image, selected_boxes

    p = case.patch
    packed = pack_images(case.images, device)
    grid, counts, num_ys = grid_boxes(packed, p)
    g_base, g_stride = patch_table(packed, grid)
    sums = kernels.patch_contrast(packed.flat, g_base, g_stride, p)
    ks, keep = topk_per_image(sums, counts, case.top_k)
    base, stride = patch_table(packed, selected_boxes(packed, ks, keep, num_ys, p))
    n, m = len(base), len(g_base)
    gen = torch.Generator().manual_seed(0)
    cams = torch.rand((n, 7, 7), generator=gen).to(device)
    k = 512 if p == 224 else 16
    acts = torch.rand((n, k, 7, 7), generator=gen).to(device)
    weights = torch.randn((n, k), generator=gen).to(device)
    px = n * p * p * 3
    jobs = [
        ("patch_contrast", "int64", m, lambda: kernels.patch_contrast(packed.flat, g_base, g_stride, p),
         m * p * p * 3 + m * 8),
        ("gather_patches", "fp32", n, lambda: kernels.gather_patches(packed.flat, base, stride, p),
         px + px * 4),
        ("gather_patches", "fp16", n, lambda: kernels.gather_patches(packed.flat, base, stride, p,
                                                                      dtype=torch.float16), px + px * 2),
        ("fuse_cam (cams)", "fp32", n, lambda: kernels.fuse_cam(packed.flat, base, stride, p, cams=cams),
         px + cams.numel() * 4 + n * 4 * p * p * 4),
        ("fuse_cam (activations)", "fp32", n,
         lambda: kernels.fuse_cam(packed.flat, base, stride, p, activations=acts, weights=weights),
         px + acts.numel() * 4 + weights.numel() * 4 + cams.numel() * 4 + n * 4 * p * p * 4),
    ]
    rows = []
    for kernel, dtype, count, fn, nbytes in jobs:
        times = _time(fn, device, repeats)
        t = statistics.median(times)
        row = {"kernel": kernel, "impl": name, "device": str(device), "mode": mode, "images": len(case.images),
               "patches": count, "patch": p, "dtype": dtype, "ms": round(1e3 * t, 3),
               "ms_min": round(1e3 * min(times), 3), "ms_max": round(1e3 * max(times), 3),
               "mbytes": round(nbytes / 1e6, 2), "repeats": repeats, "note": ""}
        if mode == INTERP:
            row.update(gb_per_s="", copy_gb_per_s="", pct_of_copy="", x_numpy="",
                       note="TRITON_INTERPRET=1 on CPU tensors: proves indexing only, not speed")
        else:
            bw = nbytes / t
            row.update(gb_per_s=round(bw / 1e9, 2), copy_gb_per_s=round(copy_bps / 1e9, 2),
                       pct_of_copy=round(100 * bw / copy_bps, 1))
            ref = numpy_ms.get(kernel.split(" ")[0] + ("" if "activations" not in kernel else "+act"))
            row["x_numpy"] = round(ref / (1e3 * t), 2) if ref else ""
        rows.append(row)
    return rows


def _numpy_rows(case: _Case, repeats: int, copy_bps: float) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The NumPy oracle (and the CPU scan's fused step) on the host: the baseline of the ``x_numpy`` column."""
    from gcage_fast.kernels import reference as ref
    from gcage_fast.kernels.cpu import fuse_cam_from_patches
    from gcage_fast.scoring.patches import contrast_sums, grayscale, select

    p = case.patch
    cpu = torch.device("cpu")
    boxes = np.array([(i, int(x), int(y)) for i, img in enumerate(case.images)
                      for x, y in select(img, case.top_k, p).boxes], dtype=np.int64)
    n = len(boxes)
    m = sum((h // p) * (w // p) for h, w, _ in (im.shape for im in case.images))
    rng = np.random.default_rng(0)
    cams = rng.random((n, 7, 7)).astype(np.float32)
    acts = rng.random((n, 512, 7, 7)).astype(np.float32)
    weights = rng.standard_normal((n, 512)).astype(np.float32)
    px = n * p * p * 3
    patches = ref.gather_patches(case.images, boxes, p)

    def from_act():
        cam = np.maximum(np.einsum("nk,nkhw->nhw", weights, acts), 0)
        return ref.fuse_cam(case.images, boxes, cam, p)

    jobs = [
        ("patch_contrast", "numpy oracle", m, lambda: [contrast_sums(grayscale(im), p) for im in case.images],
         m * p * p * 3 + m * 8, "patch_contrast"),
        ("gather_patches", "numpy oracle", n, lambda: ref.gather_patches(case.images, boxes, p), px + px * 4,
         "gather_patches"),
        ("fuse_cam (cams)", "numpy oracle", n, lambda: ref.fuse_cam(case.images, boxes, cams, p),
         px + cams.nbytes + n * 4 * p * p * 4, "fuse_cam"),
        ("fuse_cam (cams)", "numpy cpu.py (scan path, from gathered patches)", n,
         lambda: fuse_cam_from_patches(patches, cams), px * 4 + cams.nbytes + n * 4 * p * p * 4, None),
        ("fuse_cam (activations)", "numpy oracle", n, from_act,
         px + acts.nbytes + weights.nbytes + cams.nbytes + n * 4 * p * p * 4, "fuse_cam+act"),
    ]
    rows, ms = [], {}
    for kernel, impl, count, fn, nbytes, key in jobs:
        times = _time(fn, cpu, repeats)
        t = statistics.median(times)
        if key:
            ms[key] = 1e3 * t
        rows.append({"kernel": kernel, "impl": impl, "device": "cpu", "mode": "timed", "images": len(case.images),
                     "patches": count, "patch": p, "dtype": "int64" if kernel == "patch_contrast" else "fp32",
                     "ms": round(1e3 * t, 3), "ms_min": round(1e3 * min(times), 3),
                     "ms_max": round(1e3 * max(times), 3), "mbytes": round(nbytes / 1e6, 2),
                     "gb_per_s": round(nbytes / t / 1e9, 2), "copy_gb_per_s": round(copy_bps / 1e9, 2),
                     "pct_of_copy": round(100 * nbytes / t / copy_bps, 1), "x_numpy": "", "repeats": repeats,
                     "note": "host NumPy"})
    return rows, ms


def run(quick: bool, out_dir: Path, device: str | None = None, repeats: int | None = None,
        tag: str | None = None, command: str | None = None) -> list[dict[str, Any]]:
    """Run the kernel benchmark, write ``<tag>-kernels.md`` and ``.csv`` under ``out_dir``, return the rows."""
    from gcage_fast.errors import GcageError
    from gcage_fast.kernels import dispatch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    repeats = repeats or (2 if quick else 5)
    facts = machine()
    case = _case(quick)
    cpu_copy = copy_bandwidth(torch.device("cpu"), 64 if quick else 256)
    rows, numpy_ms = _numpy_rows(case, repeats, cpu_copy)
    dev_copy = cpu_copy if dev.type == "cpu" else copy_bandwidth(dev, 64 if quick else 256)
    rows += _bench_impl("reference", dispatch.resolve_kernels("reference", dev), case, dev, repeats, numpy_ms,
                        dev_copy, "timed")
    if dev.type == "cuda":
        for impl in ("triton", "cuda"):
            try:
                kernels = dispatch.resolve_kernels(impl, dev)
            except GcageError as exc:
                rows.append({"kernel": "-", "impl": impl, "device": str(dev), "mode": "not run", "note": str(exc)})
                continue
            rows += _bench_impl(impl, kernels, case, dev, repeats, numpy_ms, dev_copy, "timed")
    else:
        try:
            module = dispatch.load_triton_interpreted()
            kernels = dispatch.KernelSet("triton", INTERP, module.patch_contrast, module.gather_patches,
                                         module.fuse_cam)
            rows += _bench_impl("triton", kernels, _tiny_case(), dev, 1, {}, dev_copy, INTERP)
        except GcageError as exc:
            rows.append({"kernel": "-", "impl": "triton", "device": "cpu", "mode": "not run", "note": str(exc)})
    date = time.strftime("%Y-%m-%d")
    for r in rows:
        r.update({k: facts.get(k, "") for k in ("machine", "cores", "gpu", "torch", "triton")}, date=date)
    tag = tag or _tag(dev, facts)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / f"{tag}-kernels.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out_dir / f"{tag}-kernels.md").write_text(markdown(rows, facts, command or "python -m benchmarks.bench_kernels"
                                                        + (" --quick" if quick else ""), cpu_copy, dev_copy))
    return rows


def _tag(device: torch.device, facts: dict[str, str]) -> str:
    if device.type == "cuda":
        return "gpu-" + re.sub(r"[^a-z0-9]+", "-", facts["gpu"].lower()).strip("-")
    return f"cpu-{facts['cores']}core"


def markdown(rows: list[dict[str, Any]], facts: dict[str, str], command: str, cpu_copy: float,
             dev_copy: float) -> str:
    lines = ["# Benchmark: kernels", "",
             f"Machine: {facts['machine']}, {facts['cores']} cores, GPU {facts['gpu']}; torch {facts['torch']}, "
             f"Triton {facts['triton']}; {time.strftime('%Y-%m-%d')}.", f"Command: `{command}`.", "",
             f"Copy bandwidth (better of `clone` and `copy_`, read + write): CPU {cpu_copy / 1e9:.2f} GB/s"
             + (f", device {dev_copy / 1e9:.2f} GB/s" if dev_copy != cpu_copy else "") + ". "
             "Effective bandwidth = bytes read + written / median time; `% copy` is its share of the copy "
             "bandwidth; `x numpy` is the speed-up over the NumPy oracle on the host. Rows marked "
             f"`{INTERP}` time the Triton interpreter on tiny shapes and say nothing about kernel speed.", "",
             "| kernel | impl | device | mode | images | patches | P | dtype | ms (min-max) | MB | GB/s | % copy "
             "| x numpy | note |", "|" + "---|" * 14]
    for r in rows:
        if r.get("mode") == "not run":
            lines.append(f"| - | {r['impl']} | {r['device']} | not run |  |  |  |  |  |  |  |  |  | {r['note']} |")
            continue
        lines.append(f"| {r['kernel']} | {r['impl']} | {r['device']} | {r['mode']} | {r['images']} | {r['patches']} "
                     f"| {r['patch']} | {r['dtype']} | {r['ms']} ({r['ms_min']}-{r['ms_max']}) | {r['mbytes']} "
                     f"| {r['gb_per_s']} | {r['pct_of_copy']} | {r['x_numpy']} | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_kernels", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images, 2 repeats (a smoke run)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", help="file prefix (default: cpu-<cores>core or gpu-<name>)")
    args = ap.parse_args(argv)
    command = "python -m benchmarks.bench_kernels " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tag = args.tag or _tag(dev, machine())
    run(args.quick, args.results, str(dev), args.repeats, tag, command.strip())
    print((args.results / f"{tag}-kernels.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
