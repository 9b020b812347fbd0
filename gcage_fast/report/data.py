"""The numbers of a scan report, aggregated with pyarrow from the committed parts of a scan output.

Only shards with a commit marker count (what ``verify`` and a resumed scan count). Columns are read selectively:
the per-row aggregates read a few scalar columns, and the per-patch data (heatmaps) is read only for the N most
suspicious rows, so a million-row output is summarised in seconds and little memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from gcage_fast.errors import OutputError
from gcage_fast.output.outdir import OutputDir, shard_rows

__all__ = ["ReportData", "collect", "HIST_BINS"]

HIST_BINS = 20
_SCALARS = ["input_id", "status", "error_code", "verdict", "verdict_source", "p_fake", "base_p_fake", "attribution",
            "flags", "evidence"]
_TOP = ["input_id", "path", "path_bytes", "member", "member_bytes", "width", "height", "p_fake", "base_p_fake",
        "attribution", "verdict", "patches", "flags", "format", "sha256"]


@dataclass
class ReportData:
    out: Path
    run: dict[str, Any]
    parts: list[Path]
    n_rows: int
    n_planned: int | None
    status: dict[str, int]
    verdicts: dict[str, int]
    error_codes: dict[str, int]  # code -> rows (status error or skipped)
    error_examples: dict[str, dict[str, Any]]  # code -> {status, path, detail}
    attribution: dict[str, int]
    flags: dict[str, int]
    hist_edges: np.ndarray
    hist_p_fake: np.ndarray
    hist_base_p_fake: np.ndarray
    top: list[dict[str, Any]] = field(default_factory=list)
    verdict_sources: dict[str, int] = field(default_factory=dict)  # ok rows by what decided the verdict
    #: (kind, claim, generator or "") -> images carrying such evidence, most first
    evidence: list[tuple[str, str, str, int]] = field(default_factory=list)
    evidence_examples: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # path, detail

    @property
    def parts_glob(self) -> str:
        return str(OutputDir(self.out).results_dir / "*.parquet")


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    vc = pc.value_counts(column)
    pairs = [(v.as_py() if v is not None else None, n) for v, n in
             zip(vc.field("values"), vc.field("counts").to_pylist())]
    return {("null" if k is None else str(k)): n for k, n in sorted(pairs, key=lambda p: (-p[1], str(p[0])))}


def _hist(values: pa.ChunkedArray, edges: np.ndarray) -> np.ndarray:
    arr = pc.drop_null(values).to_numpy(zero_copy_only=False).astype(np.float64)
    counts, _ = np.histogram(np.clip(arr, 0.0, 1.0), bins=edges)
    return counts


def _evidence_counts(t: pa.Table) -> list[tuple[str, str, str, int, int]]:
    """(kind, claim, generator, images, first row index) over the rows' evidence lists."""
    ev = t["evidence"].combine_chunks()
    flat = pc.list_flatten(ev)
    if len(flat) == 0:
        return []
    parents = pc.list_parent_indices(ev)
    gen = pc.fill_null(pc.struct_field(flat, "generator"), "")
    items = pa.table({"row": parents, "kind": pc.struct_field(flat, "kind"), "claim": pc.struct_field(flat, "claim"),
                      "generator": gen})
    grouped = items.group_by(["kind", "claim", "generator"]).aggregate([("row", "count_distinct"), ("row", "min")])
    out = [(k, c, g, n, first) for k, c, g, n, first in zip(*(grouped[name].to_pylist() for name in (
        "kind", "claim", "generator", "row_count_distinct", "row_min")))]
    return sorted(out, key=lambda r: (-r[3], r[0], r[1], r[2]))


def collect(out: str | Path, top_n: int = 50) -> ReportData:
    """Read the committed parts of ``out`` and aggregate them."""
    od = OutputDir(out)
    if not od.run_json.is_file():
        raise OutputError(f"{out} is not a scan output (no run.json)")
    run = od.read_run()
    plan = od.read_plan_info() if (od.plan_dir / "plan.json").is_file() else {"shards": []}
    parts = od.result_files(shard_rows(plan))
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    if not parts:
        empty = np.zeros(HIST_BINS, dtype=np.int64)
        return ReportData(Path(out), run, [], 0, run.get("plan", {}).get("n_inputs"), {}, {}, {}, {}, {}, {},
                          edges, empty, empty.copy())
    dataset = pads.dataset([str(p) for p in parts], format="parquet")
    t = dataset.to_table(columns=_SCALARS)
    bad = pc.is_in(t["status"], pa.array(["error", "skipped"]))
    errs = t.filter(bad)
    error_codes = _counts(errs["error_code"])
    examples: dict[str, dict[str, Any]] = {}
    if errs.num_rows:
        # One example per code: the first row of each code, read with its path and detail.
        first_ids = {}
        for code, iid in zip(errs["error_code"].to_pylist(), errs["input_id"].to_pylist()):
            first_ids.setdefault(code, iid)
        ex = dataset.to_table(columns=["input_id", "path", "member", "status", "error_code", "error_detail"],
                              filter=pc.field("input_id").isin(list(first_ids.values())))
        for row in ex.to_pylist():
            examples.setdefault(str(row["error_code"]), row)
    flags = _counts(pc.list_flatten(t["flags"])) if t.num_rows else {}
    ok = t.filter(pc.equal(t["status"], "ok"))
    data = ReportData(
        out=Path(out), run=run, parts=parts, n_rows=t.num_rows, n_planned=run.get("plan", {}).get("n_inputs"),
        status=_counts(t["status"]), verdicts=_counts(ok["verdict"]) if ok.num_rows else {},
        error_codes=error_codes, error_examples=examples,
        attribution=_counts(ok["attribution"]) if ok.num_rows else {}, flags=flags, hist_edges=edges,
        hist_p_fake=_hist(ok["p_fake"], edges), hist_base_p_fake=_hist(ok["base_p_fake"], edges),
    )
    data.verdict_sources = _counts(ok["verdict_source"]) if ok.num_rows else {}
    counted = _evidence_counts(t)
    data.evidence = [(k, c, g, n) for k, c, g, n, _ in counted]
    if counted:
        first = {(k, c, g): t["input_id"][i].as_py() for k, c, g, _, i in counted}
        ex = dataset.to_table(columns=["input_id", "path", "member", "evidence"],
                              filter=pc.field("input_id").isin(list(set(first.values())))).to_pylist()
        by_id = {r["input_id"]: r for r in ex}
        for key, iid in first.items():
            row = by_id.get(iid, {})
            detail = next((e["detail"] for e in row.get("evidence") or []
                           if (e["kind"], e["claim"], e["generator"] or "") == key), "")
            data.evidence_examples[key] = {"path": row.get("path"), "member": row.get("member"), "detail": detail}
    if ok.num_rows and top_n > 0:
        k = min(top_n, ok.num_rows)
        idx = pc.select_k_unstable(ok.select(["p_fake"]), k, [("p_fake", "descending")])
        ids = pc.take(ok["input_id"], idx).to_pylist()
        rows = dataset.to_table(columns=_TOP, filter=pc.field("input_id").isin(ids)).to_pylist()
        rows.sort(key=lambda r: (-(r["p_fake"] or 0.0), r["input_id"]))
        data.top = rows
    return data


def uncertain_threshold(run: dict[str, Any]) -> float | None:
    """The lower edge of the run's uncertain band, or None (no band, or not known). run.json's fingerprint names
    it when the scan recorded it; else the model.json the run names, when its sha256 is still the run's."""
    from gcage_fast.errors import ModelError
    from gcage_fast.models.spec import read_spec

    fingerprint = run.get("fingerprint") or {}
    if "uncertain_threshold" in fingerprint:
        return fingerprint["uncertain_threshold"]
    model = run.get("model") or {}
    if not model.get("path"):
        return None
    try:
        spec = read_spec(model["path"])
    except ModelError:
        return None
    return spec.uncertain_threshold if spec.sha256 == model.get("sha256") else None


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    """The run facts the report shows (model, backend, state, times, throughput of the last attempt)."""
    last = run.get("last_attempt") or {}
    scan_s = last.get("scan_s") or 0.0
    processed = last.get("processed") or 0
    patches = last.get("patches") or 0
    return {
        "run_id": run.get("run_id"),
        "state": run.get("state"),
        "started_at": run.get("started_at"),
        "finished_at": run.get("finished_at"),
        "attempts": run.get("attempts"),
        "model": (run.get("model") or {}).get("id"),
        "model_sha256": (run.get("model") or {}).get("sha256"),
        "backend": (run.get("engine") or {}).get("backend"),
        "cam": (run.get("fingerprint") or {}).get("cam_method"),
        "threshold": (run.get("fingerprint") or {}).get("threshold"),
        "uncertain_threshold": uncertain_threshold(run),
        "images_per_s": processed / scan_s if scan_s else None,
        "patches_per_s": patches / scan_s if scan_s else None,
        "last_attempt": last,
        "versions": run.get("versions") or {},
    }
