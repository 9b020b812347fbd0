"""``gcage-fast report``: one self-contained HTML file that summarises a scan output."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gcage_fast.fsutil import atomic_write_bytes
from gcage_fast.output.outdir import OutputDir
from gcage_fast.report.data import collect
from gcage_fast.report.html import render_html
from gcage_fast.report.thumbnails import make_thumbnails

__all__ = ["ReportResult", "write_report"]


@dataclass(frozen=True)
class ReportResult:
    path: Path
    rows: int
    thumbnails: int
    bytes: int
    seconds: float


def write_report(out: str | Path, html_path: str | Path, top_n: int = 50, read_sources: bool = True) -> ReportResult:
    """Aggregate the scan output ``out`` and write the report to ``html_path`` (temp file, then rename)."""
    t0 = time.perf_counter()
    out = Path(out).resolve()
    data = collect(out, top_n)
    thumbs = make_thumbnails(OutputDir(out), data.top, read_sources)
    text = render_html(data, thumbs).encode("utf-8")
    atomic_write_bytes(html_path, text)
    return ReportResult(Path(html_path), data.n_rows, len(thumbs), len(text), time.perf_counter() - t0)
