"""The feed of a scan: plan entries in plan order, turned into decode tasks or into rows known without decoding.

One feed may cover several plan shards, one after the other, so that a single stream of decode tasks keeps the
workers busy across shard boundaries (the local runner); each item is tagged with its shard.

Entries with a preset outcome (special files, links, archive problems) become rows at once. Archive members are
read here, in plan order, with one archive open at a time; their bytes travel to the decode workers inside the
task (members are never extracted to disk). The sidecars of a WebDataset sample are read here too, with its image,
in archive order, and become the entry's ``sidecar`` JSON (:func:`gcage_fast.ingest.webdataset.sidecar_json`);
they never reach a worker.

An object in an object store (gcage_fast.ingest.objectstore) is read here too, whole, and its bytes travel in the
task like a member's; an archive object is read whole once, and its members from memory. The object must still
be the one planned (its size and ETag, ``object_info`` in the plan), else its rows are ``fs.changed``. Each read
is a request that waits on the network, so plain objects are read ahead on a few threads (at most
:data:`READAHEAD` objects and :data:`READAHEAD_BYTES` of their planned bytes), and handed on in plan order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol

from gcage_fast.ingest import objectstore
from gcage_fast.ingest.archives import MemberReader
from gcage_fast.config import ScanConfig
from gcage_fast.evidence.collect import options_for
from gcage_fast.ingest.decode import DecodeFailure
from gcage_fast.ingest.known import ref_for
from gcage_fast.output.outdir import OutputDir, PlanEntry
from gcage_fast.ingest.perturb import Perturbation
from gcage_fast.ingest.prepare import Prepared, PrepareTask
from gcage_fast.ingest.webdataset import SIDECAR_MAX_BYTES, sidecar_json

__all__ = ["InputFeed", "PlanShard", "READAHEAD", "READAHEAD_BYTES"]

#: Plain objects read ahead of the one handed on (on as many threads), and at most this many of their bytes.
READAHEAD = 8
READAHEAD_BYTES = 256 * 2**20


class PlanShard(Protocol):
    """A shard of the plan: its number and the sha256 of its plan file (e.g. gcage_fast.scanning.context.ShardSpec)."""

    @property
    def shard(self) -> int: ...

    @property
    def sha256(self) -> str: ...

    @property
    def start(self) -> int: ...  # entries before it are committed already


class InputFeed:
    """Iterates ``((shard, entry), task, ready)`` over ``shards`` in order, for :meth:`SupervisedPool.imap`."""

    def __init__(self, out: OutputDir, shards: Sequence[PlanShard], config: ScanConfig, top_k: int,
                 preview_max: int, perturb: Perturbation | None, full_image: bool = False) -> None:
        self.out = out
        self.full_image = full_image
        self.shards = shards
        self.config = config
        self.top_k = top_k
        self.preview_max = preview_max
        self.perturb = perturb
        self.evidence = options_for(config)
        self.known = ref_for(out) if config.skip_known else None  # the set frozen with the plan
        self._reader: MemberReader | _Unreadable | None = None

    def _read(self, path: bytes, index: int, name: bytes, max_bytes: int | None = None,
              info: dict | None = None) -> bytes:
        if self._reader is None or self._reader.path != path:
            self.close()
            self._reader = self._open(path, info)
        return self._reader.read(index, name, max_bytes)

    def _open(self, path: bytes, info: dict | None) -> MemberReader | _Unreadable:
        """The reader of an archive: a local file, or an object (``info``: as planned) read whole."""
        if info is None:
            return MemberReader(path, self.config.limits)
        try:
            return MemberReader(path, self.config.limits, self._object(path, info))
        except DecodeFailure as f:
            return _Unreadable(path, f)

    def _object(self, path: bytes, info: dict) -> bytes:
        """The bytes of the planned object ``path`` (DecodeFailure: fs.changed, fs.vanished, limit.bytes, ...)."""
        return objectstore.read(objectstore.parse(path), self.config.limits.max_bytes,
                                objectstore.ObjectStat.from_dict(info))

    def _member(self, entry: PlanEntry) -> bytes:
        return self._read(entry.path_bytes, entry.member_index or 0, entry.member_bytes or b"",
                          info=entry.object_info)

    def _sample(self, entry: PlanEntry) -> tuple[PlanEntry, bytes | None]:
        """A WebDataset sample's sidecars (and its image, unless the plan knows its outcome), read in archive
        order: the entry with its ``sidecar`` set and flags added, and the image's bytes. DecodeFailure as the
        members' reads raise it; a sidecar over the size limit is no failure."""
        image = entry.preset is None
        reads = sorted([*((i, n, False) for i, n in entry.sidecars or ()),
                        *([(entry.member_index or 0, entry.member_bytes or b"", True)] if image else [])])
        parts: list[tuple[bytes, bytes | None]] = []
        data = None
        for index, name, is_image in reads:
            if is_image:
                data = self._read(entry.path_bytes, index, name, info=entry.object_info)
                continue
            try:
                parts.append((name, self._read(entry.path_bytes, index, name, SIDECAR_MAX_BYTES,
                                               entry.object_info)))
            except DecodeFailure as f:
                if f.code != "limit.bytes":
                    raise
                parts.append((name, None))
        sidecar, flags = sidecar_json(parts)
        return replace(entry, sidecar=sidecar, flags=entry.flags + tuple(flags)), data

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __iter__(self) -> Iterator[tuple[tuple[int, PlanEntry], PrepareTask | None, Prepared | None]]:
        entries = ((s.shard, entry) for s in self.shards
                   for entry in self.out.read_plan_shard(s.shard, s.sha256)[s.start:])
        try:
            for shard, entry, fetched in self._read_ahead(entries):
                yield self._item(shard, entry, fetched)
        finally:
            self.close()

    def _fetch(self, entry: PlanEntry) -> bytes | DecodeFailure:
        """A plain object's bytes, or the failure of its row (on a read-ahead thread)."""
        try:
            return self._object(entry.path_bytes, entry.object_info or {})
        except DecodeFailure as f:
            return f

    def _read_ahead(self, entries: Iterable[tuple[int, PlanEntry]]
                    ) -> Iterator[tuple[int, PlanEntry, Future[bytes | DecodeFailure] | None]]:
        """``(shard, entry, future)`` in plan order, the future reading a plain object (None for anything else):
        at most READAHEAD objects and READAHEAD_BYTES planned bytes ahead (one larger object goes alone)."""
        pool: ThreadPoolExecutor | None = None
        pending: deque[tuple[int, PlanEntry, Future[bytes | DecodeFailure] | None, int]] = deque()
        ahead = ahead_bytes = 0
        try:
            for shard, entry in entries:
                future, size = None, 0
                if _plain_object(entry):
                    size = min(int((entry.object_info or {}).get("size", 0)), self.config.limits.max_bytes)
                    while pending and (ahead >= READAHEAD or ahead_bytes + size > READAHEAD_BYTES):
                        first = pending.popleft()
                        ahead, ahead_bytes = ahead - (first[2] is not None), ahead_bytes - first[3]
                        yield first[:3]
                    pool = pool or ThreadPoolExecutor(max_workers=READAHEAD, thread_name_prefix="gcage-read")
                    future = pool.submit(self._fetch, entry)
                    ahead, ahead_bytes = ahead + 1, ahead_bytes + size
                pending.append((shard, entry, future, size))
                while pending and pending[0][2] is None:  # nothing to wait for before it
                    yield pending.popleft()[:3]
            while pending:
                yield pending.popleft()[:3]
        finally:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _item(self, shard: int, entry: PlanEntry, fetched: Future[bytes | DecodeFailure] | None = None):
        data = None
        try:
            if entry.sidecars is not None:
                entry, data = self._sample(entry)
            elif entry.member_bytes is not None and entry.preset is None:
                data = self._member(entry)
            elif fetched is not None:
                got = fetched.result()  # InputError (the run cannot go on) is raised here, in plan order
                if isinstance(got, DecodeFailure):
                    raise got
                data = got
        except DecodeFailure as f:
            return (shard, entry), None, Prepared(entry.index).fail(f.code, f.detail, f.status)
        tag = (shard, entry)
        if entry.preset is not None:
            status, code, detail = entry.preset
            return tag, None, Prepared(entry.index).fail(code, detail, status)
        name = entry.member_bytes if entry.member_bytes is not None else os.path.basename(entry.path_bytes)
        c = self.config
        return tag, PrepareTask(entry.index, entry.path_bytes, self.top_k, c.small_images, c.limits,
                                self.preview_max, self.perturb, data, name, self.full_image, self.evidence,
                                c.grid, self.known, in_archive=entry.member_bytes is not None), None


def _plain_object(entry: PlanEntry) -> bool:
    """An object in an object store read whole for its own row (not an archive's member, not a known outcome)."""
    return entry.object_info is not None and entry.preset is None and entry.member_bytes is None


class _Unreadable:
    """The reader of an archive object that could not be read as planned: each member gets its failure."""

    def __init__(self, path: bytes, failure: DecodeFailure) -> None:
        self.path, self.failure = path, failure

    def read(self, index: int, name: bytes, max_bytes: int | None = None) -> bytes:
        raise DecodeFailure(self.failure.code, self.failure.detail, self.failure.status)

    def close(self) -> None:
        pass
