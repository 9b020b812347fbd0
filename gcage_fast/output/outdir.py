"""The output directory of a scan: layout, lock, run.json, the frozen plan and the commit markers.

Layout (DESIGN.md §5)::

    OUT/run.json                    config, versions, model, backend, plan summary
    OUT/plan/plan.json              plan summary: inputs, shard size, sha256 of every plan shard
    OUT/plan/shard-NNNNN.arrow      the sorted inputs of each shard (Arrow IPC, so no *.parquet glob sees it)
    OUT/results/shard-NNNNN.parquet results, published by rename: the result set is OUT/results
    OUT/commits/shard-NNNNN.json    commit markers, written last
    OUT/results/shard-NNNNN-OOOOOO.parquet, OUT/commits/shard-NNNNN-OOOOOO.json
                                    a piece of a shard from its input OOOOOO on (scan --commit-every): a shard is
                                    committed whole, or as pieces that cover it in order
    OUT/heatmaps/xx/<input_id>.png  optional overlays (.jpg, .webp with scan --heatmaps jpeg, webp)
    OUT/.lock                       held (flock) while a scan writes

Outputs of schema versions 2 and 3 kept their results in ``OUT/parts/`` and their plan as ``*.parquet``; reading
(verify, report, eval) finds either.

Everything but the lock goes through a few primitives on paths relative to OUT (``_read``, ``_write``, ``_names``,
``_delete`` and the commit of a part): :class:`OutputDir` implements them on a local directory, and
:class:`gcage_fast.output.objectout.ObjectOutputDir` on an object-store prefix (``-o s3://bucket/prefix``);
:func:`gcage_fast.output.location.output_dir` gives the one for a path or URI.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from gcage_fast.errors import OutputError
from gcage_fast.fsutil import atomic_write_bytes, fsync_dir
from gcage_fast.hashing import sha256_bytes, sha256_file
from gcage_fast.output.schema import SCHEMA_VERSION, kept_field, plan_schema

__all__ = ["OutputDir", "PlanEntry", "PlanInput", "committed_rows", "json_bytes", "marker_stem", "part_stem",
           "read_parquet_bytes", "shard_name", "shard_rows"]

_OURS = ("run.json", "plan", "results", "parts", "commits", "heatmaps")
#: Where results live: ``results`` (schema 4 on), ``parts`` (older outputs).
RESULTS, LEGACY_RESULTS = "results", "parts"


class PlanInput(Protocol):
    """What the plan stores of one input (:class:`gcage_fast.ingest.sources.InputRef` is one): the output layer
    keeps no knowledge of how inputs are found."""

    input_id: str
    path: str
    path_bytes: bytes
    member: bytes | None
    member_index: int | None
    preset: tuple[str, str, str] | None
    flags: tuple[str, ...]
    sidecars: tuple[tuple[int, bytes], ...] | None  # a WebDataset sample's other members: (index, name)
    carried: dict[str, Any] | None  # the values of the kept columns of its table row (scan --from-table)
    object_info: dict[str, Any] | None  # an object in an object store: what identifies its version (size, ETag)


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def part_stem(shard: int, offset: int | None = None) -> str:
    """The name (without suffix) of a shard's part and marker: ``shard-NNNNN`` for a shard committed whole
    (``offset`` None), ``shard-NNNNN-OOOOOO`` for the piece of it that starts at its input ``offset``."""
    return shard_name(shard) if offset is None else f"{shard_name(shard)}-{offset:06d}"


def parse_stem(stem: str) -> tuple[int, int | None] | None:
    """``(shard, offset)`` of a :func:`part_stem` (offset None: whole), None for any other name."""
    fields = stem.split("-")
    if fields[0] != "shard" or len(fields) not in (2, 3) or not all(f.isdigit() for f in fields[1:]):
        return None
    return int(fields[1]), int(fields[2]) if len(fields) == 3 else None


@dataclass(frozen=True)
class PlanEntry:
    """One row of the frozen plan. ``sidecars``: a WebDataset sample's other members, ``(index, name)``, which the
    feed reads and sets ``sidecar`` from (the JSON of the row's column); ``carried``: the kept columns of its
    table row; ``object_info``: for an object in an object store, its size and ETag (version id, Last-Modified)
    when planned."""

    index: int
    input_id: str
    path: str
    path_bytes: bytes
    member_bytes: bytes | None
    preset: tuple[str, str, str] | None
    member_index: int | None = None
    flags: tuple[str, ...] = ()
    sidecars: tuple[tuple[int, bytes], ...] | None = None
    carried: dict[str, Any] | None = None
    sidecar: str | None = None
    object_info: dict[str, Any] | None = None


class OutputDir:
    """Owns one output directory for the duration of a scan (or a read-only check)."""

    #: Whether the output lies in an object store (no rename, no lock: see ObjectOutputDir).
    remote = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.uri: str | None = None  # the URI of an output in an object store (ObjectOutputDir)
        self._lock_fd: int | None = None

    @property
    def where(self) -> str:
        """The output as messages name it."""
        return str(self.path)

    def display(self, rel: str) -> str:
        """The file ``rel`` (relative to OUT) as messages name it."""
        return str(self.path / rel)

    # ---- the primitives (ObjectOutputDir implements them on an object store)
    def read_bytes(self, rel: str) -> bytes:
        """The bytes of the file ``rel`` (relative to OUT); OSError (FileNotFoundError) when it cannot be read."""
        return (self.path / rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes, tag: str = "w") -> None:
        """Publish ``data`` as the file ``rel`` whole: readers see the old file or the complete new one."""
        atomic_write_bytes(self.path / rel, data, tag=tag)

    def exists(self, rel: str) -> bool:
        return (self.path / rel).is_file()

    def has_run(self) -> bool:
        """Whether the output has a run.json (is a gcage_fast output)."""
        return self.run_json.is_file()

    def has_plan(self) -> bool:
        """Whether the plan is complete (plan.json is written last)."""
        return (self.plan_dir / "plan.json").is_file()

    # ---- paths
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def plan_dir(self) -> Path:
        return self.path / "plan"

    @property
    def results_dir(self) -> Path:
        """``OUT/results`` (or ``OUT/parts`` of an output written before schema 4): the result set, and nothing
        else in it is Parquet."""
        legacy = self.path / LEGACY_RESULTS
        if legacy.is_dir() and not (self.path / RESULTS).is_dir():
            return legacy
        return self.path / RESULTS

    def plan_path(self, shard: int) -> Path:
        arrow = self.plan_dir / f"{shard_name(shard)}.arrow"
        legacy = self.plan_dir / f"{shard_name(shard)}.parquet"
        return legacy if legacy.is_file() and not arrow.is_file() else arrow

    @property
    def commits_dir(self) -> Path:
        return self.path / "commits"

    @property
    def heatmaps_dir(self) -> Path:
        return self.path / "heatmaps"

    def part_path(self, shard: int, offset: int | None = None) -> Path:
        """The part of a shard committed whole, or of its piece from input ``offset`` on."""
        return self.results_dir / f"{part_stem(shard, offset)}.parquet"

    def commit_path(self, shard: int, offset: int | None = None) -> Path:
        return self.commits_dir / f"{part_stem(shard, offset)}.json"

    def heatmap_path(self, input_id: str, fmt: str = "png") -> Path:
        from gcage_fast.output.heatmaps import heatmap_path  # numpy and Pillow: only where overlays are written

        return self.path / heatmap_path(input_id, fmt)

    # ---- lifecycle
    def precheck(self, mode: str) -> None:
        """Cheap checks before any slow work (export, enumeration): raise OutputError for an output directory that
        cannot be created or written, or that a new scan may not use. Changes nothing on disk."""
        p = self.path
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"output {p} exists and is not a directory")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputError(f"cannot write to output directory {p}: Permission denied")
            if mode == "new" and any(child.name != ".lock" for child in p.iterdir()):
                raise OutputError(f"output directory {p} is not empty; use --resume to continue that scan or "
                                  "--overwrite to replace it")
            return
        ancestor = p.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise OutputError(f"cannot create output directory {p}: Not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise OutputError(f"cannot create output directory {p}: Permission denied")

    def open_for_scan(self, mode: str) -> bool:
        """Create/lock the directory for writing. Returns True when an existing run is resumed."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output directory {self.path}: {exc.strerror}") from None
        if not self.path.is_dir():
            raise OutputError(f"output {self.path} exists and is not a directory")
        self._lock()
        existing = [p.name for p in self.path.iterdir() if p.name != ".lock"]
        ours = self.run_json.is_file()
        if mode == "resume":
            if ours:
                return True
            if existing:
                raise OutputError(f"cannot resume: {self.path} holds files but no run.json (not a gcage_fast output)")
            return False
        if mode == "overwrite":
            if existing and not ours and not self.plan_dir.is_dir():
                raise OutputError(f"refusing to overwrite {self.path}: it is not a gcage_fast output directory")
            for name in _OURS:
                target = self.path / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
            return False
        if existing:
            raise OutputError(f"output directory {self.path} is not empty; use --resume to continue that scan or "
                              "--overwrite to replace it")
        return False

    def _lock(self) -> None:
        try:
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot write to output directory {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"another scan is writing to {self.path} (lock held)") from None
        self._lock_fd = fd

    def scan_running(self) -> bool:
        """Whether a scan holds this directory's lock now, found without taking it (the kernel's table of locks,
        /proc/locks; False where there is none), so a reader never delays a scan that is starting."""
        try:
            st = os.stat(self.path / ".lock")
            table = Path("/proc/locks").read_text()
        except OSError:
            return False
        for line in table.splitlines():
            fields = line.split()
            if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
                continue  # a waiter, or not a flock
            try:
                major, minor, inode = fields[5].split(":")
                if (int(major, 16), int(minor, 16), int(inode)) == (os.major(st.st_dev), os.minor(st.st_dev),
                                                                    st.st_ino):
                    return True
            except ValueError:
                continue
        return False

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def make_dirs(self) -> None:
        for d in (self.plan_dir, self.results_dir, self.commits_dir):
            d.mkdir(exist_ok=True)

    # ---- run.json
    def read_run(self) -> dict[str, Any]:
        try:
            return json.loads(self.read_bytes("run.json"))
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read {self.display('run.json')}: {exc}") from None

    def write_run(self, info: dict[str, Any]) -> None:
        self.write_bytes("run.json", json_bytes(info))

    # ---- plan
    def write_plan(self, refs: list[PlanInput], shard_size: int, tag: str,
                   kept: tuple[pa.Field, ...] = ()) -> dict[str, Any]:
        """Freeze the plan: one Arrow IPC file per shard, then plan.json (written last). ``kept``: the columns of
        the table the inputs came from whose values the refs carry."""
        self.make_plan_dir()
        schema = plan_schema(kept)
        shards = []
        for shard, start in enumerate(range(0, max(len(refs), 1), shard_size)):
            chunk = refs[start:start + shard_size]
            if not chunk:
                break
            table = pa.table({
                "index": list(range(start, start + len(chunk))),
                "input_id": [r.input_id for r in chunk],
                "path": [r.path for r in chunk],
                "path_bytes": [r.path_bytes for r in chunk],
                "member_bytes": [r.member for r in chunk],
                "member_index": [r.member_index for r in chunk],
                "flags": [list(r.flags) or None for r in chunk],
                "preset_status": [r.preset[0] if r.preset else None for r in chunk],
                "preset_code": [r.preset[1] if r.preset else None for r in chunk],
                "preset_detail": [r.preset[2] if r.preset else None for r in chunk],
                "sidecars": [None if r.sidecars is None else [{"index": i, "name": n} for i, n in r.sidecars]
                             for r in chunk],
                "object_info": [r.object_info for r in chunk],
                **({"carried": [r.carried for r in chunk]} if kept else {}),
            }, schema=schema)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
                writer.write_table(table)
            data = sink.getvalue().to_pybytes()
            self.write_bytes(f"plan/{shard_name(shard)}.arrow", data, tag=tag)
            shards.append({"shard": shard, "rows": len(chunk), "sha256": sha256_bytes(data)})
        info = {"schema_version": SCHEMA_VERSION, "n_inputs": len(refs), "shard_size": shard_size,
                "n_shards": len(shards), "shards": shards}
        self.write_bytes("plan/plan.json", json_bytes(info), tag=tag)
        return info

    def make_plan_dir(self) -> None:
        self.plan_dir.mkdir(exist_ok=True)

    def read_plan_info(self) -> dict[str, Any]:
        try:
            return json.loads(self.read_bytes("plan/plan.json"))
        except (OSError, ValueError) as exc:
            raise OutputError(f"cannot read the plan {self.display('plan/plan.json')}: {exc}") from None

    def _plan_shard_table(self, shard: int, expected_sha256: str | None) -> pa.Table:
        """The table of one plan shard, checked against its sha256 in plan.json (when given)."""
        path = self.plan_path(shard)
        if expected_sha256 is not None and (not path.is_file() or sha256_file(path) != expected_sha256):
            raise OutputError(f"plan file {path} is missing or does not match plan.json")
        return self._plan_table(path)

    def read_plan_shard(self, shard: int, expected_sha256: str | None = None) -> list[PlanEntry]:
        t = self._plan_shard_table(shard, expected_sha256).to_pydict()
        n = len(t["index"])
        sidecars, carried = t.get("sidecars", [None] * n), t.get("carried", [None] * n)  # schema 5 on
        objects = t.get("object_info", [None] * n)
        return [
            PlanEntry(t["index"][i], t["input_id"][i], t["path"][i], t["path_bytes"][i], t["member_bytes"][i],
                      None if t["preset_status"][i] is None
                      else (t["preset_status"][i], t["preset_code"][i], t["preset_detail"][i] or ""),
                      t["member_index"][i], tuple(t["flags"][i] or ()),
                      None if sidecars[i] is None else tuple((s["index"], s["name"]) for s in sidecars[i]),
                      carried[i], object_info=objects[i])
            for i in range(n)
        ]

    @staticmethod
    def _plan_table(path: Path) -> pa.Table:
        if path.suffix == ".parquet":  # an output written before schema 4
            return pq.read_table(path)
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()

    def _plan_schema(self, shard: int) -> pa.Schema | None:
        """The schema of one plan shard (None for a plan of schema 2 or 3, which kept no columns)."""
        path = self.plan_path(shard)
        if path.suffix == ".parquet":
            return None
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).schema

    def plan_kept(self, plan: dict[str, Any]) -> tuple[pa.Field, ...]:
        """The kept table columns a plan carries (scan --from-table), with their types, from its first shard; ()
        for a plan of no table (or of no inputs)."""
        if not plan["shards"]:
            return ()
        schema = self._plan_schema(int(plan["shards"][0]["shard"]))
        if schema is None:
            return ()
        index = schema.get_field_index("carried")
        return () if index < 0 else tuple(kept_field(f.name, f.type) for f in schema.field(index).type)

    # ---- commits
    def read_commit(self, shard: int, offset: int | None = None) -> dict[str, Any] | None:
        """The marker of a shard committed whole (or of one piece); None when it is missing or unreadable."""
        try:
            return json.loads(self.read_bytes(f"commits/{part_stem(shard, offset)}.json"))
        except (OSError, ValueError):
            return None

    def marker_names(self) -> list[str]:
        """The names of the files in OUT/commits."""
        try:
            return [e.name for e in os.scandir(self.commits_dir)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def markers(self) -> dict[int, list[tuple[str, dict[str, Any] | None]]]:
        """Every marker on disk, unchecked, by shard: ``(stem, marker or None when unreadable)``, in input order
        (a whole shard's marker first, then its pieces by offset)."""
        found: dict[int, list[tuple[int, str, dict[str, Any] | None]]] = {}
        for name in self.marker_names():
            parsed = parse_stem(name[:-5]) if name.endswith(".json") else None
            if parsed is None:
                continue
            try:
                marker = json.loads(self.read_bytes(f"commits/{name}"))
            except (OSError, ValueError):
                marker = None
            found.setdefault(parsed[0], []).append((-1 if parsed[1] is None else parsed[1], name[:-5], marker))
        return {shard: [(stem, m) for _, stem, m in sorted(items, key=lambda t: t[0])]
                for shard, items in found.items()}

    def committed_parts(self, shard_rows: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
        """For each shard of the plan (``{shard: rows}``), the markers of what is committed of it, in input order:
        the shard whole, or its pieces from input 0 on while each starts where the last ended. A marker counts only
        when its part matches the marker's sha256; shards with nothing committed are left out."""
        done: dict[int, list[dict[str, Any]]] = {}
        for shard, items in self.markers().items():
            if shard not in shard_rows:
                continue
            chain: list[dict[str, Any]] = []
            end = 0
            for stem, marker in items:
                if marker is None:
                    continue
                whole = parse_stem(stem)[1] is None  # type: ignore[index]
                if whole and self._part_matches(stem, marker):
                    chain, end = [marker], shard_rows[shard]
                    break
                if not whole and marker.get("offset") == end and self._part_matches(stem, marker):
                    chain.append(marker)
                    end += int(marker.get("rows", 0))
            if chain:
                done[shard] = chain
        return done

    def _part_matches(self, stem: str, marker: dict[str, Any]) -> bool:
        part = self.results_dir / f"{stem}.parquet"
        return part.is_file() and sha256_file(part) == marker.get("sha256")

    def part_ref(self, stem: str, marker: dict[str, Any] | None) -> Any:
        """Where the part of the marker ``stem`` lies (what :meth:`read_result` and :meth:`part_bytes` take)."""
        return self.results_dir / f"{stem}.parquet"

    def part_name(self, ref: Any) -> str:
        """A part as messages name it."""
        return ref.name

    def part_bytes(self, ref: Any) -> bytes | None:
        """The bytes of a part, None when it does not exist."""
        try:
            return ref.read_bytes()
        except FileNotFoundError:
            return None

    def read_result(self, ref: Any, columns: list[str] | None = None) -> pa.Table:
        """The rows of a committed part (a ref from :meth:`result_files`)."""
        return pq.read_table(ref, columns=columns)

    def result_names(self, ref: Any) -> list[str]:
        """The column names of a committed part."""
        return pq.ParquetFile(ref).schema_arrow.names

    def leftovers(self, expected: set[str]) -> list[str]:
        """What a complete output should not hold: temp files in OUT/results and OUT/commits, and parts not in
        ``expected`` (names), one line each, as verify lists its problems."""
        found = []
        for d in (self.results_dir, self.commits_dir):
            if d.is_dir():
                for p in d.iterdir():
                    if ".tmp-" in p.name:
                        found.append(f"temporary file left behind: {p.relative_to(self.path)}")
                    elif d == self.results_dir and p.name not in expected:
                        found.append(f"unplanned part: {p.relative_to(self.path)}")
        return found

    def write_heatmap(self, image: Any, input_id: str, fmt: str, tag: str, quality: int) -> None:
        """Write the overlay of one input (OSError when it cannot be written)."""
        from gcage_fast.output.heatmaps import write_heatmap_atomic  # Pillow: only where overlays are written

        write_heatmap_atomic(image, self.heatmap_path(input_id, fmt), tag=tag, fmt=fmt, quality=quality)

    def committed_shards(self, shard_rows: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
        """The shards of :meth:`committed_parts` that are committed completely."""
        return {shard: chain for shard, chain in self.committed_parts(shard_rows).items()
                if committed_rows(chain) == shard_rows[shard]}

    def result_files(self, shard_rows: dict[int, int]) -> list[Any]:
        """The committed parts (whole shards and pieces), in plan order: every committed row, once (local paths;
        keys of an object store; :meth:`read_result` reads either)."""
        return [self._committed_ref(shard, m) for shard, chain in sorted(self.committed_parts(shard_rows).items())
                for m in chain]

    def _committed_ref(self, shard: int, marker: dict[str, Any]) -> Any:
        return self.path / marker["part"] if "part" in marker else self.part_path(shard)

    def remove_uncommitted(self, keep: set[str]) -> int:
        """Delete temp files, and the parts and markers whose name (:func:`part_stem`) is not in ``keep``.
        Returns the number removed."""
        removed = 0
        heat_dirs = [d for d in self.heatmaps_dir.iterdir() if d.is_dir()] if self.heatmaps_dir.is_dir() else []
        for d in (self.results_dir, self.commits_dir, self.plan_dir, *heat_dirs):
            if not d.is_dir():
                continue
            for p in d.iterdir():
                if ".tmp-" in p.name:
                    p.unlink(missing_ok=True)
                    removed += 1
        for d, suffix in ((self.results_dir, ".parquet"), (self.commits_dir, ".json")):
            if not d.is_dir():
                continue
            for p in d.iterdir():
                stem = p.name[: -len(suffix)] if p.name.endswith(suffix) else None
                if stem and parse_stem(stem) is not None and stem not in keep:
                    p.unlink(missing_ok=True)
                    removed += 1
        if removed:
            fsync_dir(self.path)
        return removed


def read_parquet_bytes(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """The table of a Parquet file held in memory. Through ParquetFile: ``pq.read_table`` of a BufferReader
    (pyarrow 26) leaves a thread that aborts the interpreter at exit now and then ("terminate called without an
    active exception")."""
    return pq.ParquetFile(pa.BufferReader(data)).read(columns=columns)


def json_bytes(obj: Any) -> bytes:
    """The bytes run.json, plan.json and the markers are written as: indented, key-sorted JSON."""
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def committed_rows(chain: list[dict[str, Any]]) -> int:
    """Inputs covered by a shard's markers (:meth:`OutputDir.committed_parts`)."""
    return sum(int(m.get("rows", 0)) for m in chain)


def marker_stem(marker: dict[str, Any]) -> str:
    """The :func:`part_stem` a marker was written for."""
    return part_stem(int(marker["shard"]), marker.get("offset") if marker.get("piece") else None)


def shard_rows(plan: dict[str, Any]) -> dict[int, int]:
    """``{shard: rows}`` of a plan.json."""
    return {int(s["shard"]): int(s["rows"]) for s in plan["shards"]}
