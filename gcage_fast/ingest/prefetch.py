"""Consume an iterator in a background thread, so that producing the next items overlaps with the consumer's
work. The scan uses it to keep decode workers busy while the engines run: ONNX Runtime and torch release the GIL
during inference, so the thread can hand new files to the workers and collect their results meanwhile (without
it, a worker finishes its file and then waits for the engine to finish before it gets the next one).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Prefetch"]

T = TypeVar("T")
_DONE = object()


class Prefetch(Generic[T]):
    """``with Prefetch(iterator, depth) as items: for x in items: ...`` — at most ``depth`` items wait in the
    queue. An exception raised by the iterator is re-raised in the consumer; leaving the block early stops the
    thread (within ``join_timeout`` seconds, else it is left to finish on its own as a daemon)."""

    def __init__(self, source: Iterator[T], depth: int, join_timeout: float = 5.0) -> None:
        self._source = source
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._join_timeout = join_timeout
        self._thread = threading.Thread(target=self._run, name="gcage-prefetch", daemon=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put((True, item)):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put((False, exc))
            return
        self._put((True, _DONE))

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._items()

    def _items(self) -> Iterator[T]:
        while True:
            try:
                ok, item = self._queue.get(timeout=0.1)  # a timeout keeps the main thread responsive to signals
            except queue.Empty:
                continue
            if not ok:
                raise item  # type: ignore[misc]
            if item is _DONE:
                return
            yield item

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self._join_timeout)
