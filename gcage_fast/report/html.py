"""The self-contained HTML report of a scan output: inline CSS, inline SVG charts, inline JPEG thumbnails; no
scripts, no network. Every text that comes from the scanned files (paths, member names, details) is escaped:
the inputs are untrusted, and a file name must not be able to inject markup into the report.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from gcage_fast.version import __version__
from gcage_fast.output.outdir import OutputDir
from gcage_fast.report.data import ReportData, run_summary
from gcage_fast.report.thumbnails import Thumbnail

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;background:#fff}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
figure img{max-width:100%;display:block;margin:0 auto}
figcaption{font-size:12px;overflow-wrap:anywhere;margin-top:6px}
.fake{color:#b3261e;font-weight:600}.real{color:#1e7b34;font-weight:600}.uncertain{color:#8a5a00;font-weight:600}
details{margin:4px 0 12px}summary{cursor:pointer;color:#555}
pre{background:#f3f3f3;padding:8px;overflow-x:auto;font-size:12px;margin:4px 0}
.muted{color:#666}.warn{background:#fff4d6;border:1px solid #e8c55a;padding:8px 12px;border-radius:6px}
"""


def _why_incomplete(state: str | None, out: Path) -> str:
    """What an incomplete output means: run.json says "running" until a scan ends, and still says it after a kill,
    so the lock on OUT/.lock tells a scan at work from a stopped one."""
    resume = "resume it with <code>gcage-fast scan ... --resume</code>."
    if state == "finished":
        return "Parts are missing from a finished scan; <code>gcage-fast verify</code> says which."
    if OutputDir(out).scan_running():
        return "A scan is writing it now (it holds the output's lock): this report shows what is committed so far."
    if state in ("interrupted", "stopped"):
        return f"Its scan was {'interrupted' if state == 'interrupted' else 'stopped by an error'}: {resume}"
    return f"Its scan ended without finishing (killed, or the machine stopped): {resume}"


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _query(sql: str) -> str:
    return f"<details><summary>DuckDB query</summary><pre>{_e(sql)}</pre></details>"


def _table(headers: list[str] | None, rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers) if headers else ""
    body = "".join("<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _threshold_line(x: float, top: int, plot_h: float, colour: str, label: str, dash: str = "4 3",
                    dy: int = 10, anchor: str = "start") -> str:
    """A dashed vertical line with its label, right of it (``anchor`` start) or left of it (end)."""
    tx = x + 4 if anchor == "start" else x - 4
    end = "" if anchor == "start" else ' text-anchor="end"'
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="{colour}" '
            f'stroke-dasharray="{dash}"/><text x="{tx:.1f}" y="{top + dy}" font-size="11" fill="{colour}"{end}>'
            f"{label}</text>")


def _histogram_svg(counts: np.ndarray, edges: np.ndarray, title: str, threshold: float | None,
                   uncertain: float | None = None) -> str:
    w, h, left, bottom, top = 520, 220, 48, 28, 20
    plot_w, plot_h = w - left - 12, h - bottom - top
    peak = max(int(counts.max()) if len(counts) else 0, 1)
    bw = plot_w / max(len(counts), 1)
    bars = []
    for i, c in enumerate(counts):
        bh = plot_h * int(c) / peak
        x = left + i * bw
        tip = f"{edges[i]:.2f}-{edges[i + 1]:.2f}: {int(c)}"
        bars.append(f'<rect x="{x + 1:.1f}" y="{top + plot_h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" '
                    f'fill="#4a78c2"><title>{_e(tip)}</title></rect>')
    ticks = "".join(f'<text x="{left + plot_w * t:.1f}" y="{h - 10}" font-size="11" text-anchor="middle">{t:g}'
                    f"</text>" for t in (0.0, 0.25, 0.5, 0.75, 1.0))
    thr = ""
    if threshold is not None:
        thr = _threshold_line(left + plot_w * float(threshold), top, plot_h, "#b3261e",
                              f"threshold {float(threshold):.3f}")
    if uncertain is not None:  # the label goes left of the line, so that it does not run into the threshold's
        thr += _threshold_line(left + plot_w * float(uncertain), top, plot_h, "#8a5a00",
                               f"uncertain from {float(uncertain):.3f}", dash="2 3", dy=24, anchor="end")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{_e(title)}">'
            f'<text x="{left}" y="13" font-size="12">{_e(title)} (images per bin; max {peak})</text>'
            f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>'
            f'{"".join(bars)}{ticks}{thr}</svg>')


def _bars_svg(counts: dict[str, int], title: str) -> str:
    items = list(counts.items())[:12]
    w, row = 520, 22
    h = 24 + row * max(len(items), 1)
    peak = max([n for _, n in items] + [1])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{_e(title)}">',
           f'<text x="0" y="13" font-size="12">{_e(title)}</text>']
    for i, (name, n) in enumerate(items):
        y = 22 + i * row
        bw = 300 * n / peak
        out.append(f'<text x="0" y="{y + 14}" font-size="12">{_e(name[:28])}</text>'
                   f'<rect x="170" y="{y + 3}" width="{bw:.1f}" height="14" fill="#7a5cc2"/>'
                   f'<text x="{176 + bw:.1f}" y="{y + 14}" font-size="12">{n}</text>')
    out.append("</svg>")
    return "".join(out)


def _evidence_section(add: Any, data: ReportData, src: str) -> None:
    """Verdicts by what decided them, and the provenance evidence by kind, claim and generator."""
    add("<h2>Evidence</h2><p class=muted>Provenance read from the files (docs/PROVENANCE.md): C2PA manifests, "
        "IPTC/XMP DigitalSourceType, generators declared in metadata, invisible watermarks.  p_fake is always the "
        "model's score; verdict_source says what made each verdict.</p>")
    add(_table(["verdict_source", "images"], [[k, v] for k, v in data.verdict_sources.items()], {1}))
    add(_query(f"SELECT verdict_source, verdict, count(*) AS n FROM {src}\nWHERE status = 'ok' "
               f"GROUP BY ALL ORDER BY n DESC;"))
    if not data.evidence:
        add("<p>No file carried provenance evidence.</p>")
        return
    rows = []
    for kind, claim, generator, n in data.evidence:
        ex = data.evidence_examples.get((kind, claim, generator), {})
        where = (ex.get("path") or "") + (f" :: {ex['member']}" if ex.get("member") else "")
        rows.append([kind, claim, generator, n, where, ex.get("detail") or ""])
    add(_table(["kind", "claim", "generator", "images", "example input", "example detail"], rows, {3}))
    add(_query(f"SELECT e.kind, e.claim, coalesce(e.generator, '') AS generator, count(DISTINCT input_id) AS images,\n"
               f"       any_value(path) AS example\nFROM (SELECT input_id, path, unnest(evidence) AS e FROM {src})\n"
               f"GROUP BY ALL ORDER BY images DESC;"))


def render_html(data: ReportData, thumbs: dict[str, Thumbnail]) -> str:
    run = run_summary(data.run)
    src = f"read_parquet({_sql_str(data.parts_glob)})"
    ok_rows = data.status.get("ok", 0)
    thr = run["threshold"]
    band = run["uncertain_threshold"]
    parts: list[str] = []
    add = parts.append
    add(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>gcage-fast report: {_e(data.out.name)}"
        f"</title><meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; img-src data:; "
        f"style-src 'unsafe-inline'\"><style>{_CSS}</style></head><body><main>")
    add(f"<h1>Scan report</h1><p class=muted>{_e(data.out)} &middot; run {_e(run['run_id'])} &middot; "
        f"made by gcage-fast {_e(__version__)}</p>")
    if run["state"] != "finished" or (data.n_planned is not None and data.n_rows != data.n_planned):
        add(f"<p class=warn>This scan is <b>incomplete</b> (run.json state {_e(run['state'])}): {data.n_rows} of "
            f"{_e(data.n_planned)} planned inputs have committed rows. {_why_incomplete(run['state'], data.out)}</p>")
    # Summary cards
    fake = data.verdicts.get("fake", 0)
    cards = [("inputs (rows)", data.n_rows), ("ok", ok_rows), ("fake", fake), ("real", data.verdicts.get("real", 0)),
             ("error", data.status.get("error", 0)), ("skipped", data.status.get("skipped", 0))]
    if band is not None or "uncertain" in data.verdicts:  # only a model with an uncertain band has the third verdict
        cards.insert(3, ("uncertain", data.verdicts.get("uncertain", 0)))
    add("<h2>Summary</h2><div class=cards>" + "".join(f"<div class=card><b>{_e(v)}</b>{_e(k)}</div>"
                                                      for k, v in cards) + "</div>")
    add(_query(f"SELECT status, verdict, count(*) AS n FROM {src}\nGROUP BY ALL ORDER BY n DESC;"))
    rate = (f"{run['images_per_s']:.1f} images/s, {run['patches_per_s']:.1f} patches/s"
            if run["images_per_s"] else "n/a")
    add(_table(None, [
        ["model", f"{run['model']} (sha256 {str(run['model_sha256'])[:16]}…)"],
        ["backend", run["backend"]], ["CAM method", run["cam"]], ["threshold", thr],
        *([["uncertain band", "not recorded" if band is None else f"{band} <= p_fake < {thr}"]]
          if band is not None or "uncertain" in data.verdicts else []),
        ["state", run["state"]], ["attempts", run["attempts"]], ["started", run["started_at"]],
        ["finished", run["finished_at"]],
        ["throughput (last attempt)", f"{rate} over {run['last_attempt'].get('scan_s', 'n/a')} s"],
    ]))
    # Status and error codes
    add("<h2>Status</h2>")
    add(_table(["status", "rows"], [[k, v] for k, v in data.status.items()], {1}))
    add(_query(f"SELECT status, count(*) AS n FROM {src} GROUP BY status ORDER BY n DESC;"))
    # Histograms
    add("<h2>Scores</h2>")
    add(_histogram_svg(data.hist_p_fake, data.hist_edges, "G-CAGE p_fake", thr, band))
    add(_histogram_svg(data.hist_base_p_fake, data.hist_edges, "base detector base_p_fake", None))
    add(_query(f"SELECT least(floor(p_fake * 20), 19) / 20 AS bin, count(*) AS n FROM {src}\n"
               f"WHERE status = 'ok' GROUP BY bin ORDER BY bin;\n"
               f"-- the same with base_p_fake for the second histogram"))
    _evidence_section(add, data, src)
    # Attribution
    add("<h2>Attribution</h2><p class=muted>The base detector's most likely class (mean over patches).</p>")
    add(_bars_svg(data.attribution, "images per attributed class"))
    add(_table(["attribution", "images"], [[k, v] for k, v in data.attribution.items()], {1}))
    add(_query(f"SELECT attribution, count(*) AS n FROM {src} WHERE status = 'ok'\nGROUP BY attribution "
               f"ORDER BY n DESC;"))
    # Top suspicious
    add(f"<h2>Most suspicious</h2><p class=muted>The {len(data.top)} images with the highest p_fake; red marks the "
        f"patch regions the base detector's heatmap points at.</p><div class=grid>")
    for i, row in enumerate(data.top, start=1):
        th = thumbs.get(row["input_id"])
        img = (f"<img src=\"{th.data_uri}\" alt=\"overlay {i}\" loading=lazy>" if th else "<p class=muted>(no "
               "thumbnail)</p>")
        verdict = row.get("verdict") or ""
        name = row["path"] + (f" :: {row['member']}" if row.get("member") else "")
        flags = ", ".join(row.get("flags") or [])
        add(f"<figure>{img}<figcaption>#{i} <span class={_e(verdict)}>{_e(verdict)}</span> p_fake "
            f"{row['p_fake']:.4f} &middot; base {row['base_p_fake']:.4f} &middot; {_e(row.get('attribution'))}"
            f"<br>{_e(name)}<br><span class=muted>{_e(row.get('width'))}×{_e(row.get('height'))} "
            f"{_e(row.get('format'))}{(' &middot; ' + _e(flags)) if flags else ''} &middot; thumbnail from "
            f"{_e(th.source if th else 'nothing')}</span></figcaption></figure>")
    add("</div>")
    add(_query(f"SELECT path, member, p_fake, base_p_fake, attribution FROM {src}\nWHERE status = 'ok' "
               f"ORDER BY p_fake DESC LIMIT {len(data.top)};"))
    # Errors
    add("<h2>Errors and skipped inputs</h2>")
    if data.error_codes:
        rows = []
        for code, n in data.error_codes.items():
            ex = data.error_examples.get(code, {})
            where = (ex.get("path") or "") + (f" :: {ex['member']}" if ex.get("member") else "")
            rows.append([code, ex.get("status", ""), n, where, ex.get("error_detail") or ""])
        add(_table(["error_code", "status", "rows", "example input", "example detail"], rows, {2}))
    else:
        add("<p>None.</p>")
    add(_query(f"SELECT error_code, status, count(*) AS n, any_value(path) AS example FROM {src}\n"
               f"WHERE status <> 'ok' GROUP BY ALL ORDER BY n DESC;"))
    if data.flags:
        add("<h2>Flags</h2><p class=muted>Observations that did not stop a scan (see the README's list).</p>")
        add(_table(["flag", "rows"], [[k, v] for k, v in data.flags.items()], {1}))
        add(_query(f"SELECT flag, count(*) AS n FROM (SELECT unnest(flags) AS flag FROM {src})\n"
                   f"GROUP BY flag ORDER BY n DESC;"))
    versions = ", ".join(f"{k} {v}" for k, v in sorted(run["versions"].items()))
    add(f"<h2>About this report</h2><p class=muted>Committed parts read: {len(data.parts)}. Versions: "
        f"{_e(versions)}. Numbers are computed from the Parquet parts; the DuckDB queries reproduce them "
        f"(run them from any directory: the paths are absolute).</p>")
    add("</main></body></html>\n")
    return "".join(parts)
