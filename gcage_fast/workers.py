"""The decode worker pool: spawned processes (no inherited torch/ORT threads) that die with their parent, and an
ordered, bounded stream of results."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Generic, TypeVar

from gcage_fast.errors import GcageError

__all__ = ["WorkerPool", "WorkerPoolBroken", "ordered_map"]

T = TypeVar("T")
R = TypeVar("R")
_PR_SET_PDEATHSIG = 1


class WorkerPoolBroken(GcageError):
    """A worker process died (native crash or killed); the run stops and can be resumed."""


def _worker_init() -> None:
    """In each worker: die with the parent (Linux), and leave Ctrl-C to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass


class _Ready(Generic[R]):
    def __init__(self, value: R) -> None:
        self.value = value

    def result(self) -> R:
        return self.value


class WorkerPool:
    """``workers == 0`` runs tasks inline in the calling process (debugging, tests)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 0:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, fn: Callable[[T], R], arg: T) -> Future | _Ready:
        if self._pool is None:
            return _Ready(fn(arg))
        return self._pool.submit(fn, arg)


def ordered_map(pool: WorkerPool, fn: Callable[[T], R], items: Iterable[tuple[object, T | None, R | None]],
                window: int, on_error: Callable[[T, BaseException], R]) -> Iterator[tuple[object, R]]:
    """Map ``fn`` over ``items`` in the pool, yielding ``(tag, result)`` in input order.

    Each item is ``(tag, arg, ready)``: when ``ready`` is not None it is yielded as is (no task). At most
    ``window`` tasks are in flight, which bounds memory. A task that raises gives ``on_error(arg, exc)``.
    """
    pending: deque = deque()

    def pop():
        tag, arg, fut = pending.popleft()
        try:
            return tag, fut.result()
        except BrokenProcessPool as exc:
            raise WorkerPoolBroken(f"a decode worker process died unexpectedly ({exc}); "
                                   "run the same command with --resume to continue") from None
        except Exception as exc:  # noqa: BLE001 - a worker bug must cost one row, not the run
            return tag, on_error(arg, exc)

    for tag, arg, ready in items:
        pending.append((tag, arg, _Ready(ready) if ready is not None else pool.submit(fn, arg)))
        while len(pending) > window or (pending and isinstance(pending[0][2], _Ready)):
            yield pop()
    while pending:
        yield pop()
