"""The frozen set of known content (``scan --skip-known``) as the decode workers use it.

``OUT/plan/known.arrow`` (Arrow IPC, sorted by ``sha256``) holds, for each sha256 an earlier output already scored,
a pointer to that row: ``output``, ``run_id``, ``input_id``, ``locator``. It is written once, at plan time, by
:mod:`gcage_fast.scanning.known`; a task carries only a :class:`KnownRef` (the file's path and sha256), and each
worker process loads the file once and keeps it (:func:`lookup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcage_fast.errors import OutputError
from gcage_fast.hashing import sha256_bytes, sha256_file
from gcage_fast.output.outdir import OutputDir

__all__ = ["KNOWN_CODE", "KNOWN_FILE", "KnownRef", "known_detail", "known_path", "lookup", "ref_for"]

KNOWN_FILE = "known.arrow"
#: The error_code of a row skipped because its content was scored before.
KNOWN_CODE = "known.sha256"
#: The pointer's fields, in the order of the file's columns after ``sha256`` (and of the row's ``known`` struct).
POINTER_FIELDS = ("output", "run_id", "input_id", "locator")


@dataclass(frozen=True)
class KnownRef:
    """Where a worker finds the frozen set, and the sha256 the file must have (picklable, small)."""

    path: str
    sha256: str


def known_path(out: OutputDir) -> Path:
    return out.plan_dir / KNOWN_FILE


def ref_for(out: OutputDir) -> KnownRef:
    """The :class:`KnownRef` of ``out``'s frozen set.

    Raises:
        OutputError: the set is missing (a plan made with ``--skip-known`` always has one).
    """
    path = known_path(out)
    if not path.is_file():
        raise OutputError(f"{path} is missing: the plan of this scan is incomplete; scan again with --overwrite")
    return KnownRef(str(path), sha256_file(path))


def known_detail(pointer: dict[str, Any]) -> str:
    """The error_detail of a known row: where the content was scored before."""
    return f"already scored as {pointer['locator']} in {pointer['output']} (run {pointer['run_id']})"


class _Index:
    """The set in memory: the sorted sha256 values as one fixed-width array (binary search), and the table."""

    def __init__(self, data: bytes) -> None:
        import pyarrow as pa

        self.table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        self.keys = np.array(self.table.column("sha256").to_pylist(), dtype="S64")

    def get(self, sha256: str) -> dict[str, Any] | None:
        key = sha256.encode()
        i = int(np.searchsorted(self.keys, key))
        if i >= len(self.keys) or self.keys[i] != key:
            return None
        row = self.table.slice(i, 1).to_pylist()[0]
        return {k: row[k] for k in POINTER_FIELDS}


_loaded: tuple[KnownRef, _Index] | None = None  # this process's set (one scan at a time)


def lookup(ref: KnownRef, sha256: str) -> dict[str, Any] | None:
    """The pointer for ``sha256`` in the set ``ref`` names, or None. Loads the set on first use in this process.

    Raises:
        OutputError: the file no longer has the sha256 the plan recorded.
    """
    global _loaded
    if _loaded is None or _loaded[0] != ref:
        data = Path(ref.path).read_bytes()
        if sha256_bytes(data) != ref.sha256:
            raise OutputError(f"{ref.path} changed after the plan was made")
        _loaded = (ref, _Index(data))
    return _loaded[1].get(sha256)
