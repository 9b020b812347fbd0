"""The Ray runner: a scan on a Ray cluster, with Ray Data as the scheduler (``scan --runner ray``, the ``ray`` extra).

    driver (this process): setup, the plan and the export cache (gcage_fast.scanning.session, as the local runner)
      -> Ray Data, one row per pending plan shard:
           decode tasks (a quarter CPU each):  prepare_shard in a supervised pool of decode processes
           engine actors (a fixed pool; half a CPU and, on GPU nodes, GPUs each):  score_shard, then commit_shard
      -> driver: progress from the commit markers (OUT/commits), the summary (session.finish)

Without an address (and without ``$RAY_ADDRESS``) Ray starts an instance in this process: local mode is the same
code path. A caller that has called ``ray.init()`` already has its connection used, and kept.

Exactly one row per input and resume come from the plan and the markers, never from Ray's retries (DESIGN.md §8):

- A shard is committed as one unit: the whole shard, or the rest of it from :attr:`ShardSpec.start` (pieces an
  earlier local run committed) as one piece. Its part and marker have the name the plan gives them, written
  temp-then-rename, so an attempt Ray retries overwrites what a killed one published, and no row appears twice.
  (No time-based pieces here: a retry must cut the shard where the first attempt did.)
- Ray's retries are bounded: a decode task whose process dies is run again at most :data:`TASK_RETRIES` times; an
  engine actor that dies is restarted at most :data:`ACTOR_RESTARTS` times, and the shard it held is retried on it
  (at most :data:`ACTOR_TASK_RETRIES` times). Ray Data retries no exception of ours.
- A file never raises: one that crashes its decoder is one ``worker.crash`` row (the supervised pool's). A failure
  of the run (the disk, the model, the circuit breaker) travels back to the driver as a result, which stops the
  job and raises the same :class:`GcageError` here (Ray would hand over only its text).
- Fractional CPU requests (decode tasks 0.25, actors 0.5) let both stages run on a one-CPU node, so a small
  cluster cannot deadlock with actors holding every CPU.
- ``--resume`` skips the committed shards: rerunning the same command continues.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from gcage_fast import env
from gcage_fast.config import ScanConfig
from gcage_fast.errors import ConfigError, EngineError, GcageError, Interrupted, MissingDependencyError, ModelError
from gcage_fast.ingest.prepare import prepare, prepare_failure
from gcage_fast.ingest.workers import PoolLimits, SupervisedPool
from gcage_fast.log import logger
from gcage_fast.output.location import output_dir
from gcage_fast.output.outdir import OutputDir, PlanEntry, parse_stem
from gcage_fast.scanning import session
from gcage_fast.scanning.context import RunContext, ShardSpec
from gcage_fast.scanning.controls import CircuitBreaker, Fault, stop_on_signals
from gcage_fast.scanning.stages import commit_shard, pool_limits, prepare_shard, score_shard
from gcage_fast.scanning.summary import ScanProgress, ScanSummary

__all__ = ["ACTOR_CPUS", "ACTOR_RESTARTS", "ACTOR_TASK_RETRIES", "RAY_VERSIONS", "RayJobError", "RaySettings",
           "TASK_CPUS", "TASK_RETRIES", "TaskFault", "resolve_settings", "scan"]

#: The Ray versions this runner is written for: ``compute=`` replaced ``concurrency=`` in 2.51, and the retry
#: arguments (passed through ``**ray_remote_args``, which has no named replacement for them) go in 2.64.
RAY_VERSIONS = ((2, 51), (2, 64))
RAY_EXTRA = "pip install 'gcage-fast[ray]'"
TASK_CPUS = 0.25  # per decode task (its decode processes are its own)
ACTOR_CPUS = 0.5  # per engine actor (its engine threads are its own)
TASK_RETRIES = 2  # a decode task whose process dies runs again at most this many times
ACTOR_RESTARTS = 2  # an engine actor that dies is restarted at most this many times ...
ACTOR_TASK_RETRIES = 2  # ... and the shard it held is retried on it at most this many times
POLL_S = 1.0  # how often the driver reads the markers


class RayJobError(GcageError):
    """The Ray job failed for a reason Ray gives (a task or actor out of retries, a lost node, a cluster that cannot
    be reached), not one of ours; what is committed stays, and ``--resume`` continues."""


@dataclass(frozen=True)
class RaySettings:
    """How the job is laid out on the cluster (run.json's ``ray``)."""

    actors: int  # engine actors
    actor_gpus: float  # GPUs each engine actor takes (0: none)
    decode_tasks: int  # decode tasks at a time
    decode_workers: int  # decode processes in each decode task

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "task_cpus": TASK_CPUS, "actor_cpus": ACTOR_CPUS, "task_retries": TASK_RETRIES,
                "actor_restarts": ACTOR_RESTARTS, "actor_task_retries": ACTOR_TASK_RETRIES}


def resolve_settings(config: ScanConfig, resources: dict[str, float], shards: int) -> RaySettings:
    """The layout for ``config`` on a cluster with ``resources`` (``ray.cluster_resources()``) and ``shards``
    pending shards. Refuses what Ray would wait for for ever: GPUs or CPUs the cluster does not have.

    Raises:
        ConfigError: the cluster cannot hold the engine actors.
    """
    gpus = config.ray_actor_gpus if config.ray_actor_gpus is not None else 1.0 if config.device == "cuda" else 0.0
    have_gpus, have_cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 0.0))
    actors = config.ray_actors or (max(1, int(have_gpus // gpus)) if gpus > 0 else 1)
    if gpus > 0 and actors * gpus > have_gpus:
        raise ConfigError(f"{actors} engine actor(s) of {gpus:g} GPU each need {actors * gpus:g} GPUs and the Ray "
                          f"cluster has {have_gpus:g}: Ray would wait for them for ever; start GPU nodes, or lower "
                          "--ray-actors / --ray-actor-gpus")
    if actors * ACTOR_CPUS + TASK_CPUS > have_cpus:
        raise ConfigError(f"{actors} engine actor(s) of {ACTOR_CPUS:g} CPU and a decode task of {TASK_CPUS:g} CPU "
                          f"need {actors * ACTOR_CPUS + TASK_CPUS:g} CPUs and the Ray cluster has {have_cpus:g}; "
                          "lower --ray-actors")
    decode_tasks = max(1, min(shards, int(have_cpus - actors * ACTOR_CPUS)))
    return RaySettings(actors=max(1, min(actors, shards)), actor_gpus=gpus, decode_tasks=decode_tasks,
                       decode_workers=config.workers or 1)


@dataclass(frozen=True)
class TaskFault:
    """The GCAGE_FAULT_AT hook of the decode tasks (phase ``ray_prepare``, N = the shard) and engine actors
    (``ray_score``, N = the inputs of a shard taken in): SIGKILL the process; ``enospc:N`` fails the engine actor's
    write of shard N with ENOSPC. With ``once`` (GCAGE_FAULT_ONCE), only the process that creates that file first
    is killed, so the attempt Ray retries goes on. The driver reads both and hands them over: a task does not read
    its node's environment for them."""

    point: tuple[str, int] | None = None
    once: str | None = None

    def __call__(self, phase: str, n: int) -> None:
        if self.point == ("enospc", n) and phase == "in_write":
            raise OSError(errno.ENOSPC, "No space left on device (GCAGE_FAULT_AT)")
        if self.point != (phase, n) or phase not in ("ray_prepare", "ray_score"):
            return
        if self.once is not None:
            try:
                os.close(os.open(self.once, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- on the cluster
_PREPARED = pa.schema([("shard", pa.int64()), ("prepared", pa.large_binary()), ("error", pa.binary())])
_RESULT = pa.schema([("shard", pa.int64()), ("rows", pa.int64()), ("patches", pa.int64()), ("errors", pa.int64()),
                     ("heatmaps", pa.int64()), ("node", pa.string()), ("pid", pa.int64()), ("error", pa.binary())])


def _prepare_rows(batch: pa.Table, *, ctx: RunContext, workers: int, fault: TaskFault) -> pa.Table:
    """Decode task: each shard of ``batch`` (one, as the job is laid out), prepared in plan order, as one pickle
    of ``(spec, [(entry, prepared), ...])``; a failure of the run as the pickled error instead."""
    rows: dict[str, list[Any]] = {"shard": [], "prepared": [], "error": []}
    for blob in batch.column("spec").to_pylist():
        spec: ShardSpec = pickle.loads(blob)
        fault("ray_prepare", spec.shard)
        payload = error = None
        try:
            payload = pickle.dumps((spec, _prepare(ctx, spec, workers)), protocol=pickle.HIGHEST_PROTOCOL)
        except GcageError as exc:
            error = _pickled(exc)
        rows["shard"].append(spec.shard)
        rows["prepared"].append(payload)
        rows["error"].append(error)
    return pa.Table.from_pydict(rows, schema=_PREPARED)


#: The decode pool of this task process and what it was made for, kept for the next shards Ray gives the process
#: (Ray reuses its task processes), so a shard does not pay for starting decode processes. Its processes die with
#: this one (PR_SET_PDEATHSIG).
_POOL: tuple[tuple[int, PoolLimits], SupervisedPool] | None = None


def _prepare(ctx: RunContext, spec: ShardSpec, workers: int) -> list[tuple[PlanEntry, Any]]:
    global _POOL
    key = (workers, pool_limits(ctx.config))
    if _POOL is not None and _POOL[0] != key:
        _POOL[1].__exit__(None, None, None)
        _POOL = None
    if _POOL is None:
        _POOL = (key, SupervisedPool(workers, prepare, prepare_failure, key[1]).__enter__())
    pool = _POOL[1]
    breaker = CircuitBreaker(ctx.config.max_consecutive_failures)
    items = []
    try:
        for entry, prep in prepare_shard(ctx, spec, pool):
            breaker.check(prep)
            items.append((entry, prep))
    except BaseException as exc:  # a pool left with work in flight is not used again
        _POOL = None
        pool.__exit__(type(exc), exc, exc.__traceback__)
        raise
    return items


def _pickled(exc: GcageError) -> bytes:
    try:
        return pickle.dumps(exc)
    except Exception:  # an error that does not pickle still stops the run, with its text
        return pickle.dumps(RayJobError(str(exc)))


class _EngineActor:
    """Engine actor: builds the engines of the run once (the driver has filled the export cache), then scores and
    commits the shards it is given, one at a time."""

    def __init__(self, ctx: RunContext, fault: TaskFault) -> None:
        import ray

        self.ctx, self.fault = ctx, fault
        self.node = ray.get_runtime_context().get_node_id()
        self.error: bytes | None = None
        self._open = contextlib.ExitStack()
        try:
            self.scorer = _open_scorer(ctx, self._open)
        except GcageError as exc:  # every shard it is given reports it, so the driver stops the job with it
            self.error = _pickled(exc)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: dict[str, list[Any]] = {name: [] for name in _RESULT.names}
        for shard, blob, error in zip(*(batch.column(c).to_pylist() for c in ("shard", "prepared", "error"))):
            result = {"shard": shard, "rows": 0, "patches": 0, "errors": 0, "heatmaps": 0, "node": self.node,
                      "pid": os.getpid(), "error": error or self.error}
            if result["error"] is None:
                try:
                    result.update(self._score_and_commit(pickle.loads(blob)))
                except GcageError as exc:
                    result["error"] = _pickled(exc)
            for name in _RESULT.names:
                rows[name].append(result[name])
        return pa.Table.from_pydict(rows, schema=_RESULT)

    def _score_and_commit(self, shard: tuple[ShardSpec, list[tuple[PlanEntry, Any]]]) -> dict[str, int]:
        spec, items = shard
        patches = sum(prep.n_patches for _, prep in items if prep.status == "ok")
        scored = score_shard(self.ctx, self.scorer, spec, self._taken(items))
        marker = commit_shard(self.ctx, scored, fault=self.fault)
        return {"rows": marker["rows"], "patches": patches, "heatmaps": marker["heatmaps"],
                "errors": sum(r["status"] == "error" for r in scored.rows)}

    def _taken(self, items: list[tuple[PlanEntry, Any]]):
        for n, item in enumerate(items, 1):
            yield item
            self.fault("ray_score", n)


def _open_scorer(ctx: RunContext, stack: contextlib.ExitStack):
    """The run's engines and scorer, built on this node from the same configuration as the driver's; refuses a node
    whose model or engine is not the one the rows name."""
    from gcage_fast.scoring.factory import make_scorer

    config = ctx.config
    setup = session.resolve(config)
    if setup.model.spec.sha256 != ctx.model_sha256:
        raise ModelError(f"the engine actor on Ray node {_node()} loaded model sha256 {setup.model.spec.sha256[:16]}, "
                         f"the driver {ctx.model_sha256[:16]}: every node needs the same model files")
    pair = session.engines(setup)
    stack.enter_context(pair.base)
    if pair.head is not None:
        stack.enter_context(pair.head)
    if pair.base.info.label != ctx.backend:
        raise EngineError(f"the engine actor on Ray node {_node()} runs {pair.base.info.label}, the driver "
                          f"{ctx.backend}: install the same packages on every node")
    return make_scorer(config, setup.model.spec, pair, ctx.threshold, ctx.top_k)


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12]


# -------------------------------------------------------------------------------------------------- the driver
def scan(config: ScanConfig, progress: Callable[[ScanProgress], None] | None = None) -> ScanSummary:
    """Run (or resume) a scan on a Ray cluster; returns its summary (``extra["ray"]``: the layout, and how many
    shards each node's engine actors committed). The rows are the local runner's.

    Raises:
        MissingDependencyError: ray is not installed (or not a version this runner is written for).
        GcageError: for problems of the run, as :func:`gcage_fast.scanning.local.scan`; :class:`RayJobError` when
            Ray gives up (a task or actor out of retries, a lost node, a cluster that cannot be reached).
    """
    with stop_on_signals():
        return _scan(config, progress)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ray is not installed (needed for the distributed runner, scan --runner ray); "
                                     f"install it with: {RAY_EXTRA}") from exc
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    low, high = RAY_VERSIONS
    if not low <= version < high:
        raise MissingDependencyError(f"ray {ray.__version__} is installed and scan --runner ray needs "
                                     f"ray[data]>={low[0]}.{low[1]},<{high[0]}.{high[1]}; install it with: "
                                     f"{RAY_EXTRA}")
    return ray


def _scan(config: ScanConfig, progress: Callable[[ScanProgress], None] | None) -> ScanSummary:
    ray = _import_ray()
    t_start = time.perf_counter()
    setup = session.resolve(config)
    out = output_dir(config.output)
    refs = session.inputs(config, out)
    # The driver's engines: the export cache filled once, and the engine label the rows carry (run.json).
    pair = session.engines(setup)
    fault = Fault()
    with contextlib.ExitStack() as stack:
        # Ray's driver prints what the cluster reports (a task that failed and is retried, "(raylet) ...") on
        # sys.stdout, whatever log_to_driver says: it goes to stderr, so stdout keeps only the command's own output
        # (scan --json). Connected before the scan, Ray prints where the caller's stdout is.
        stack.enter_context(contextlib.redirect_stdout(sys.stderr))
        if _connect(ray, config.ray_address):
            stack.callback(ray.shutdown)
        stack.enter_context(stop_on_signals())  # again: ray.init sets a SIGTERM handler of its own
        resources = ray.cluster_resources()
        resolve_settings(config, resources, 1)  # refuse a cluster that cannot hold the actors before writing
        stack.enter_context(out)
        with pair.base, (pair.head or contextlib.nullcontext()):
            run = session.open_run(setup, out, refs, pair, config.workers or 1, fault)
        t_scan = time.perf_counter()
        tally = _Tally()
        settings = resolve_settings(config, resources, len(run.pending))
        try:
            if run.pending:
                run.record(ray=settings.to_dict())
                _run_job(ray, run, settings, progress, fault, tally, t_scan)
        except GcageError as exc:
            # Inputs count here once they are committed, so nothing counted is lost: the shards in flight are
            # redone whole by --resume.
            committed = run.committed_inputs + tally.rows
            run.record(state="interrupted" if isinstance(exc, Interrupted) else "stopped",
                       last_attempt={"processed": tally.rows, "committed": tally.rows, "lost": 0, "error": str(exc)})
            if isinstance(exc, Interrupted):
                raise Interrupted(exc.signum, committed=committed, total=run.plan["n_inputs"]) from None
            raise
        summary = session.finish(run, tally.rows, tally.patches, t_start, time.perf_counter() - t_scan)
        summary.extra["ray"] = {**settings.to_dict(), "engine_nodes": dict(tally.nodes)}
        return summary


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at ``address`` (None: Ray's own choice, ``$RAY_ADDRESS`` or an instance started in
    this process), unless this process is connected already; True when it connected here (and disconnects)."""
    if ray.is_initialized():
        if address is not None:
            logger.warning("Ray is initialised in this process already; --ray-address %s is not used", address)
        return False
    address = address or env.ray_address()
    # Worker logs stay in Ray's session directory; the driver's own lines are warnings and errors only.
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        kwargs["include_dashboard"] = False  # a local instance: no dashboard process
    else:
        _check_reachable(address)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayJobError(f"cannot start or join Ray{f' at {address}' if address else ''}: {exc}") from None
    return True


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nobody listens on (``ray.init`` would retry without end)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise RayJobError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); --ray-address takes "
                          "the HOST:PORT of its head (port 6379 unless ray start --port said otherwise)") from None


@dataclass
class _Tally:
    """What this attempt's results said: shards, rows, patches, and which nodes' engine actors committed them."""

    shards: set[int] = field(default_factory=set)
    rows: int = 0
    patches: int = 0
    nodes: Counter = field(default_factory=Counter)

    def add(self, result: dict[str, Any]) -> None:
        self.shards.add(result["shard"])
        self.rows += result["rows"]
        self.patches += result["patches"]
        self.nodes[result["node"]] += 1


class _Markers:
    """The markers of this attempt's shards, read as they appear in OUT/commits: the progress the driver reports
    comes from what is on disk, whatever Ray does."""

    def __init__(self, out: OutputDir, pending: list[ShardSpec]) -> None:
        self.out = out
        self.shards = {s.shard for s in pending}
        self.seen = set(self._names())  # pieces committed before this attempt
        self.rows = self.errors = 0

    def _names(self) -> list[str]:
        return [name for name in self.out.marker_names() if name.endswith(".json")]

    def poll(self) -> list[int]:
        """The shards whose marker appeared since the last call."""
        new = []
        for name in self._names():
            parsed = parse_stem(name[:-5])
            if name in self.seen or parsed is None or parsed[0] not in self.shards:
                continue
            try:
                marker = json.loads(self.out.read_bytes(f"commits/{name}"))
            except (OSError, ValueError):
                continue  # read again at the next poll
            self.seen.add(name)
            self.rows += int(marker.get("rows", 0))
            self.errors += int(marker.get("stats", {}).get("status", {}).get("error", 0))
            new.append(parsed[0])
        return new


def _run_job(ray: Any, run: session.Run, settings: RaySettings, progress: Callable[[ScanProgress], None] | None,
             fault: Fault, tally: _Tally, t_scan: float) -> None:
    """Run the pending shards as one Ray Data job; the results are read in a thread, the markers here (the main
    thread, which signals interrupt)."""
    pending, n_inputs = run.pending, run.plan["n_inputs"]
    todo = sum(s.todo for s in pending)
    dataset = _dataset(ray, run.ctx, pending, settings, TaskFault(env.fault_point(), env.fault_once()))
    markers = _Markers(run.out, pending)
    failures: list[GcageError] = []
    done = threading.Event()

    def consume() -> None:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                for result in batch.to_pylist():
                    if result["error"] is not None:
                        failures.append(_unpickled(result["error"]))
                        return  # leaving the iterator stops the job
                    tally.add(result)
        except Exception as exc:  # Ray's own failures: out of retries, a lost node
            failures.append(RayJobError(f"the Ray job failed: {_ray_reason(exc)}; what is committed stays: run "
                                        "the same command with --resume to continue"))
        finally:
            done.set()

    reader = threading.Thread(target=consume, name="gcage-ray-results", daemon=True)
    with _ray_data_quiet():
        reader.start()
        while True:
            finished = done.wait(POLL_S)
            for shard in markers.poll():
                fault("after_commit", shard)
            if progress is not None:
                progress(ScanProgress(markers.rows, todo, n_inputs, markers.errors, tally.patches,
                                      time.perf_counter() - t_scan, run.committed_inputs + markers.rows))
            if finished:
                break
        reader.join()
    if failures:
        raise failures[0]
    missing = sorted({s.shard for s in pending} - tally.shards)
    if missing:
        raise RayJobError(f"the Ray job ended without committing shards {missing[:8]}; run the same command with "
                          "--resume to do them")


@contextlib.contextmanager
def _ray_data_quiet():
    """Ray Data's own lines on the driver (execution started and finished, progress bars off) are not the scan's:
    only its errors are shown while the job runs."""
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        data_logger.setLevel(level)


def _dataset(ray: Any, ctx: RunContext, pending: list[ShardSpec], settings: RaySettings, fault: TaskFault) -> Any:
    """The job: one row per pending shard -> decode tasks -> engine actors -> one result row per shard."""
    from ray.util.annotations import RayDeprecationWarning

    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = False  # the driver reports progress itself, from the markers
    data_context.print_on_execution_start = False
    workers_env = env.for_workers()
    runtime_env = {"env_vars": workers_env} if workers_env else None
    rows = [{"shard": s.shard, "spec": pickle.dumps(s)} for s in pending]
    with warnings.catch_warnings():
        # The retry arguments have no named parameter in Ray 2.51-2.63 (hence the upper bound of the extra).
        warnings.simplefilter("ignore", RayDeprecationWarning)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(_prepare_rows, batch_size=1, batch_format="pyarrow",
                            fn_kwargs={"ctx": ctx, "workers": settings.decode_workers, "fault": fault},
                            compute=ray.data.TaskPoolStrategy(size=settings.decode_tasks), num_cpus=TASK_CPUS,
                            runtime_env=runtime_env, max_retries=TASK_RETRIES)
        return ds.map_batches(_EngineActor, batch_size=1, batch_format="pyarrow",
                              fn_constructor_kwargs={"ctx": ctx, "fault": fault},
                              compute=ray.data.ActorPoolStrategy(size=settings.actors), num_cpus=ACTOR_CPUS,
                              num_gpus=settings.actor_gpus or None, runtime_env=runtime_env,
                              max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_TASK_RETRIES)


def _unpickled(blob: bytes) -> GcageError:
    try:
        exc = pickle.loads(blob)
    except Exception as err:  # noqa: BLE001 - a failure that does not unpickle still stops the run
        return RayJobError(f"the Ray job stopped on an error that could not be read back ({err})")
    return exc if isinstance(exc, GcageError) else RayJobError(str(exc))


def _ray_reason(exc: BaseException) -> str:
    """The line of a Ray error that says what happened (its message holds the remote traceback too)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if any(word in line for word in ("Error", "error", "died", "failed")) and not line.startswith("File "):
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]
