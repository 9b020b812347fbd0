"""Progress of ``gcage-fast scan`` without a terminal: one line per ``--log-every`` seconds and a last one,
as text or as JSON (``--log-format json``, the library's log lines too); the in-place line on a terminal.

Which updates write a line is checked with a fake clock: nothing here sleeps or measures time."""

from __future__ import annotations

import io
import json
import logging

import pytest

import genimages as gen
from gcage_fast.cli.common import JsonFormatter, setup_logging
from gcage_fast.cli.progress import JSON_KEYS, Progress, duration
from gcage_fast.scanning.summary import ScanProgress
from helpers import run_cli

LOG_KEYS = ["event", "time", "level", "message"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def update(done: int, todo: int = 10, **kw) -> ScanProgress:
    values = dict(total=todo + 2, errors=0, patches=3 * done, elapsed=float(done), committed=2)
    return ScanProgress(done, todo, **{**values, **kw})


def feed(progress: Progress, clock: FakeClock, updates: list[tuple[float, ScanProgress]]) -> list[int]:
    """Call ``progress`` with each update at its time; the indexes of the updates that wrote a line."""
    wrote, before = [], progress.stream.getvalue()
    for i, (t, p) in enumerate(updates):
        clock.now = t
        progress(p)
        if progress.stream.getvalue() != before:
            wrote.append(i)
            before = progress.stream.getvalue()
    return wrote


def make(clock: FakeClock, **kw) -> Progress:
    kw.setdefault("tty", False)
    return Progress(stream=io.StringIO(), clock=clock, wall=lambda: 1_700_000_000.25, **kw)


# (time, update) pairs of a scan of 10 inputs that starts at t = 0
UPDATES = [(1.0, update(1)), (4.9, update(2)), (5.0, update(3)), (6.0, update(4)), (9.9, update(5)),
           (10.0, update(6)), (17.0, update(7)), (17.5, update(8)), (18.0, update(10))]


def test_text_lines_at_the_interval_and_a_last_one():
    clock = FakeClock()
    progress = make(clock, log_every=5)
    # 5.0: 5 s after the start; 10.0: 5 s after that line; 17.0: 7 s after; 18.0: the last input
    assert feed(progress, clock, UPDATES) == [2, 5, 6, 8]
    progress.close()  # the last update has its line: nothing more
    lines = progress.stream.getvalue().splitlines()
    assert lines == [
        "gcage-fast: progress 3/10 inputs (30%), 2 committed of 12, 1.0 img/s, 3.0 patches/s, errors 0, "
        "elapsed 0m03s, ETA 0m07s",
        "gcage-fast: progress 6/10 inputs (60%), 2 committed of 12, 1.0 img/s, 3.0 patches/s, errors 0, "
        "elapsed 0m06s, ETA 0m04s",
        "gcage-fast: progress 7/10 inputs (70%), 2 committed of 12, 1.0 img/s, 3.0 patches/s, errors 0, "
        "elapsed 0m07s, ETA 0m03s",
        "gcage-fast: progress 10/10 inputs (100%), 2 committed of 12, 1.0 img/s, 3.0 patches/s, errors 0, "
        "elapsed 0m10s, ETA 0m00s",
    ]


def test_text_line_rates_eta_and_durations():
    clock = FakeClock()
    progress = make(clock, log_every=1)
    clock.now = 1
    progress(ScanProgress(87, 320, 400, 2, 283, 7.07, 80))
    clock.now = 2
    progress(ScanProgress(0, 320, 400, 0, 0, 0.4, 80))  # nothing done yet: no rate, no ETA
    assert progress.stream.getvalue().splitlines() == [
        "gcage-fast: progress 87/320 inputs (27%), 80 committed of 400, 12.3 img/s, 40.0 patches/s, errors 2, "
        "elapsed 0m07s, ETA 0m18s",
        "gcage-fast: progress 0/320 inputs (0%), 80 committed of 400, 0.0 img/s, 0.0 patches/s, errors 0, "
        "elapsed 0m00s, ETA unknown",
    ]
    assert [duration(s) for s in (0, 7.9, 61, 3599, 3600, 7503)] == [
        "0m00s", "0m07s", "1m01s", "59m59s", "1h00m00s", "2h05m03s"]


def test_json_lines_at_the_same_updates_with_the_documented_keys():
    clock = FakeClock()
    progress = make(clock, log_every=5, log_format="json")
    assert feed(progress, clock, UPDATES) == [2, 5, 6, 8]
    objects = [json.loads(line) for line in progress.stream.getvalue().splitlines()]
    assert [list(o) for o in objects] == [list(JSON_KEYS)] * 4
    assert list(JSON_KEYS) == ["event", "time", "done", "todo", "total", "committed", "errors", "patches",
                               "elapsed_s", "images_per_s", "patches_per_s", "eta_s"]
    assert objects[0] == {"event": "progress", "time": "2023-11-14T22:13:20.250Z", "done": 3, "todo": 10,
                          "total": 12, "committed": 2, "errors": 0, "patches": 9, "elapsed_s": 3.0,
                          "images_per_s": 1.0, "patches_per_s": 3.0, "eta_s": 7.0}
    assert [(o["done"], o["eta_s"]) for o in objects] == [(3, 7.0), (6, 4.0), (7, 3.0), (10, 0.0)]
    clock.now = 30
    progress(update(0))
    assert json.loads(progress.stream.getvalue().splitlines()[-1])["eta_s"] is None  # no rate yet


def test_a_scan_that_stops_early_ends_its_log_with_where_it_stood():
    clock = FakeClock()
    progress = make(clock, log_every=5)
    assert feed(progress, clock, UPDATES[:5]) == [2]  # stops after input 5 of 10 (an error, an interrupt)
    progress.close()
    lines = progress.stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("gcage-fast: progress 5/10 inputs (50%), ")
    progress.close()
    assert len(progress.stream.getvalue().splitlines()) == 2


def test_no_update_no_line():
    progress = make(FakeClock(), log_every=5)
    progress.close()
    assert progress.stream.getvalue() == ""


@pytest.mark.parametrize("kw", [dict(log_every=0), dict(log_every=0, log_format="json"),
                                dict(log_every=0, log_format="json", tty=True),
                                dict(log_every=5, quiet=True), dict(log_every=5, quiet=True, log_format="json"),
                                dict(log_every=5, quiet=True, tty=True)])
def test_log_every_0_and_quiet_write_nothing(kw):
    clock = FakeClock()
    progress = make(clock, **kw)
    assert feed(progress, clock, UPDATES[:5]) == []
    progress.close()
    assert feed(progress, clock, UPDATES) == []
    progress.close()
    assert progress.stream.getvalue() == ""


def test_terminal_line_refreshes_in_place():
    clock = FakeClock()
    progress = make(clock, log_every=0, tty=True)  # --log-every is for logs; a terminal refreshes 5 times a second
    updates = [(0.0, update(1)), (0.1, update(2)), (0.25, update(3)), (0.3, update(4)), (0.31, update(10))]
    assert feed(progress, clock, updates) == [0, 2, 4]
    text = progress.stream.getvalue()
    assert "\n" not in text and text.count("\r") == 3
    assert text.split("\r")[-1].rstrip() == ("10/10 images  1.0 img/s  3.0 patches/s  ETA 0m00s  errors 0  "
                                             "committed 2/12")
    progress.close()
    assert progress.stream.getvalue() == text + "\n"


def test_json_on_a_terminal_is_lines_not_in_place():
    clock = FakeClock()
    progress = make(clock, log_every=5, log_format="json", tty=True)
    assert feed(progress, clock, UPDATES) == [2, 5, 6, 8]
    assert "\r" not in progress.stream.getvalue()


def test_tty_is_read_from_the_stream():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Progress(stream=Terminal(), log_every=5).in_place
    assert not Progress(stream=io.StringIO(), log_every=5).in_place


@pytest.fixture
def restore_logger():
    log = logging.getLogger("gcage_fast")
    state = log.handlers[:], log.level, log.propagate
    yield log
    log.handlers[:], log.level, log.propagate = state[0], state[1], state[2]


def test_library_log_as_json(capsys, restore_logger):
    setup_logging(False, "json")
    restore_logger.info("skipping %s: an earlier output", "a\x1b]0;x\x07b")
    restore_logger.warning("no inputs found in \u00e9t\u00e9")
    setup_logging(True, "json")
    restore_logger.info("not shown when quiet")
    restore_logger.error("shown")
    objects = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [list(o) for o in objects] == [LOG_KEYS] * 3
    assert [(o["event"], o["level"], o["message"]) for o in objects] == [
        ("log", "info", "skipping a\x1b]0;x\x07b: an earlier output"), ("log", "warning", "no inputs found in été"),
        ("log", "error", "shown")]
    assert all(o["time"].endswith("Z") and o["time"][10] == "T" for o in objects)


def test_library_log_as_text_by_default(capsys, restore_logger):
    setup_logging(False)
    restore_logger.warning("no inputs found in x\x1b[2J")
    assert capsys.readouterr().err == "gcage-fast: no inputs found in x\\x1b[2J\n"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_scan_without_a_terminal_logs_progress(tiny_model_dir, tmp_path, log_format):
    """A real scan with stderr a pipe, as under nohup or cron: progress lines at a tiny interval, the last one
    at the last input; with json, every line of stderr is a JSON object."""
    for i in range(3):
        gen.save_image(tmp_path / "in" / f"{i}.jpg", 260, 240, i)
    proc = run_cli("scan", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_dir, "--backend",
                   "torch", "--workers", "0", "--log-every", "0.000001", "--log-format", log_format)
    assert proc.stdout.startswith("Scanned 3 inputs into ")
    lines = proc.stderr.splitlines()
    if log_format == "json":
        objects = [json.loads(line) for line in lines]
        progress = [o for o in objects if o["event"] == "progress"]
        assert progress and all(list(o) == list(JSON_KEYS) for o in progress)
        assert all(list(o) == LOG_KEYS for o in objects if o["event"] != "progress")
        assert (progress[-1]["done"], progress[-1]["todo"], progress[-1]["total"]) == (3, 3, 3)
    else:
        progress = [ln for ln in lines if ln.startswith("gcage-fast: progress ")]
        assert len(progress) >= 2, proc.stderr
        assert progress[-1].startswith("gcage-fast: progress 3/3 inputs (100%), ")
    assert len(progress) >= 2  # one for each update: some before the last input and the last one


def test_readme_examples_are_what_the_scan_writes():
    """The README's example lines are those of the updates above, as the code writes them."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    clock = FakeClock()
    text, as_json = make(clock, log_every=1), make(clock, log_every=1, log_format="json")
    clock.now = 1
    text(ScanProgress(87, 320, 400, 2, 283, 7.07, 80))
    as_json(update(3))
    record = logging.LogRecord("gcage_fast", logging.WARNING, __file__, 1, "no inputs found in %s", ("empty/",),
                               None)
    record.created = 1_700_000_000.25
    lines = [p.stream.getvalue().rstrip("\n") for p in (text, as_json)] + [JsonFormatter().format(record)]
    for line in lines:
        assert f"\n{line}\n" in readme, line
