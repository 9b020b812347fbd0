"""The local runner: a whole scan on one machine, and the only module that wires the shard steps of
gcage_fast.scanning.stages (threads, worker processes, queues, progress, signals).

    setup (gcage_fast.scanning.session) -> plan -> prepare_shards: one stream over every pending shard
        (decode workers, results in plan order) -> Prefetch thread -> for each shard, in plan order:
        score_pieces (engines, heatmaps) -> commit_shard (part, then marker; the whole shard, or a piece of it
        each --commit-every seconds) -> progress

Decoding runs in spawned worker processes with a bounded window of tasks in flight (stages.in_flight). The pool is
fed from one stream over all pending shards and the stream is split back by shard, so the workers decode the next
shard's files while the engines score the current one. A batch never spans two shards (score_shard sees one), so a
resumed scan scores every shard with exactly the batches of an uninterrupted one (bit-identical scores). Pieces
end only where no batch is open, so they keep that true.

An interrupt (SIGINT, SIGTERM) or a run-level failure records in run.json how many inputs this attempt had taken
in and how many of them it committed: the rest are what a resume redoes, and its summary says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gcage_fast.config import ScanConfig, default_workers
from gcage_fast.errors import GcageError, Interrupted
from gcage_fast.ingest.prefetch import Prefetch
from gcage_fast.ingest.prepare import Prepared, prepare, prepare_failure
from gcage_fast.ingest.workers import SupervisedPool
from gcage_fast.log import logger
from gcage_fast.output.location import output_dir
from gcage_fast.output.outdir import PlanEntry
from gcage_fast.scanning import session
from gcage_fast.scanning.context import RunContext, ShardSpec
from gcage_fast.scanning.controls import CircuitBreaker, Fault, stop_on_signals
from gcage_fast.scanning.stages import commit_shard, in_flight, pool_limits, prepare_shards, score_pieces, take_shard
from gcage_fast.scanning.summary import ScanProgress, ScanSummary
from gcage_fast.scoring.base import Scorer
from gcage_fast.scoring.factory import make_scorer, prepared_nbytes

__all__ = ["scan", "ScanProgress", "ScanSummary"]


def scan(config: ScanConfig, progress: Callable[[ScanProgress], None] | None = None) -> ScanSummary:
    """Run (or resume) a scan; returns its summary.

    ``config.runner == "ray"`` runs it on a Ray cluster instead (:func:`gcage_fast.scanning.ray_runner.scan`).

    Raises:
        GcageError: for problems of the run (bad options, missing inputs or model, unwritable output, a broken
            environment, an interrupting signal). Problems of single files never raise: they are rows.
    """
    if config.runner == "ray":
        from gcage_fast.scanning.ray_runner import scan as ray_scan

        return ray_scan(config, progress)
    with stop_on_signals():
        return _scan(config, progress)


def _scan(config: ScanConfig, progress: Callable[[ScanProgress], None] | None) -> ScanSummary:
    t_start = time.perf_counter()
    setup = session.resolve(config)
    out = output_dir(config.output)
    refs = session.inputs(config, out)
    # Engines first (the export may take a while on first use): a failure here leaves no output behind.
    pair = session.engines(setup)
    workers = default_workers() if config.workers is None else config.workers
    fault = Fault()
    with pair.base, (pair.head or contextlib.nullcontext()), out:
        run = session.open_run(setup, out, refs, pair, workers, fault)
        ctx = run.ctx
        scorer = make_scorer(config, setup.model.spec, pair, ctx.threshold, ctx.top_k)
        if scorer.kernel_info is not None:
            logger.info("patch kernels: %s", scorer.kernel_info["detail"])
            run.record(kernels=scorer.kernel_info)
        t_scan = time.perf_counter()
        tally = _Tally()
        try:
            with SupervisedPool(workers, prepare, prepare_failure, pool_limits(config)) as pool:
                _run_shards(ctx, run, pool, scorer, workers, progress, t_scan, fault, tally)
        except GcageError as exc:
            committed = run.committed_inputs + tally.committed
            run.record(state="interrupted" if isinstance(exc, Interrupted) else "stopped",
                       last_attempt={"processed": tally.processed, "committed": tally.committed,
                                     "lost": tally.processed - tally.committed, "error": str(exc)})
            if isinstance(exc, Interrupted):
                raise Interrupted(exc.signum, committed=committed, total=run.plan["n_inputs"],
                                  lost=tally.processed - tally.committed) from None
            raise
        scan_s = time.perf_counter() - t_scan
        return session.finish(run, tally.processed, tally.patches, t_start, scan_s)


@dataclass
class _Tally:
    """Counts of this attempt."""

    processed: int = 0  # inputs taken in by the scorer
    committed: int = 0  # inputs committed (the rest of ``processed`` is lost if the attempt stops now)
    patches: int = 0
    errors: int = 0


def _run_shards(ctx: RunContext, run: session.Run, pool: SupervisedPool, scorer: Scorer, workers: int,
                progress: Callable[[ScanProgress], None] | None, t_start: float, fault: Fault,
                tally: _Tally, clock: Callable[[], float] = time.monotonic) -> None:
    pending, n_inputs = run.pending, run.plan["n_inputs"]
    todo = sum(s.todo for s in pending)
    breaker = CircuitBreaker(ctx.config.max_consecutive_failures)
    last_commit = clock()

    def report() -> None:
        if progress is not None:
            progress(ScanProgress(tally.processed, todo, n_inputs, tally.errors, tally.patches,
                                  time.perf_counter() - t_start, run.committed_inputs + tally.committed))

    def due() -> bool:
        """--commit-every: time to commit what is scored of the shard."""
        return clock() - last_commit >= ctx.config.commit_every

    def on_oom(_entry: PlanEntry, _prep: Prepared) -> None:
        tally.errors += 1

    def watched(spec: ShardSpec, items: Iterator[tuple[PlanEntry, Prepared]]) -> Iterator[tuple[PlanEntry, Prepared]]:
        """This runner's part between decoding and scoring, for each input of one shard."""
        for n, (entry, prep) in enumerate(items, 1):
            breaker.check(prep)
            if prep.status == "ok":
                tally.patches += prep.n_patches
            elif prep.status == "error":
                tally.errors += 1
            tally.processed += 1  # taken in: committed with its piece, or lost (and redone) if the run stops first
            yield entry, prep  # score_pieces takes it, and scores the batch it fills, before it asks for the next
            fault("image", tally.processed)
            if n < spec.todo:
                report()  # the shard's last input is reported once the shard is committed

    bounds = in_flight(ctx, workers)
    with Prefetch(prepare_shards(ctx, pending, pool, bounds.window), bounds.prefetch,
                  max_bytes=bounds.prefetch_bytes, size_of=lambda item: prepared_nbytes(item[2])) as stream:
        for spec in pending:
            for piece in score_pieces(ctx, scorer, spec, watched(spec, take_shard(spec, stream)), on_oom=on_oom,
                                      due=due):
                commit_shard(ctx, piece, fault=fault)
                tally.committed += len(piece.rows)
                last_commit = clock()
                report()
