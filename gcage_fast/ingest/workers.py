"""Supervised decode workers: the parent enforces a wall-clock timeout per file, a memory limit per worker,
worker recycling, and survives native crashes.

Each worker is a spawned process (no inherited torch/ONNX Runtime threads) with one task at a time, so when a
worker dies the parent knows exactly which file it held. A file whose worker dies is retried once in a fresh
worker; a second death gives ``worker.crash`` (with the signal). A file that runs past the timeout has its
worker killed and gets ``limit.timeout`` (hangs are not retried). A worker that hits its address-space limit
raises MemoryError inside the task (``limit.rss``); one whose resident memory grows past the recycling
threshold, or that has done ``max_tasks`` tasks, is replaced between tasks. Workers die with the parent
(``PR_SET_PDEATHSIG``), cannot gain privileges (``PR_SET_NO_NEW_PRIVS``) and ignore Ctrl-C (the parent stops
them).
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

from gcage_fast.errors import GcageError

__all__ = ["PoolLimits", "SupervisedPool", "WorkerFailure", "WorkerStartError"]

T = TypeVar("T")
R = TypeVar("R")
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class WorkerStartError(GcageError):
    """A decode worker could not start: the installation, not an input, is broken."""


@dataclass(frozen=True)
class PoolLimits:
    """Per-file and per-worker limits (None disables one)."""

    timeout_s: float | None = 60.0
    memory_bytes: int | None = 4 * 2**30  # RLIMIT_AS of each worker
    recycle_rss_bytes: int | None = 2 * 2**30
    max_tasks: int | None = 5000


@dataclass(frozen=True)
class WorkerFailure:
    """What happened to a task that produced no result: ``code`` is worker.crash, limit.timeout, limit.rss or
    worker.error."""

    code: str
    detail: str


def _libc_prctl(option: int, arg: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, arg, 0, 0, 0)
        except OSError:
            pass


def _worker_main(conn: Connection, fn: Callable[[Any], Any], memory_bytes: int | None) -> None:
    """Loop of one worker: receive (seq, task), send (seq, result | WorkerFailure); None or EOF ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _libc_prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    _libc_prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if memory_bytes:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        except (ValueError, OSError):
            pass
    conn.send(("ready", None))  # imports are done: the parent starts per-file clocks only from here
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, task = msg
        try:
            result: Any = fn(task)
        except MemoryError:
            result = WorkerFailure("limit.rss", "the worker ran out of its memory limit")
        except Exception as exc:  # noqa: BLE001 - a bug must cost one row, not the worker
            result = WorkerFailure("worker.error", f"{type(exc).__name__}: {exc}"[:512])
        try:
            conn.send((seq, result))
        except MemoryError:
            conn.send((seq, WorkerFailure("limit.rss", "the result did not fit in the worker's memory limit")))


def _signal_name(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any], memory_bytes: int | None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, fn, memory_bytes), daemon=True)
        self.proc.start()
        child.close()
        self.job: tuple[int, Any, Any, int, float] | None = None  # seq, tag, task, attempt, deadline
        self.done = 0
        self.ready = False

    def rss(self) -> int:
        try:
            with open(f"/proc/{self.proc.pid}/statm") as fh:
                return int(fh.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def stop(self, kill: bool = False) -> None:
        if self.proc.is_alive():
            if kill:
                self.proc.kill()
            else:
                try:
                    self.conn.send(None)
                except (OSError, ValueError):
                    self.proc.kill()
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class SupervisedPool:
    """``workers`` supervised processes running ``fn``; ``workers == 0`` runs tasks inline (no isolation).

    Args:
        fn: a top-level (picklable) function of one task; it should turn expected failures into results.
        limits: timeouts, memory and recycling.
        on_failure: maps (task, WorkerFailure) to the result reported for that task.
    """

    def __init__(self, workers: int, fn: Callable[[T], R], on_failure: Callable[[T, WorkerFailure], R],
                 limits: PoolLimits = PoolLimits()) -> None:
        self.n = workers
        self.fn = fn
        self.on_failure = on_failure
        self.limits = limits
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        self.stats = {"crashes": 0, "timeouts": 0, "recycled": 0, "retried": 0}

    def __enter__(self) -> SupervisedPool:
        self._workers = [self._spawn() for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        interrupted = exc[0] is not None
        for w in self._workers:
            w.stop(kill=interrupted or w.job is not None)
        self._workers = []

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.fn, self.limits.memory_bytes)

    def _replace(self, w: _Worker, kill: bool) -> None:
        w.stop(kill=kill)
        self._workers[self._workers.index(w)] = self._spawn()

    def imap(self, items: Iterable[tuple[Any, T | None, R | None]], window: int) -> Iterator[tuple[Any, R]]:
        """Yield ``(tag, result)`` in input order. Each item is ``(tag, task, ready)``; a ``ready`` result is
        passed through without a task. At most ``window`` items are pending (in flight or waiting to be yielded).
        """
        if self.n == 0:
            for tag, task, ready in items:
                if ready is not None:
                    yield tag, ready
                    continue
                try:
                    yield tag, self.fn(task)
                except MemoryError:
                    yield tag, self.on_failure(task, WorkerFailure("limit.rss", "out of memory"))
                except Exception as exc:  # noqa: BLE001
                    yield tag, self.on_failure(task, WorkerFailure("worker.error", f"{type(exc).__name__}: {exc}"))
            return
        source = iter(items)
        exhausted = False
        queue: deque[tuple[int, Any, Any, int]] = deque()  # seq, tag, task, attempt
        results: dict[int, tuple[Any, Any]] = {}
        next_seq = next_yield = 0
        while True:
            while not exhausted and next_seq - next_yield < window:
                try:
                    tag, task, ready = next(source)
                except StopIteration:
                    exhausted = True
                    break
                if ready is not None:
                    results[next_seq] = (tag, ready)
                else:
                    queue.append((next_seq, tag, task, 0))
                next_seq += 1
            for w in list(self._workers):
                if w.ready and w.job is None and queue:
                    seq, tag, task, attempt = queue.popleft()
                    deadline = time.monotonic() + self.limits.timeout_s if self.limits.timeout_s else float("inf")
                    try:
                        w.conn.send((seq, task))
                    except (OSError, ValueError):  # the idle worker died (OOM killer, ...): replace, retry
                        queue.appendleft((seq, tag, task, attempt))
                        self._replace(w, kill=True)
                        continue
                    w.job = (seq, tag, task, attempt, deadline)
            while next_yield in results:
                yield results.pop(next_yield)
                next_yield += 1
            if exhausted and not queue and next_yield == next_seq:
                return
            starting = [w for w in self._workers if not w.ready]
            busy = [w for w in self._workers if w.job is not None]
            if not busy and not starting:
                continue
            deadlines = [w.job[4] for w in busy]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            watched = busy + starting
            ready_objs = wait([w.conn for w in watched] + [w.proc.sentinel for w in watched],
                              timeout=None if timeout in (None, float("inf")) else timeout)
            for w in starting:
                self._start(w, ready_objs)
            for w in busy:
                self._service(w, ready_objs, queue, results)

    def _start(self, w: _Worker, ready_objs: list[Any]) -> None:
        """A new worker reports ready; one that dies while starting is replaced (it held no task)."""
        if w.conn in ready_objs:
            try:
                msg = w.conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg == ("ready", None):
                w.ready = True
                return
        if w.proc.sentinel in ready_objs or not w.proc.is_alive():
            w.proc.join(timeout=1)
            raise WorkerStartError(f"a decode worker failed to start ({_signal_name(w.proc.exitcode)}); "
                               "check the installation")

    def _service(self, w: _Worker, ready_objs: list[Any], queue: deque, results: dict[int, tuple[Any, Any]]) -> None:
        assert w.job is not None
        seq, tag, task, attempt, deadline = w.job
        # A result that arrived after wait() returned still counts: the timeout is for a worker that gave none.
        if w.conn in ready_objs or (time.monotonic() >= deadline and w.conn.poll()):
            try:
                got_seq, result = w.conn.recv()
            except (EOFError, OSError):
                got_seq, result = None, None
            if got_seq == seq:
                if isinstance(result, WorkerFailure):
                    result = self.on_failure(task, result)
                results[seq] = (tag, result)
                w.job = None
                w.done += 1
                lim = self.limits
                if (lim.max_tasks and w.done >= lim.max_tasks) or (lim.recycle_rss_bytes and
                                                                   w.rss() > lim.recycle_rss_bytes):
                    self.stats["recycled"] += 1
                    self._replace(w, kill=False)
                return
        if w.proc.sentinel in ready_objs or not w.proc.is_alive():
            w.proc.join(timeout=1)
            how = _signal_name(w.proc.exitcode)
            self.stats["crashes"] += 1
            w.job = None
            self._replace(w, kill=True)
            if attempt == 0:
                self.stats["retried"] += 1
                queue.appendleft((seq, tag, task, 1))  # once more, in a fresh worker
            else:
                results[seq] = (tag, self.on_failure(task, WorkerFailure(
                    "worker.crash", f"the decode worker died twice on this file ({how})")))
            return
        if time.monotonic() >= deadline:
            self.stats["timeouts"] += 1
            w.job = None
            self._replace(w, kill=True)
            results[seq] = (tag, self.on_failure(task, WorkerFailure(
                "limit.timeout", f"no result within {self.limits.timeout_s:g} s; the worker was killed")))
