"""Tables as inputs (``scan --from-table FILE --path-column COL [--keep-columns a,b]``): one input per row.

A table is a Parquet file (``.parquet``, ``.pq``), a CSV file with a header line (``.csv``) or JSON Lines
(``.jsonl``, ``.ndjson``), chosen by its suffix. Its path column holds a local path per row, as text or as raw
bytes (a Parquet binary column keeps names that are not UTF-8), relative paths resolved against the working
directory as ``--from-list`` does. The kept columns go into every result row of that table row, under their own
names and with the table's own types (a CSV column's type is what pyarrow infers from it; dictionary-encoded
columns are decoded to their values). gcage_fast.ingest.sources turns each row into its inputs, in table order.

Problems of the table itself (unreadable, of no known format, a named column missing) raise InputError before
anything is written; a kept column named like a result column is a ConfigError (:func:`check_keep_columns`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from gcage_fast.errors import ConfigError, InputError
from gcage_fast.output.schema import ROW_SCHEMA, kept_field
from gcage_fast.text import printable

__all__ = ["TABLE_FORMATS", "TableInputs", "check_keep_columns", "read_table", "table_format"]

#: Table formats by file suffix.
TABLE_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: How many of a table's column names an error message lists.
_NAMES_SHOWN = 20


@dataclass(frozen=True)
class TableInputs:
    """What a scan takes from a table: each row's path (None: the row has none) and the values of its kept
    columns, and those columns (``pyarrow.Field``, nullable, the table's types)."""

    paths: list[bytes | None]
    values: list[dict[str, Any]]
    kept: tuple[pa.Field, ...]


def _name(path: str) -> str:
    return printable(path)


def table_format(path: str) -> str:
    """``parquet``, ``csv`` or ``jsonl``, by the suffix of ``path``.

    Raises:
        InputError: another suffix.
    """
    fmt = TABLE_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise InputError(f"unsupported table {_name(path)}: name a .parquet, .csv or .jsonl file (by its suffix)")
    return fmt


def check_keep_columns(names: Sequence[str]) -> None:
    """Refuse kept columns that would replace a result column, or that are named twice.

    Raises:
        ConfigError: with the first such name.
    """
    seen: set[str] = set()
    for name in names:
        if name in ROW_SCHEMA.names:
            raise ConfigError(f"--keep-columns {name}: the results already have a column {name}; rename it in the "
                              "table")
        if name in seen:
            raise ConfigError(f"--keep-columns names {name} twice")
        seen.add(name)


def _read(path: str, fmt: str, path_column: str) -> pa.Table:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if fmt == "csv":
        import pyarrow.csv as csv

        # the path column as text, whatever it looks like (a column of numbered files is not an int column)
        return csv.read_csv(path, convert_options=csv.ConvertOptions(column_types={path_column: pa.string()}))
    import pyarrow.json as pj

    return pj.read_json(path)


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column as its values."""
    if not pa.types.is_dictionary(column.type):
        return column
    return pa.chunked_array([c.dictionary_decode() for c in column.chunks], column.type.value_type)


def _paths(column: pa.ChunkedArray, path_column: str, where: str) -> list[bytes | None]:
    typ = column.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return [None if v is None else v.encode("utf-8") for v in column.to_pylist()]
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return column.to_pylist()
    raise InputError(f"--path-column {path_column} of {where} holds {typ} values, not paths (text or bytes)")


def read_table(path: str, path_column: str, keep_columns: Sequence[str] = ()) -> TableInputs:
    """The paths and kept values of every row of the table ``path``, in table order.

    Raises:
        InputError: the table cannot be read, has no known format, or lacks ``path_column`` or a kept column.
    """
    fmt = table_format(path)
    where = _name(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read table {where}: {exc.strerror or exc}") from None
    try:
        table = _read(path, fmt, path_column)
    except (pa.ArrowException, OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot read table {where} as {fmt}: {printable(reason)[:300]}") from None
    names = table.column_names
    shown = ", ".join(names[:_NAMES_SHOWN]) + (", ..." if len(names) > _NAMES_SHOWN else "")
    if path_column not in names:
        raise InputError(f"--path-column {path_column}: {where} has no such column (its columns: {shown})")
    missing = [c for c in keep_columns if c not in names]
    if missing:
        raise InputError(f"--keep-columns {', '.join(missing)}: {where} has no such column (its columns: {shown})")
    kept = [_decoded(table.column(c)) for c in keep_columns]
    fields = tuple(kept_field(c, col.type) for c, col in zip(keep_columns, kept))
    values = pa.table(kept, schema=pa.schema(fields)).to_pylist() if fields else [{} for _ in range(len(table))]
    return TableInputs(_paths(_decoded(table.column(path_column)), path_column, where), values, fields)
