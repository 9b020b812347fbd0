"""The feed of a scan: plan entries in plan order, turned into decode tasks or into rows known without decoding.

One feed may cover several plan shards, one after the other, so that a single stream of decode tasks keeps the
workers busy across shard boundaries (the local runner); each item is tagged with its shard.

Entries with a preset outcome (special files, links, archive problems) become rows at once. Archive members are
read here, in plan order, with one archive open at a time; their bytes travel to the decode workers inside the
task (members are never extracted to disk).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Protocol

from gcage_fast.ingest.archives import MemberReader
from gcage_fast.config import ScanConfig
from gcage_fast.evidence.collect import options_for
from gcage_fast.ingest.decode import DecodeFailure
from gcage_fast.ingest.known import ref_for
from gcage_fast.output.outdir import OutputDir, PlanEntry
from gcage_fast.ingest.perturb import Perturbation
from gcage_fast.ingest.prepare import Prepared, PrepareTask

__all__ = ["InputFeed", "PlanShard"]


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
        self._reader: MemberReader | None = None

    def _member(self, entry: PlanEntry) -> bytes:
        if self._reader is None or self._reader.path != entry.path_bytes:
            self.close()
            self._reader = MemberReader(entry.path_bytes, self.config.limits)
        return self._reader.read(entry.member_index or 0, entry.member_bytes or b"")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __iter__(self) -> Iterator[tuple[tuple[int, PlanEntry], PrepareTask | None, Prepared | None]]:
        try:
            for s in self.shards:
                for entry in self.out.read_plan_shard(s.shard, s.sha256)[s.start:]:
                    yield self._item(s.shard, entry)
        finally:
            self.close()

    def _item(self, shard: int, entry: PlanEntry):
        tag = (shard, entry)
        if entry.preset is not None:
            status, code, detail = entry.preset
            return tag, None, Prepared(entry.index).fail(code, detail, status)
        data = None
        if entry.member_bytes is not None:
            try:
                data = self._member(entry)
            except DecodeFailure as f:
                return tag, None, Prepared(entry.index).fail(f.code, f.detail, f.status)
        name = entry.member_bytes if entry.member_bytes is not None else os.path.basename(entry.path_bytes)
        c = self.config
        return tag, PrepareTask(entry.index, entry.path_bytes, self.top_k, c.small_images, c.limits,
                                self.preview_max, self.perturb, data, name, self.full_image, self.evidence,
                                c.grid, self.known), None
