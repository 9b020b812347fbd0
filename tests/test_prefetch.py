"""The prefetch thread keeps order, hands the producer's exception to the consumer, and stops when the consumer
leaves early."""

import threading
import time

import pytest

from gcage_fast.ingest.prefetch import Prefetch


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
    produced = []

    def gen():
        for i in range(10_000):
            produced.append(i)
            yield i

    before = threading.active_count()
    with Prefetch(gen(), depth=2) as items:
        assert next(items) == 0
    time.sleep(0.3)
    assert threading.active_count() == before
    assert len(produced) <= 5  # bounded by the queue depth, not the source
