"""The prefetch thread keeps order, hands the producer's exception to the consumer, stops when the consumer leaves
early, and bounds what waits in count and in bytes (an item larger than the budget still passes, alone).

No test depends on timing: the source tells the test when the thread asks it for an item (an event per item),
and the thread can only ask for item i+1 once item i is queued, so "item i+1 was not asked for" is a fact, not a
race. Event waits have a generous timeout only so that a broken Prefetch fails instead of hanging."""

import threading

import pytest

from gcage_fast.ingest.prefetch import Prefetch

WAIT_S = 30.0


class Source:
    """Yields ``(index, size)`` for ``sizes``; ``asked[i]`` is set when the thread asks for item ``i``, and
    ``held[i]`` records the prefetch's waiting bytes at that moment (nothing is in the thread's hands then)."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.asked = [threading.Event() for _ in range(len(sizes) + 1)]
        self.held: list[int] = []
        self.prefetch = None

    def __iter__(self):
        for i, size in enumerate(self.sizes):
            self.held.append(self.prefetch.held_bytes if self.prefetch is not None else 0)
            self.asked[i].set()
            yield i, size
        self.asked[len(self.sizes)].set()

    def wait_asked(self, i):
        assert self.asked[i].wait(WAIT_S), f"the prefetch thread never asked for item {i}"


def _bounded(sizes, depth, max_bytes):
    src = Source(sizes)
    src.prefetch = Prefetch(iter(src), depth, max_bytes=max_bytes, size_of=lambda item: item[1])
    return src, src.prefetch


def test_order_and_completion():
    with Prefetch(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))


def test_producer_errors_reach_the_consumer():
    def gen():
        yield 1
        raise ValueError("broken input feed")

    with pytest.raises(ValueError, match="broken input feed"):
        with Prefetch(gen(), depth=2) as items:
            assert next(items) == 1
            next(items)


def test_leaving_early_stops_the_thread():
    src = Source(list(range(100)))
    before = threading.active_count()
    with Prefetch(iter(src), depth=2) as items:
        assert next(items) == (0, 0)
    assert threading.active_count() == before  # __exit__ joined it
    asked = sum(e.is_set() for e in src.asked)
    assert asked <= 4  # bounded by the queue depth (2 waiting + 1 in hand + 1 taken), not by the source


def test_depth_bounds_the_items_waiting():
    src = Source([1] * 6)
    with Prefetch(iter(src), depth=2) as items:
        src.wait_asked(2)  # items 0 and 1 wait; the thread holds item 2 and cannot queue it
        assert not src.asked[3].is_set()
        assert next(items) == (0, 1)
        src.wait_asked(3)  # item 2 went in, so the thread asked for the next
        assert not src.asked[4].is_set()
        assert [i for i, _ in items] == [1, 2, 3, 4, 5]


def test_bytes_waiting_never_exceed_max_bytes():
    sizes = [40, 30, 50, 10, 10, 10, 60, 20]
    src, pf = _bounded(sizes, depth=100, max_bytes=100)
    with pf as items:
        src.wait_asked(2)  # 40 + 30 wait; 50 more would make 120
        assert not src.asked[3].is_set() and pf.held_bytes == 70 and pf.waiting == 2
        assert next(items) == (0, 40)
        src.wait_asked(5)  # 30 + 50 + 10 + 10 = 100 wait (<= the budget); the next 10 would exceed it
        assert not src.asked[6].is_set() and pf.held_bytes == 100 and pf.waiting == 4
        assert list(items) == list(enumerate(sizes))[1:]
    assert max(src.held) <= 100
    assert pf.held_bytes == 0


def test_an_item_larger_than_the_budget_passes_alone():
    sizes = [500, 5, 500, 1]
    src, pf = _bounded(sizes, depth=100, max_bytes=10)
    with pf as items:
        src.wait_asked(1)  # the 500-byte item waits alone; the 5-byte one must wait for it to be taken
        assert not src.asked[2].is_set() and pf.held_bytes == 500 and pf.waiting == 1
        assert list(items) == list(enumerate(sizes))  # no deadlock: each large item went through alone


def test_leaving_early_unblocks_a_thread_waiting_for_bytes():
    src, pf = _bounded([8, 8, 8, 8], depth=100, max_bytes=10)
    before = threading.active_count()
    with pf as items:
        assert next(items) == (0, 8)
        src.wait_asked(2)  # item 1 waits; the thread holds item 2, which does not fit
    assert threading.active_count() == before
    assert not src.asked[3].is_set()


def test_an_error_is_not_held_back_by_the_budget():
    def gen():
        yield "a" * 8
        raise ValueError("broken input feed")

    with pytest.raises(ValueError, match="broken input feed"):
        with Prefetch(gen(), depth=1, max_bytes=8, size_of=len) as items:
            assert next(items) == "a" * 8
            next(items)


def test_max_bytes_needs_a_size_function():
    with pytest.raises(ValueError, match="size_of"):
        Prefetch(iter([]), 2, max_bytes=10)


# --- the device path's in-flight bounds (gcage_fast.scoring.factory) -----------------------------------------


def test_inflight_window_bounds_the_pool_in_bytes_and_in_count():
    from gcage_fast.scoring.factory import inflight_window

    mb = 2**20
    assert inflight_window(3, 1 * mb, 4096 * mb) == 12  # small images: the usual 4 per worker
    assert inflight_window(0, 1 * mb, 4096 * mb) == 2
    assert inflight_window(15, 183 * mb, 4096 * mb) == 22  # large images: the budget decides
    assert inflight_window(15, 5000 * mb, 4096 * mb) == 1  # larger than the budget: one at a time, never 0
    for workers in (1, 4, 15):
        for size in (1, 10 * mb, 100 * mb, 192_000_000, 3 * 2**30):
            window = inflight_window(workers, size, 2**30)
            assert 1 <= window <= max(2, 4 * workers)
            assert window * size <= 2**30 or window == 1


def test_max_device_image_bytes_covers_every_size_the_limits_let_through():
    import math

    from gcage_fast.config import Limits
    from gcage_fast.scoring.factory import DEVICE_INFLIGHT_BYTES, inflight_window, max_device_image_bytes
    from gcage_fast.scoring.patches import PATCH

    assert max_device_image_bytes(Limits()) == 3 * 64_000_000
    assert inflight_window(15, max_device_image_bytes(Limits())) == DEVICE_INFLIGHT_BYTES // 192_000_000 == 22
    cases = [(Limits(max_pixels=1000), True), (Limits(max_pixels=60_000, max_aspect=3.0), True),  # padding decides
             (Limits(max_pixels=300_000, max_aspect=1.0), False), (Limits(max_pixels=120_000), False)]
    for limits, exact in cases:
        worst = 0  # every allowed (short, long) size, padded as gcage_fast.scoring.patches.pad_to_patch pads
        for short in range(1, math.isqrt(limits.max_pixels) + 1):
            for long in range(short, int(limits.max_aspect * short) + 1):
                if short * long > limits.max_pixels:
                    break
                worst = max(worst, 3 * max(short, PATCH) * max(long, PATCH))
        bound = max_device_image_bytes(limits)
        assert worst <= bound <= max(worst, 3 * limits.max_pixels), limits
        assert bound == worst or not exact, limits


def test_prepared_nbytes_counts_each_array_once():
    import numpy as np

    from gcage_fast.ingest.prepare import Prepared
    from gcage_fast.scoring.factory import prepared_nbytes

    image = np.zeros((300, 400, 3), np.uint8)
    assert prepared_nbytes(Prepared(index=0)) == 0
    assert prepared_nbytes(Prepared(index=0, image=image, preview=image)) == image.nbytes  # preview = the image
    patches = np.zeros((5, 224, 224, 3), np.uint8)
    preview = np.zeros((10, 10, 3), np.uint8)
    assert prepared_nbytes(Prepared(index=0, patches=patches, preview=preview)) == patches.nbytes + preview.nbytes
