"""The three steps of a scan over one plan shard (DESIGN.md §8), and nothing that schedules them:

    prepare_shard(ctx, spec, pool)                -> (PlanEntry, Prepared) in plan order   decode, limits, patches
    score_pieces(ctx, scorer, spec, prepared)     -> ScoredShard pieces (rows, heatmaps)     one Scorer
    commit_shard(ctx, scored)                     -> commit marker                          part, then marker

Each step takes a :class:`RunContext` and a :class:`ShardSpec` (plain, frozen, picklable) and what the caller
opened for it (a decode pool, a scorer with its engines); none reads a global of a runner. A runner wires them:
gcage_fast.scanning.local (threads, worker processes, queues, progress, signals) is the one today.

A batch of patches never spans two shards (``score_shard`` sees one shard), so a resumed scan scores every shard
with exactly the batches of an uninterrupted one, and its scores are bit-identical.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from gcage_fast.config import ScanConfig
from gcage_fast.errors import OutputError
from gcage_fast.evidence.policy import fuse
from gcage_fast.ingest.feed import InputFeed
from gcage_fast.ingest.prepare import Prepared
from gcage_fast.ingest.workers import PoolLimits, SupervisedPool
from gcage_fast.output import parquet
from gcage_fast.output.heatmaps import heatmap_path, render_overlay, wants_heatmap
from gcage_fast.output.outdir import OutputDir, PlanEntry
from gcage_fast.scanning.context import RunContext, ShardSpec
from gcage_fast.scanning.rows import build_row
from gcage_fast.scoring.base import ImageScore, Scorer
from gcage_fast.scoring.factory import DEVICE_INFLIGHT_BYTES, inflight_window, max_device_image_bytes

__all__ = ["InFlight", "ScoredShard", "commit_shard", "in_flight", "pool_limits", "prepare_shard", "prepare_shards",
           "score_pieces", "score_shard", "take_shard"]

FaultHook = Callable[[str, int], None]
#: Prepared inputs of several shards, each tagged with its shard: ``(shard, entry, prepared)``.
Stream = Iterator[tuple[int, PlanEntry, Prepared]]


@dataclass(frozen=True)
class InFlight:
    """How many inputs a runner keeps between the plan and the scorer."""

    window: int  # files pending in the decode pool: being decoded, or decoded and waiting for their turn
    prefetch: int  # decoded files waiting, in plan order, for the scorer (the local runner's Prefetch queue)
    prefetch_bytes: int | None = None  # and at most this many bytes of pixels among them (None: count only)


def in_flight(ctx: RunContext, workers: int) -> InFlight:
    """The one place where the bounds on inputs in flight are chosen (DESIGN.md §6.5: bounded memory), for a
    decode pool of ``workers``.

    On the host path a prepared input holds its few patches (about 0.75 MB at top-k 5), so a count bounds the
    memory. On the device path it holds the whole padded image (up to 192 MB at the default limits), so the pool
    window is lowered until window × the largest image the limits allow fits the device budget, and the prefetch
    queue holds at most that budget of pixels (:data:`gcage_fast.scoring.factory.DEVICE_INFLIGHT_BYTES` each).
    """
    window = max(2, 4 * workers)
    if not ctx.full_image:
        return InFlight(window=window, prefetch=window)  # as many again may wait, decoded, for the engine
    window = inflight_window(workers, max_device_image_bytes(ctx.config.limits))
    return InFlight(window=window, prefetch=window, prefetch_bytes=DEVICE_INFLIGHT_BYTES)


def pool_limits(config: ScanConfig) -> PoolLimits:
    """What the decode pool enforces per file and per worker."""
    memory = config.limits.worker_memory_mb * 2**20
    return PoolLimits(timeout_s=config.limits.timeout_s, memory_bytes=memory, recycle_rss_bytes=memory // 2)


# ---- prepare


def prepare_shards(ctx: RunContext, shards: Sequence[ShardSpec], pool: SupervisedPool,
                   window: int) -> Stream:
    """``(shard, entry, prepared)`` for every entry of ``shards``, in plan order, from one stream of decode tasks:
    the workers go on to the next shard's files while the caller scores the current one. Inputs whose outcome is
    known without decoding (special files, archive problems) pass through as prepared failures."""
    feed = InputFeed(ctx.outdir(), shards, ctx.config, ctx.top_k, ctx.preview_max, ctx.perturbation,
                     full_image=ctx.full_image)
    for (shard, entry), prep in pool.imap(feed, window):
        yield shard, entry, prep


def take_shard(spec: ShardSpec, stream: Stream) -> Iterator[tuple[PlanEntry, Prepared]]:
    """The next ``spec.todo`` items of a :func:`prepare_shards` stream (the shard from ``spec.start`` on), which
    must be those of ``spec``; takes nothing beyond them."""
    for n in range(spec.todo):
        try:
            shard, entry, prep = next(stream)
        except StopIteration:
            raise OutputError(f"plan shard {spec.shard} ended after {spec.start + n} of its {spec.rows} "
                              "inputs") from None
        if shard != spec.shard:
            raise OutputError(f"plan shard {spec.shard} holds {spec.start + n} inputs, plan.json says {spec.rows}")
        yield entry, prep


def prepare_shard(ctx: RunContext, spec: ShardSpec, pool: SupervisedPool,
                  window: int | None = None) -> Iterator[tuple[PlanEntry, Prepared]]:
    """Step 1: read, decode, check the limits of and select the patches of every input of one shard, in plan
    order, in ``pool``'s workers (``window``: see :func:`in_flight`)."""
    window = in_flight(ctx, pool.n).window if window is None else window
    return take_shard(spec, prepare_shards(ctx, [spec], pool, window))


# ---- score


@dataclass
class ScoredShard:
    """Scored rows of one shard, in plan order: the whole shard (``offset`` None), or the piece of it that starts
    at its input ``offset`` (of ``shard_rows``); how many heatmaps were written for them, and their stats."""

    shard: int
    rows: list[dict[str, Any]]
    heatmaps: int = 0
    offset: int | None = None
    shard_rows: int | None = None
    stats: dict[str, Any] | None = None  # counts by status, wall time, images/s (the commit marker keeps them)


def score_shard(ctx: RunContext, scorer: Scorer, spec: ShardSpec, prepared: Iterable[tuple[PlanEntry, Prepared]],
                on_oom: Callable[[PlanEntry, Prepared], None] | None = None) -> ScoredShard:
    """Step 2: score the prepared inputs of one shard and build its rows, as one piece
    (:func:`score_pieces` without time-based cuts)."""
    return next(iter(score_pieces(ctx, scorer, spec, prepared, on_oom=on_oom)))


def score_pieces(ctx: RunContext, scorer: Scorer, spec: ShardSpec, prepared: Iterable[tuple[PlanEntry, Prepared]],
                 on_oom: Callable[[PlanEntry, Prepared], None] | None = None,
                 due: Callable[[], bool] | None = None) -> Iterator[ScoredShard]:
    """Step 2: score the prepared inputs of one shard (from ``spec.start`` on), in batches of
    ``config.batch_size`` patches, and yield their rows: the whole shard at once, or pieces when ``due()`` (the
    runner's commit clock) says so. A piece ends only where no batch is open, so every batch is the one an
    uninterrupted scan forms and a resumed piece scores bit-identically.

    Heatmap overlays are written as their images are scored, and decoded pixels are released at once, so memory
    does not grow with the shard size; ``prepared`` is consumed lazily (the next batch may still be decoding).
    An image that does not fit in the engine's memory even alone becomes an ``engine.out_of_memory`` row;
    ``on_oom`` hears of it when it happens.
    """
    out = ctx.outdir()
    items: list[tuple[PlanEntry, Prepared]] = []
    batch: list[tuple[PlanEntry, Prepared]] = []
    scores: dict[int, ImageScore] = {}
    heat_paths: dict[int, str] = {}  # the heatmap_path column: only overlays actually written
    n_heatmaps = 0
    offset = spec.start
    t_piece = time.perf_counter()

    def flush() -> None:
        nonlocal n_heatmaps
        if not batch:
            return
        for (entry, prep), score in zip(batch, scorer.score([p for _, p in batch])):
            if score is None:  # out of device memory even alone, at batch size 1
                prep.fail("engine.out_of_memory", "the engine ran out of device memory on this image's patches "
                          "at batch size 1")
                if on_oom is not None:
                    on_oom(entry, prep)
                continue
            if score.heat is not None and prep.preview is not None and _wanted(ctx, prep, score):
                _write_heatmap(ctx, out, entry, prep, score)
                heat_paths[prep.index] = str(heatmap_path(entry.input_id, ctx.config.heatmaps))
                n_heatmaps += 1
            # Decoded pixels are released as soon as they are scored: memory does not grow with the shard size.
            score.heat = prep.patches = prep.image = prep.preview = None
            scores[prep.index] = score
        batch.clear()

    def piece() -> ScoredShard:
        nonlocal items, n_heatmaps, offset, t_piece
        rows = [build_row(ctx, spec.shard, entry, prep, scores.pop(prep.index, None), heat_paths.pop(prep.index, None))
                for entry, prep in items]
        wall = time.perf_counter() - t_piece
        whole = offset == 0 and len(rows) == spec.rows
        scored = ScoredShard(spec.shard, rows, n_heatmaps, None if whole else offset, None if whole else spec.rows,
                             {"status": dict(Counter(r["status"] for r in rows)), "wall_s": round(wall, 3),
                              "images_per_s": round(len(rows) / wall, 3) if wall > 0 else None})
        offset += len(rows)
        items, n_heatmaps, t_piece = [], 0, time.perf_counter()
        return scored

    for entry, prep in prepared:
        items.append((entry, prep))
        if prep.status == "ok":
            batch.append((entry, prep))
            if sum(p.n_patches for _, p in batch) >= ctx.config.batch_size:
                flush()
        if not batch and due is not None and offset + len(items) < spec.rows and due():
            yield piece()
    flush()
    if items or offset == spec.start:  # a shard with nothing to do still yields its (empty) rows once
        yield piece()


def _wanted(ctx: RunContext, prep: Prepared, score: ImageScore) -> bool:
    """``--heatmaps-for``, by the row's verdict (evidence fused in, as build_row makes it)."""
    if ctx.config.heatmaps_for == "all":
        return True
    verdict, _ = fuse(prep.evidence, score.verdict, ctx.config.verdict_policy)
    return wants_heatmap(verdict, ctx.config.heatmaps_for)


def _write_heatmap(ctx: RunContext, out: OutputDir, entry: PlanEntry, prep: Prepared, score: ImageScore) -> None:
    label = f"{score.verdict} p_fake={score.p_fake:.3f}"
    img = render_overlay(prep.preview, prep.preview_scale, prep.boxes, score.heat, label=label)
    fmt = ctx.config.heatmaps
    try:
        out.write_heatmap(img, entry.input_id, fmt, tag=ctx.run_id[:12], quality=ctx.config.heatmap_quality)
    except OSError as exc:  # like a part that cannot be written: the run stops, --resume redoes the shard
        raise OutputError(f"cannot write a heatmap to {out.display('heatmaps')}: {exc.strerror or exc}") from None


# ---- commit


def commit_shard(ctx: RunContext, scored: ScoredShard, fault: FaultHook | None = None) -> dict[str, Any]:
    """Step 3: publish one shard's rows, the part first, then its commit marker (RELIABILITY.md §2.0); returns the
    marker. ``fault`` is the test hook of gcage_fast.output.parquet.commit_shard.

    Raises:
        OutputError: the part cannot be written (disk full, permissions): a run-level failure.
    """
    return parquet.commit_shard(ctx.outdir(), scored.shard, scored.rows, run_id=ctx.run_id,
                                model_sha256=ctx.model_sha256, heatmaps=scored.heatmaps, fault=fault,
                                offset=scored.offset, shard_rows=scored.shard_rows, stats=scored.stats,
                                schema=ctx.row_schema)
