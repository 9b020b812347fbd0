"""Shared pieces of the benchmark suites: the image set, machine facts, process-tree RSS sampling, timing and
the CSV/markdown tables."""

from __future__ import annotations

import csv
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "gcage_fast" / "samples" / "images"
IMAGESET_VERSION = 1
#: (megapixels, label) of the full set; every bundled photograph at every size.
SIZES = ((0.3, "0.3MP"), (1.0, "1MP"), (2.0, "2MP"), (4.0, "4MP"))

COLUMNS = ["suite", "machine", "cores", "gpu", "torch", "onnxruntime", "tensorrt", "triton", "model", "backend",
           "precision", "batch", "workers", "threads", "variant", "images", "patches", "images_per_s",
           "images_per_s_min", "images_per_s_max", "patches_per_s", "patches_per_s_min", "patches_per_s_max",
           "peak_rss_mib", "ratio_to_baseline", "repeats", "note", "date"]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "gcage_fast" / "benchmarks"


def _fit(rgb: np.ndarray, megapixels: float) -> Image.Image:
    """Resize (up or down) and centre-crop a photograph to 4:3 at about ``megapixels``."""
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(w * 3 / 4))
    im = Image.fromarray(rgb)
    scale = max(w / im.width, h / im.height)
    im = im.resize((max(w, round(im.width * scale)), max(h, round(im.height * scale))), Image.Resampling.LANCZOS)
    left, top = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((left, top, left + w, top + h))


def image_set(quick: bool = False) -> Path:
    """The benchmark images (generated once, seeded, cached outside the repository): the bundled photographs
    resized and cropped to 0.3, 1, 2 and 4 MP, JPEG quality 85-95, every fifth as PNG and every seventh as WebP.
    ``quick``: only the 0.3 MP JPEGs."""
    name = f"images-v{IMAGESET_VERSION}" + ("-quick" if quick else "")
    root = cache_root() / name
    done = cache_root() / f"{name}.complete"  # outside the set: a scan of the folder sees only images
    if done.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(IMAGESET_VERSION)
    photos = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    n = 0
    for mp, label in SIZES[:1] if quick else SIZES:
        for photo in photos:
            with Image.open(photo) as im:
                rgb = np.asarray(im.convert("RGB"))
            img = _fit(rgb, mp)
            n += 1
            if not quick and n % 5 == 0:
                img.save(root / f"{label}-{photo.stem}.png", "PNG", compress_level=6)
            elif not quick and n % 7 == 0:
                img.save(root / f"{label}-{photo.stem}.webp", "WEBP", quality=90)
            else:
                img.save(root / f"{label}-{photo.stem}.jpg", "JPEG", quality=int(rng.integers(85, 96)))
    done.write_text("ok\n")
    return root


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for mod in ("torch", "onnxruntime", "tensorrt", "triton"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: say so
            versions[mod] = "-"
    gpu = "-"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return {"machine": cpu, "cores": str(os.cpu_count()), "gpu": gpu, **versions}


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


def rss(pid: int) -> int:
    """Resident set size of one process in bytes (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _tree_rss(pid: int) -> int:
    return rss(pid) + sum(rss(k) for k in children(pid))


class PeakRss:
    """Samples the RSS of this process and its children every ``interval`` seconds; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss(os.getpid()))


def repeat(fn: Callable[[], tuple[int, int, float]], repeats: int, warmup: bool = True) -> list[tuple[int, int, float]]:
    """Run ``fn`` -> (images, patches, seconds) ``repeats`` times after one untimed warm-up run."""
    if warmup:
        fn()
    return [fn() for _ in range(repeats)]


@dataclass
class Row:
    suite: str
    model: str
    backend: str
    precision: str = "fp32"
    batch: int | str = ""
    workers: int | str = ""
    threads: int | str = ""
    variant: str = ""
    runs: list[tuple[int, int, float]] = field(default_factory=list)
    peak_rss: int = 0
    ratio: float | None = None
    note: str = ""

    def rates(self) -> dict[str, float]:
        ips = [i / s for i, _, s in self.runs if s > 0]
        pps = [p / s for _, p, s in self.runs if s > 0]
        return {"images_per_s": statistics.median(ips) if ips else 0.0, "images_per_s_min": min(ips, default=0.0),
                "images_per_s_max": max(ips, default=0.0), "patches_per_s": statistics.median(pps) if pps else 0.0,
                "patches_per_s_min": min(pps, default=0.0), "patches_per_s_max": max(pps, default=0.0)}

    def record(self, facts: dict[str, str]) -> dict[str, Any]:
        r = self.rates()
        images, patches = (self.runs[0][0], self.runs[0][1]) if self.runs else (0, 0)
        return {
            "suite": self.suite, **{k: facts.get(k, "") for k in ("machine", "cores", "gpu", "torch", "onnxruntime",
                                                                   "tensorrt", "triton")},
            "model": self.model, "backend": self.backend, "precision": self.precision, "batch": self.batch,
            "workers": self.workers, "threads": self.threads, "variant": self.variant, "images": images,
            "patches": patches, **{k: round(v, 2) for k, v in r.items()},
            "peak_rss_mib": round(self.peak_rss / 2**20) if self.peak_rss else "",
            "ratio_to_baseline": "" if self.ratio is None else round(self.ratio, 2), "repeats": len(self.runs),
            "note": self.note, "date": time.strftime("%Y-%m-%d"),
        }


def append_csv(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for r in records:
            w.writerow(r)


def markdown(records: list[dict[str, Any]], facts: dict[str, str], title: str, command: str) -> str:
    cols = ["suite", "variant", "backend", "precision", "batch", "workers", "threads", "images", "patches",
            "images/s (min-max)", "patches/s (min-max)", "peak RSS MiB", "× baseline", "note"]
    lines = [f"# {title}", "",
             f"Machine: {facts['machine']}, {facts['cores']} cores, GPU {facts['gpu']}; torch {facts['torch']}, "
             f"onnxruntime {facts['onnxruntime']}, TensorRT {facts['tensorrt']}, Triton {facts['triton']}; "
             f"{time.strftime('%Y-%m-%d')}.", f"Command: `{command}`.", "",
             "Medians over the repeats after one untimed warm-up, with the spread (min-max).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in records:
        ips = f"{r['images_per_s']:.2f} ({r['images_per_s_min']:.2f}-{r['images_per_s_max']:.2f})" \
            if r["images"] else ""
        pps = f"{r['patches_per_s']:.1f} ({r['patches_per_s_min']:.1f}-{r['patches_per_s_max']:.1f})"
        lines.append("| " + " | ".join(str(x) for x in [
            r["suite"], r["variant"], r["backend"], r["precision"], r["batch"], r["workers"], r["threads"],
            r["images"], r["patches"], ips, pps, r["peak_rss_mib"], r["ratio_to_baseline"], r["note"]]) + " |")
    return "\n".join(lines) + "\n"


def publish(path: Path, text: str) -> None:
    """Write a result table to ``path`` (its folder made if needed) and show it on stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    sys.stdout.write(text)
