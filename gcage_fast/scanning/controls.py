"""What every runner keeps a scan under (the local runner and gcage_fast.scanning.ray_runner): the
GCAGE_FAULT_AT test hook, the signals that stop a scan promptly, and the circuit breaker for a broken environment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading

from gcage_fast import env
from gcage_fast.errors import CircuitBreakerError, Interrupted
from gcage_fast.ingest.prepare import Prepared

__all__ = ["CircuitBreaker", "Fault", "stop_on_signals"]


class Fault:
    """The GCAGE_FAULT_AT test hook: SIGKILL ourselves at a chosen point, fail a write with ENOSPC, or wait there
    for a signal (see gcage_fast.env)."""

    def __init__(self) -> None:
        self.point = env.fault_point()

    def __call__(self, phase: str, n: int) -> None:
        if self.point is None:
            return
        if self.point == (phase, n):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.point == ("pause", n) and phase == "image":
            os.write(2, f"GCAGE_FAULT_AT: paused after {n} images\n".encode())  # the test waits for this line
            signal.pause()  # a test's signal ends the wait: the scan cannot finish before it is interrupted
        if self.point == ("enospc", n) and phase == "in_write":
            raise OSError(errno.ENOSPC, "No space left on device (GCAGE_FAULT_AT)")


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM (and SIGINT) stop the scan promptly: the exception unwinds through the worker pool, which kills
    its workers, and leaves the shard in flight unmarked for --resume. Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


#: Failures that do not depend on what a file contains; a long run of one of them trips the circuit breaker.
_ENVIRONMENT_ERRORS = frozenset({"worker.crash", "worker.error"})


class CircuitBreaker:
    """Stops the scan after ``limit`` consecutive inputs (across shards) failed with the same environment error."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.code: str | None = None
        self.streak = 0

    def check(self, prep: Prepared) -> None:
        if prep.error_code not in _ENVIRONMENT_ERRORS:
            self.code, self.streak = None, 0
            return
        self.streak = self.streak + 1 if prep.error_code == self.code else 1
        self.code = prep.error_code
        if self.streak >= self.limit:
            raise CircuitBreakerError(
                f"{self.streak} consecutive files failed with {self.code} ({prep.error_detail}); this points "
                "at the environment rather than the inputs, so the scan stops here (fix it, then --resume)")
