"""``gcage-fast verify``: check the ledger invariant of an output directory.

For the frozen plan, every shard must be committed (whole, or as pieces that cover it in order), each part
readable, its sha256 and row count equal to its commit marker, and the rows must be exactly the planned inputs of
that shard, in plan order (no gaps, no duplicates, no strangers). Scores must be null unless ``status = ok``.
The columns are those of the output's schema version, followed, for a scan of a table, by exactly the kept
columns its run.json lists (``kept_columns``: name and type).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from gcage_fast.errors import OutputError
from gcage_fast.hashing import sha256_bytes
from gcage_fast.output.location import output_dir
from gcage_fast.output.outdir import OutputDir, parse_stem, part_stem, read_parquet_bytes
from gcage_fast.output.schema import ROW_SCHEMAS, SCORE_COLUMNS

__all__ = ["VerifyReport", "verify_output"]


@dataclass
class VerifyReport:
    path: str
    n_planned: int = 0
    n_rows: int = 0
    n_shards: int = 0
    n_committed: int = 0
    status: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "n_planned": self.n_planned, "n_rows": self.n_rows,
                "n_shards": self.n_shards, "n_committed": self.n_committed, "status": self.status,
                "problems": self.problems}


def _kept(info: dict) -> list[tuple[str, str]]:
    """``(name, type)`` of the kept columns run.json lists (scan --from-table)."""
    return [(str(c.get("name")), str(c.get("type"))) for c in info.get("kept_columns") or []]


def _schema_matches(schema: pa.Schema, expected: pa.Schema, kept: list[tuple[str, str]]) -> bool:
    """The standard columns of ``expected``, then exactly the ``kept`` ones (nullable, of the listed types)."""
    n = len(expected)
    if len(schema) != n + len(kept) or not pa.schema(list(schema)[:n]).equals(expected, check_metadata=False):
        return False
    return all(f.name == name and str(f.type) == typ and f.nullable for f, (name, typ) in zip(list(schema)[n:], kept))


def _checked_part(out: OutputDir, shard: int, ref: Any, marker: dict | None, problem,
                  kept: list[tuple[str, str]]) -> pa.Table | None:
    """The rows of one committed part (``ref``: :meth:`OutputDir.part_ref`), or None (and a problem) when the part
    does not hold what its marker says. ``kept``: the kept columns the rows must have after the standard ones."""
    name = out.part_name(ref)
    if marker is None:
        problem(f"shard {shard}: the commit marker of {name} is unreadable")
        return None
    data = out.part_bytes(ref)
    if data is None:
        problem(f"shard {shard}: committed but {name} is missing")
        return None
    if sha256_bytes(data) != marker.get("sha256"):
        problem(f"shard {shard}: {name} does not match the sha256 in its commit marker")
        return None
    try:
        table = read_parquet_bytes(data)
    except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt part
        problem(f"shard {shard}: {name} is unreadable: {exc}")
        return None
    version = int((table.schema.metadata or {}).get(b"gcage_fast.schema_version", b"0") or 0)
    expected = ROW_SCHEMAS.get(version)
    if expected is None or not _schema_matches(table.schema, expected, kept):
        known = ", ".join(f"v{v}" for v in ROW_SCHEMAS)
        also = f", plus the kept columns {', '.join(n for n, _ in kept)}" if kept else ""
        problem(f"shard {shard}: schema differs from output schema v{version}{also} (this version reads {known})")
        return None
    return table


def verify_output(path: str | Path, max_problems: int = 50) -> VerifyReport:
    """Check an output directory (or an output in an object store, ``s3://bucket/prefix``). Raises OutputError only
    when it is not a gcage_fast output at all (or the store cannot be read)."""
    out = output_dir(path)
    report = VerifyReport(out.where)
    if not out.has_run():
        raise OutputError(f"{out.where} is not a gcage_fast output directory (no run.json)")
    plan = out.read_plan_info()
    kept = _kept(out.read_run())
    report.n_planned = plan["n_inputs"]
    report.n_shards = plan["n_shards"]
    status: Counter = Counter()
    problems = report.problems

    def problem(msg: str) -> None:
        if len(problems) < max_problems:
            problems.append(msg)
        elif len(problems) == max_problems:
            problems.append("... (more problems not listed)")

    expected_names = set()
    markers = out.markers()
    for s in plan["shards"]:
        shard = s["shard"]
        expected_names.add(out.part_name(out.part_ref(part_stem(shard), None)))
        try:
            entries = out.read_plan_shard(shard, s["sha256"])
        except (OutputError, OSError) as exc:
            problem(f"shard {shard}: plan unreadable: {exc}")
            continue
        items = markers.get(shard, [])
        if not items:
            problem(f"shard {shard}: not committed (scan incomplete; run it again with --resume)")
            continue
        end, complete = 0, True
        for stem, marker in items:
            ref = out.part_ref(stem, marker)
            name = out.part_name(ref)
            expected_names.add(name)
            piece_at = parse_stem(stem)[1]  # type: ignore[index]
            whole, offset = piece_at is None, piece_at or 0
            table = _checked_part(out, shard, ref, marker, problem, kept)
            if table is None:
                complete = False
                continue
            if offset != end:
                problem(f"shard {shard}: {name} starts at input {offset}, the parts before it end at {end}")
            planned = [e.input_id for e in (entries if whole else entries[offset:offset + table.num_rows])]
            report.n_rows += table.num_rows
            end = len(entries) if whole else offset + table.num_rows
            if table.num_rows != marker.get("rows") or (whole and table.num_rows != len(entries)):
                problem(f"shard {shard}: {table.num_rows} rows, marker says {marker.get('rows')}, "
                        f"plan has {len(entries)}")
            ids = table.column("input_id").to_pylist()
            if ids != planned:
                dup = [i for i, c in Counter(ids).items() if c > 1]
                missing = set(planned) - set(ids)
                extra = set(ids) - set(planned)
                problem(f"shard {shard}: rows do not match the plan ({len(missing)} missing, {len(extra)} "
                        f"unplanned, {len(dup)} duplicated)")
            status.update(table.column("status").to_pylist())
            not_ok = pc.not_equal(table.column("status"), "ok")
            for col in (c for c in SCORE_COLUMNS if c in table.column_names):
                leaked = pc.sum(pc.and_(not_ok, pc.is_valid(table.column(col)))).as_py() or 0
                if leaked:
                    problem(f"shard {shard}: {leaked} rows with status != ok have a non-null {col}")
        if complete and end != len(entries):
            problem(f"shard {shard}: {end} of its {len(entries)} inputs committed (scan incomplete; run it again "
                    "with --resume)" if end < len(entries) else
                    f"shard {shard}: {end} rows, plan has {len(entries)}")
        elif complete:
            report.n_committed += 1
    for found in out.leftovers(expected_names):
        problem(found)
    report.status = dict(status)
    return report
