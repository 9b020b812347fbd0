"""G3/G4: the HTML report of a scan, checked as a structure, against DuckDB, for hostile names, for size with 50
thumbnails on a 10k-row output, and (where Chromium is installed) rendered by a headless browser."""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.dataset as pads
import pytest

import genimages as gen
from genoutput import synthetic_output
from gcage_fast.errors import OutputError
from gcage_fast.report import write_report
from gcage_fast.report.data import collect


class Outline(HTMLParser):
    """Tags, h2 titles, images, <pre> texts and any script or external reference."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.h2: list[str] = []
        self.pre: list[str] = []
        self.imgs: list[str] = []
        self.external: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a and not str(a[key]).startswith("data:"):
                self.external.append(a[key])
        if tag in ("h2", "pre"):
            self._in = tag
            (self.h2 if tag == "h2" else self.pre).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "h2":
            self.h2[-1] += data
        elif self._in == "pre":
            self.pre[-1] += data


def outline(path: Path) -> Outline:
    o = Outline()
    o.feed(path.read_text())
    return o


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, tiny_model_dir):
    """A small real scan: good images (some with heatmaps), a broken file, and a name that is HTML."""
    from helpers import run_cli

    root = tmp_path_factory.mktemp("report")
    src = root / "in"
    src.mkdir()
    for i in range(8):
        gen.save_image(src / f"img{i}.jpg", 300 + 40 * i, 260, i)
    gen.save_image(src / "<script>alert(1)<\u2028>.png", 240, 240, 99, "PNG")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = root / "out"
    run_cli("scan", src, "-o", out, "--model", tiny_model_dir, "--heatmaps", "png", "--workers", "1", "--quiet")
    return out


def test_report_structure_and_numbers(scanned, tmp_path):
    html_path = tmp_path / "r.html"
    result = write_report(scanned, html_path, top_n=5)
    assert result.rows == 10 and result.thumbnails == 5
    o = outline(html_path)
    assert o.h2[:7] == ["Summary", "Status", "Scores", "Evidence", "Attribution", "Most suspicious",
                        "Errors and skipped inputs"]
    assert "script" not in o.tags and not o.external  # self-contained, no scripts
    assert len(o.imgs) == 5 and all(s.startswith("data:image/jpeg;base64,") for s in o.imgs)
    assert o.tags.count("svg") == 3  # two histograms and the attribution bars
    text = html_path.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;" in text  # the hostile name, escaped
    assert "decode.corrupt" in text
    assert "uncertain</div>" not in text and "uncertain band" not in text  # no band: no third verdict's card or row
    data = collect(scanned, 5)
    table = pads.dataset(scanned / "results").to_table()
    assert data.status == {"ok": 9, "error": 1}
    assert sum(data.hist_p_fake) == 9 and sum(data.verdicts.values()) == 9
    assert [r["p_fake"] for r in data.top] == sorted(
        (v for v in table["p_fake"].to_pylist() if v is not None), reverse=True)[:5]


def test_every_query_reproduces_its_number(scanned, tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra")
    html_path = tmp_path / "r.html"
    write_report(scanned, html_path, top_n=5)
    o = outline(html_path)
    assert len(o.pre) >= 6
    con = duckdb.connect()
    results = [con.execute(q).fetchall() for q in o.pre]  # every query runs as shown
    data = collect(scanned, 5)
    status = next(r for q, r in zip(o.pre, results) if q.startswith("SELECT status, count(*)"))
    assert dict(status) == data.status
    hist = next(r for q, r in zip(o.pre, results) if "floor(p_fake * 20)" in q)
    assert {int(round(b * 20)): n for b, n in hist} == {i: int(c) for i, c in enumerate(data.hist_p_fake) if c}
    top = next(r for q, r in zip(o.pre, results) if "ORDER BY p_fake DESC" in q)
    assert [row[2] for row in top] == [r["p_fake"] for r in data.top]
    errors = next(r for q, r in zip(o.pre, results) if q.startswith("SELECT error_code"))
    assert {(c, s): n for c, s, n, _ in errors} == {("decode.corrupt", "error"): 1}
    sources = next(r for q, r in zip(o.pre, results) if q.startswith("SELECT verdict_source"))
    by_source: dict[str, int] = {}
    for source, _, n in sources:
        by_source[source] = by_source.get(source, 0) + n
    assert by_source == data.verdict_sources and sum(by_source.values()) == 9


def test_thumbnails_come_from_heatmaps_then_sources_then_cams(scanned, tmp_path):
    from gcage_fast.output.outdir import OutputDir
    from gcage_fast.report.thumbnails import make_thumbnails

    out = tmp_path / "copy"
    shutil.copytree(scanned, out)
    rows = collect(out, 3).top
    assert {t.source for t in make_thumbnails(OutputDir(out), rows).values()} == {"heatmap"}
    shutil.rmtree(out / "heatmaps")
    assert {t.source for t in make_thumbnails(OutputDir(out), rows).values()} == {"source"}
    assert {t.source for t in make_thumbnails(OutputDir(out), rows, read_sources=False).values()} == {"cams"}
    # A source that changed since the scan is not drawn under the old heatmaps.
    changed = tmp_path / "changed.jpg"
    gen.save_image(changed, 300, 260, 1234)
    rows = [dict(r, path_bytes=os.fsencode(changed)) for r in rows]
    assert {t.source for t in make_thumbnails(OutputDir(out), rows).values()} == {"cams"}


def test_unfinished_scan_is_said_and_missing_output_refused(tmp_path):
    out = synthetic_output(tmp_path / "o", 300, shard_size=100)
    (out / "commits" / "shard-00002.json").unlink()
    write_report(out, tmp_path / "r.html", top_n=3)
    text = (tmp_path / "r.html").read_text()
    assert "200 of 300 planned inputs have committed rows" in text
    (tmp_path / "empty").mkdir()
    with pytest.raises(OutputError, match=r"is not a scan output \(no run.json\)"):
        write_report(tmp_path / "empty", tmp_path / "x.html")


def test_ten_thousand_rows_with_fifty_thumbnails_stay_small(tmp_path):
    out = synthetic_output(tmp_path / "o", 10_000, heatmaps_for_top=50)
    result = write_report(out, tmp_path / "r.html", top_n=50)
    assert result.rows == 10_000 and result.thumbnails == 50
    assert result.bytes < 15 * 2**20
    assert len(outline(tmp_path / "r.html").imgs) == 50


def test_report_cli(cli, scanned, tmp_path):
    r = cli("report", scanned, "-o", tmp_path / "r.html", "--top", "2", "--no-sources")
    assert re.search(r"r\.html: 10 rows, 2 thumbnails, [0-9.]+ MiB in [0-9.]+ s", r.stdout)
    r = cli("report", tmp_path / "nope", "-o", tmp_path / "r.html", check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(scanned, tmp_path):
    html_path = tmp_path / "r.html"
    write_report(scanned, html_path, top_n=9)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,2000", f"--screenshot={shot}", "--enable-logging=stderr", "--v=0",
                           html_path.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Refused" in ln or "Uncaught" in ln]
    assert not console, console
    from PIL import Image
    import numpy as np

    px = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert px.shape == (2000, 1280) and px.std() > 10  # something was drawn, not a blank page
