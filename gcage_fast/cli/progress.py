"""What ``gcage-fast scan`` shows while it runs (:class:`Progress`, the ``progress`` callback of the scan).

- On a terminal (stderr is a TTY) with ``--log-format text``: one line refreshed in place, at most 5 times a
  second, and always for the last input.
- Otherwise (stderr is a file or a pipe: nohup, cron, containers; or ``--log-format json`` anywhere): whole
  lines, for log files and collectors, with ``--log-every SECONDS`` between them. The rule: a progress update
  writes a line when at least SECONDS have passed since the last line (since the scan started, for the first);
  the update of the last input (``done == todo``) always writes one; and when the scan stops before that
  (an error, an interrupt), :meth:`Progress.close` writes where it stood, so a log always ends with the last
  state. ``--log-every 0`` writes none.
- ``-q/--quiet``: nothing at all.

A text line reads ``gcage-fast: progress 87/320 inputs (27%), 80 committed of 320, 12.3 img/s, 40.1 patches/s,
errors 2, elapsed 0m07s, ETA 0m19s`` (``ETA unknown`` before the first input is done); a JSON line is one object
with the keys of :data:`JSON_KEYS`. ``done``/``todo`` count this attempt's inputs, ``committed``/``total`` those
of the whole output (earlier attempts included).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from gcage_fast.cli.common import json_event

__all__ = ["Progress", "JSON_KEYS", "progress_fields", "progress_text", "duration"]

#: The keys of a JSON progress line, in order.
JSON_KEYS = ("event", "time", "done", "todo", "total", "committed", "errors", "patches", "elapsed_s",
             "images_per_s", "patches_per_s", "eta_s")
#: Seconds between refreshes of the in-place line on a terminal.
TTY_REFRESH_S = 0.2


def duration(seconds: float) -> str:
    """``0m07s``, ``12m40s``, ``2h05m03s`` (whole seconds, rounded down)."""
    s = max(int(seconds), 0)
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s"


def progress_fields(p: Any) -> dict[str, Any]:
    """The numbers of a :class:`gcage_fast.scanning.summary.ScanProgress` with its rates and ETA (``eta_s`` is
    None while no input is done: there is no rate yet)."""
    images_per_s = p.done / p.elapsed if p.elapsed > 0 else 0.0
    patches_per_s = p.patches / p.elapsed if p.elapsed > 0 else 0.0
    eta = (p.todo - p.done) / images_per_s if images_per_s > 0 else (0.0 if p.done >= p.todo else None)
    return {"done": p.done, "todo": p.todo, "total": p.total, "committed": p.committed, "errors": p.errors,
            "patches": p.patches, "elapsed_s": round(p.elapsed, 3), "images_per_s": round(images_per_s, 3),
            "patches_per_s": round(patches_per_s, 3), "eta_s": None if eta is None else round(eta, 1)}


def progress_text(p: Any) -> str:
    """The text progress line (without the ``gcage-fast: progress`` prefix)."""
    f = progress_fields(p)
    percent = 100 * p.done // p.todo if p.todo else 100
    eta = _eta(f)
    return (f"{p.done}/{p.todo} inputs ({percent}%), {p.committed} committed of {p.total}, "
            f"{f['images_per_s']:.1f} img/s, {f['patches_per_s']:.1f} patches/s, errors {p.errors}, "
            f"elapsed {duration(p.elapsed)}, ETA {eta}")


class Progress:
    """The ``progress`` callback of ``gcage-fast scan``: call it with each ScanProgress, then :meth:`close` it.

    Args:
        quiet: show nothing (``-q``).
        log_every: seconds between lines without a terminal or in JSON (0: no lines).
        log_format: ``text`` or ``json``.
        stream: where it writes. [default: sys.stderr as it is when the object is made]
        clock: seconds, for the intervals (tests pass a fake clock).
        wall: seconds since the epoch, for the ``time`` of JSON lines.
        tty: whether ``stream`` is a terminal. [default: ``stream.isatty()``]
    """

    def __init__(self, *, quiet: bool = False, log_every: float = 30.0, log_format: str = "text",
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, tty: bool | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        if tty is None:
            tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.json = log_format == "json"
        self.in_place = tty and not self.json and not quiet
        self.lines = not quiet and not self.in_place and log_every > 0
        self.interval = TTY_REFRESH_S if self.in_place else log_every
        self.clock, self.wall = clock, wall
        self.last = clock()  # when the last line was written (the start, before the first)
        self.shown = False  # in place: something is on the line
        self.pending: Any = None  # lines: the latest update, when no line shows it yet

    def __call__(self, p: Any) -> None:
        if not (self.in_place or self.lines):
            return
        now = self.clock()
        final = p.done >= p.todo
        if self.in_place:
            if final or not self.shown or now - self.last >= self.interval:
                self.last, self.shown = now, True
                f = progress_fields(p)
                line = (f"\r{p.done}/{p.todo} images  {f['images_per_s']:.1f} img/s  {f['patches_per_s']:.1f} "
                        f"patches/s  ETA {_eta(f)}  errors {p.errors}  committed {p.committed}/{p.total}")
                self._write(line.ljust(90))
            return
        self.pending = p
        if final or now - self.last >= self.interval:
            self.last = now
            self._line(p)

    def close(self) -> None:
        """End the display: the terminal line gets its newline; in lines, an update that no line shows yet (the
        scan stopped before its last input) gets one."""
        if self.in_place and self.shown:
            self._write("\n")
            self.shown = False
        elif self.lines and self.pending is not None:
            self._line(self.pending)

    def _line(self, p: Any) -> None:
        self.pending = None
        if self.json:
            self._write(json_event("progress", self.wall(), **progress_fields(p)) + "\n")
        else:
            self._write(f"gcage-fast: progress {progress_text(p)}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _eta(fields: dict[str, Any]) -> str:
    return "unknown" if fields["eta_s"] is None else duration(fields["eta_s"])
