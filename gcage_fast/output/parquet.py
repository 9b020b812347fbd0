"""Sharded Parquet output with atomic commits (RELIABILITY.md §2.0).

For each shard: write ``results/shard-NNNNN.parquet.tmp-<run>`` (one row group, zstd), close it and check the
close, fsync, rename to the final name, fsync the directory, then write ``commits/shard-NNNNN.json`` last. A shard
without a valid marker is garbage and is redone on resume. A piece of a shard (``--commit-every``) is committed the
same way as ``shard-NNNNN-OOOOOO`` (OOOOOO: its first input within the shard).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gcage_fast.errors import OutputError
from gcage_fast.fsutil import atomic_write_json, fsync_dir, tmp_name
from gcage_fast.hashing import sha256_bytes, sha256_file
from gcage_fast.output.outdir import OutputDir
from gcage_fast.output.schema import ROW_SCHEMA, SCHEMA_VERSION

__all__ = ["commit_shard", "rows_table"]

FaultHook = Callable[[str, int], None]


def rows_table(rows: list[dict[str, Any]], schema: pa.Schema = ROW_SCHEMA) -> pa.Table:
    """Rows (dicts keyed by column) as a table of ``schema`` (:data:`ROW_SCHEMA`, and a table's kept columns)."""
    return pa.Table.from_pylist(rows, schema=schema)


def commit_shard(out: OutputDir, shard: int, rows: list[dict[str, Any]], *, run_id: str, model_sha256: str,
                 heatmaps: int = 0, fault: FaultHook | None = None, offset: int | None = None,
                 shard_rows: int | None = None, stats: dict[str, Any] | None = None,
                 schema: pa.Schema = ROW_SCHEMA) -> dict[str, Any]:
    """Write and publish one shard, or with ``offset`` the piece of it that starts at its input ``offset`` (of
    ``shard_rows``); returns the commit marker. ``stats`` (counts by status, wall time, images/s) go into it.
    ``schema``: the row schema of the scan (:func:`gcage_fast.output.schema.with_kept`).

    Raises:
        OutputError: the part cannot be written (disk full, permissions): a run-level failure.
    """
    table = rows_table(rows, schema)
    if out.remote:
        return _commit_object(out, shard, table, schema, fault, run_id=run_id, model_sha256=model_sha256,
                              heatmaps=heatmaps, offset=offset, shard_rows=shard_rows, stats=stats)
    final = out.part_path(shard, offset)
    tmp = tmp_name(final, run_id[:12])
    try:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        writer.write_table(table)  # one row group per shard
        if fault:
            fault("in_write", shard)
        writer.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if fault:
            fault("before_rename", shard)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if fault:
            fault("after_rename", shard)
        marker = _marker(shard, table, part=f"{final.parent.name}/{final.name}", size=final.stat().st_size,
                         sha256=sha256_file(final), run_id=run_id, model_sha256=model_sha256, heatmaps=heatmaps,
                         offset=offset, shard_rows=shard_rows, stats=stats)
        atomic_write_json(out.commit_path(shard, offset), marker, tag=run_id[:12])
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise OutputError(f"cannot write shard {shard} to {out.path}: {exc.strerror or exc}") from None
    if fault:
        fault("after_commit", shard)
    return marker


def _marker(shard: int, table: pa.Table, *, part: str | None, size: int, sha256: str, run_id: str,
            model_sha256: str, heatmaps: int, offset: int | None, shard_rows: int | None,
            stats: dict[str, Any] | None) -> dict[str, Any]:
    """The commit marker of one part (``part``: where it lies, relative to the output; None: added later)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "shard": shard,
        "rows": table.num_rows,
        **({"part": part} if part is not None else {}),
        "bytes": size,
        "sha256": sha256,
        "input_ids_sha256": sha256_bytes("\n".join(table.column("input_id").to_pylist()).encode()),
        "heatmaps": heatmaps,
        **({"piece": True, "offset": offset, "shard_rows": shard_rows} if offset is not None else {}),
        **({"stats": stats} if stats is not None else {}),
        "run_id": run_id,
        "model_sha256": model_sha256,
        "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _commit_object(out: Any, shard: int, table: pa.Table, schema: pa.Schema, fault: FaultHook | None, *,
                   run_id: str, model_sha256: str, heatmaps: int, offset: int | None, shard_rows: int | None,
                   stats: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`commit_shard` into an object store (:class:`gcage_fast.output.objectout.ObjectOutputDir`): the part
    is written in memory, uploaded under its attempt's own key, and the marker created only if none exists (the
    first attempt to commit a shard wins). The fault hook's phases are those of a local commit: ``in_write``,
    ``before_rename`` (the part is complete, not uploaded), ``after_rename`` (uploaded, no marker yet),
    ``after_commit``."""
    sink = pa.BufferOutputStream()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    writer.write_table(table)
    if fault:
        fault("in_write", shard)
    writer.close()
    data = sink.getvalue().to_pybytes()
    if fault:
        fault("before_rename", shard)
    marker = _marker(shard, table, part=None, size=len(data), sha256=sha256_bytes(data), run_id=run_id,
                     model_sha256=model_sha256, heatmaps=heatmaps, offset=offset, shard_rows=shard_rows, stats=stats)
    marker = out.commit_part(shard, offset, data, marker, fault)
    if fault:
        fault("after_commit", shard)
    return marker


def now_utc() -> datetime:
    return datetime.fromtimestamp(time.time(), tz=timezone.utc)
