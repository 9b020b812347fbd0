"""``scan --skip-known OUT_OLD``: what earlier outputs already scored, frozen at plan time.

For every row of an old output with status ok and a sha256, the set keeps a pointer to that row: the old output
(absolute path), its run_id, the row's input_id and locator (built from path and member for outputs of schema v2
and v3, which have no locator column). A row that was itself skipped as known passes on what it points at, so a
pointer always leads to a scored row. The first output named wins for a sha256 found in several, then the first
result file, then the first row.

The set is written once into the new output, ``OUT/plan/known.arrow`` (:mod:`gcage_fast.ingest.known` reads it in
the decode workers), and a resume uses that file, not the old outputs again. What identifies it (its sha256, its
entries, the old outputs and their run_ids) is part of the resume fingerprint (:func:`fingerprint`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gcage_fast.config import ScanConfig
from gcage_fast.errors import ConfigError, OutputError
from gcage_fast.fsutil import atomic_write_bytes
from gcage_fast.hashing import sha256_bytes, sha256_file
from gcage_fast.ingest.known import KNOWN_CODE, POINTER_FIELDS, known_path
from gcage_fast.ingest.sources import display_path
from gcage_fast.output.location import is_uri
from gcage_fast.output.outdir import OutputDir, shard_rows
from gcage_fast.scanning.locator import locator

__all__ = ["KNOWN_SCHEMA", "build", "fingerprint", "freeze"]

KNOWN_SCHEMA = pa.schema([pa.field("sha256", pa.string(), nullable=False)]
                         + [pa.field(name, pa.string(), nullable=False) for name in POINTER_FIELDS])
_META = b"gcage_fast.known"
_COLUMNS = ("input_id", "status", "error_code", "sha256", "path", "member", "locator", "known")

#: The set built by :func:`fingerprint` for the scan into an output, until :func:`freeze` writes it there (one:
#: a process plans one scan at a time). Keyed by (output, sha256), so a set is never written into another scan.
_pending: dict[tuple[str, str], bytes] = {}


def _name(raw: str) -> str:
    return display_path(os.fsencode(raw))


def _run_id(raw: str, own_output: str) -> str:
    """The run_id of the old output ``raw``; ConfigError when it is not a gcage_fast output."""
    if os.path.realpath(raw) == os.path.realpath(own_output):
        raise ConfigError(f"--skip-known {_name(raw)} is the output of this scan; name an earlier output")
    run_json = Path(raw) / "run.json"
    if not run_json.is_file():
        raise ConfigError(f"--skip-known {_name(raw)}: not a gcage_fast output directory (no run.json)")
    try:
        run_id = json.loads(run_json.read_text()).get("run_id")
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--skip-known {_name(raw)}: cannot read its run.json ({exc})") from None
    if not isinstance(run_id, str) or not run_id:
        raise ConfigError(f"--skip-known {_name(raw)}: its run.json has no run_id (not a gcage_fast output)")
    return run_id


def _pointers(output: str, run_id: str) -> list[tuple[str, dict[str, str]]]:
    """``(sha256, pointer)`` for the rows of one old output that the set keeps, in file and row order."""
    found = []
    od = OutputDir(output)
    committed = od.result_files(shard_rows(od.read_plan_info())) if (od.plan_dir / "plan.json").is_file() else []
    for part in committed:  # committed rows only: a part without a valid marker may still be redone
        names = pq.ParquetFile(part).schema_arrow.names
        t = pq.read_table(part, columns=[c for c in _COLUMNS if c in names]).to_pydict()
        n = len(t["input_id"])
        old = t.get("known", [None] * n)
        where = t.get("locator") or [locator(p, m) for p, m in zip(t["path"], t["member"])]
        for i in range(n):
            sha = t["sha256"][i]
            if sha is None:
                continue
            if t["status"][i] == "ok":
                found.append((sha, {"output": output, "run_id": run_id, "input_id": t["input_id"][i],
                                    "locator": where[i]}))
            elif old[i] is not None and t["error_code"][i] == KNOWN_CODE:
                found.append((sha, {k: old[i][k] for k in POINTER_FIELDS}))
    return found


def build(outputs: list[str], run_ids: list[str]) -> bytes:
    """The frozen set of ``outputs`` (absolute paths) as the bytes of ``known.arrow``."""
    first: dict[str, dict[str, str]] = {}
    for output, run_id in zip(outputs, run_ids):
        for sha, pointer in _pointers(output, run_id):
            first.setdefault(sha, pointer)
    keys = sorted(first)
    columns = {"sha256": keys, **{f: [first[k][f] for k in keys] for f in POINTER_FIELDS}}
    meta = json.dumps({"outputs": outputs, "run_ids": run_ids}).encode()
    schema = KNOWN_SCHEMA.with_metadata({_META: meta})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(pa.table(columns, schema=schema))
    return sink.getvalue().to_pybytes()


def _identity(outputs: list[str], data: bytes) -> dict[str, Any]:
    reader = pa.ipc.open_file(pa.BufferReader(data))
    meta = json.loads(reader.schema.metadata[_META])
    entries = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    return {"entries": entries, "outputs": outputs, "run_ids": meta["run_ids"], "sha256": sha256_bytes(data)}


def fingerprint(config: ScanConfig) -> dict[str, Any] | None:
    """What identifies the known set of this scan (None without ``--skip-known``). A resume reads the set frozen
    in its output; otherwise the old outputs are checked (ConfigError for one that is not a gcage_fast output,
    before anything is written) and read, and the set is kept for :func:`freeze`."""
    if not config.skip_known:
        return None
    if is_uri(config.output):
        raise ConfigError(f"--skip-known is not supported with an output in an object store ({config.output}) yet: "
                          "scan into a local directory, or scan without --skip-known")
    outputs = [os.path.abspath(p) for p in config.skip_known]
    frozen = known_path(OutputDir(config.output))
    if config.mode == "resume" and frozen.is_file():
        return _identity(outputs, frozen.read_bytes())
    data = build(outputs, [_run_id(p, config.output) for p in config.skip_known])
    identity = _identity(outputs, data)
    _pending.clear()
    _pending[(os.path.abspath(config.output), identity["sha256"])] = data
    return identity


def freeze(config: ScanConfig, out: OutputDir, identity: dict[str, Any] | None, tag: str) -> None:
    """Write the set :func:`fingerprint` identified into ``out`` (once: before the plan, so a plan made with
    ``--skip-known`` always has its set).

    Raises:
        ConfigError: the old outputs changed between the first attempt and this one, before the set was written.
        OutputError: the frozen set on disk is not the one the fingerprint names.
    """
    if identity is None:
        return
    path = known_path(out)
    if path.is_file():
        if sha256_file(path) != identity["sha256"]:
            raise OutputError(f"{path} is not the known set this scan was planned with; scan again with --overwrite")
        return
    data = _pending.pop((os.path.abspath(config.output), identity["sha256"]), None)
    if data is None:
        data = build(identity["outputs"], identity["run_ids"])
        if sha256_bytes(data) != identity["sha256"]:
            raise ConfigError("the outputs named by --skip-known changed since this scan started; scan again")
    out.plan_dir.mkdir(exist_ok=True)
    atomic_write_bytes(path, data, tag=tag)
