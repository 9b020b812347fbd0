"""Consume an iterator in a background thread, so that producing the next items overlaps with the consumer's
work. The scan uses it to keep decode workers busy while the engines run: ONNX Runtime and torch release the GIL
during inference, so the thread can hand new files to the workers and collect their results meanwhile (without
it, a worker finishes its file and then waits for the engine to finish before it gets the next one).

What waits is bounded in count (``depth``) and, optionally, in bytes (``max_bytes``, each item weighed by
``size_of``): on the device path an item holds a whole decoded image, so a count alone bounds nothing useful.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Prefetch"]

T = TypeVar("T")
_DONE = object()
_POLL_S = 0.1  # waits wake up this often, so the main thread stays responsive to signals


class Prefetch(Generic[T]):
    """``with Prefetch(iterator, depth) as items: for x in items: ...`` — at most ``depth`` items wait in the
    queue. An exception raised by the iterator is re-raised in the consumer; leaving the block early stops the
    thread (within ``join_timeout`` seconds, else it is left to finish on its own as a daemon).

    With ``max_bytes``, the items waiting also weigh at most ``max_bytes`` together (``size_of(item)`` each, which
    is then required): the thread holds the next item back until the consumer has taken enough. An item is always
    let in when nothing waits, so one item larger than ``max_bytes`` passes alone instead of blocking forever.
    Besides what waits, the thread holds at most the one item it is trying to hand over; what the consumer took
    is no longer counted.
    """

    def __init__(self, source: Iterator[T], depth: int, join_timeout: float = 5.0, *, max_bytes: int | None = None,
                 size_of: Callable[[T], int] | None = None) -> None:
        if max_bytes is not None and size_of is None:
            raise ValueError("max_bytes needs size_of, the function that weighs an item")
        self._source = source
        self._depth = max(1, depth)
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._items: deque[tuple[bool, object, int]] = deque()  # (ok, item or exception, bytes)
        self._held = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._join_timeout = join_timeout
        self._thread = threading.Thread(target=self._run, name="gcage-prefetch", daemon=True)

    @property
    def held_bytes(self) -> int:
        """Bytes of the items waiting for the consumer now (0 without ``max_bytes``)."""
        with self._cond:
            return self._held

    @property
    def waiting(self) -> int:
        """Items waiting for the consumer now."""
        with self._cond:
            return len(self._items)

    def _fits(self, size: int) -> bool:
        if not self._items:
            return True  # an item alone always passes, however large
        if len(self._items) >= self._depth:
            return False
        return self._max_bytes is None or self._held + size <= self._max_bytes

    def _put(self, ok: bool, item: object, size: int = 0, bounded: bool = True) -> bool:
        """Queue ``item`` once it fits (``bounded``; the end marker and an error are let in at once). False when
        the consumer left first."""
        with self._cond:
            while bounded and not self._fits(size):
                if self._stop.is_set():
                    return False
                self._cond.wait(_POLL_S)
            if self._stop.is_set():
                return False
            self._items.append((ok, item, size))
            self._held += size
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        try:
            for item in self._source:
                size = int(self._size_of(item)) if self._max_bytes is not None else 0
                if not self._put(True, item, size):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(False, exc, bounded=False)
            return
        self._put(True, _DONE, bounded=False)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._items_out()

    def _take(self) -> tuple[bool, object]:
        with self._cond:
            while not self._items:
                self._cond.wait(_POLL_S)
            ok, item, size = self._items.popleft()
            self._held -= size
            self._cond.notify_all()
            return ok, item

    def _items_out(self) -> Iterator[T]:
        while True:
            ok, item = self._take()
            if not ok:
                raise item  # type: ignore[misc]
            if item is _DONE:
                return
            yield item  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(self._join_timeout)
