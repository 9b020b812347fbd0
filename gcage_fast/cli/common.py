"""What every ``gcage-fast`` command shares: its settings, its error map, its output helpers, its option bundles.

The command modules import this one and the library only, never the ``gcage_fast.cli`` package (which imports
them to register their commands), so no module needs the group to exist before it.

- :func:`command` makes a click command whose library errors become one ``Error: ...`` line and exit code 1
  (Ctrl-C: 130; a stopping signal: 128 + its number), also when it runs outside the group.
- :func:`model_option`, :func:`engine_options`, :func:`throughput_options`, :func:`limit_options` and
  :func:`json_flag` declare an option, or a set of them, with one name, type and default wherever they appear
  (:func:`bundle` makes more such sets).
- :func:`from_options` turns a command's ``**options`` into a library dataclass, field by field.
- :func:`output_file` checks, before any slow work, that a file a command writes (a report, a picture, a JSON
  record) can be written; :func:`output_option` declares ``-o/--output`` with the old long names as hidden aliases.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from typing import Any, TypeVar

import click

from gcage_fast.config import BACKENDS, GRIDS, Limits
from gcage_fast.errors import GcageError, Interrupted, OutputError
from gcage_fast.precision import SCAN_PRECISIONS
from gcage_fast.text import printable

__all__ = ["CONTEXT", "PRECISION_HELP", "MODEL_HELP", "THREADS_HELP", "LIMIT_FIELDS", "Command", "command",
           "library_errors", "output_file", "output_option", "require_output", "EscapingFormatter", "JsonFormatter",
           "json_event", "setup_logging", "emit_json", "int_list", "from_options", "bundle", "model_option",
           "engine_options", "throughput_options", "limit_options", "json_flag"]

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
PRECISION_HELP = ("fp32; fp16 (ort/tensorrt graphs, or torch autocast on cuda); int8 (ort/tensorrt Q/DQ graphs); "
                  "bf16 (torch autocast).  docs/PRECISION.md has the measured speed and accuracy of each.")
MODEL_HELP = "Model name or directory.  [default: the bundled model]"
THREADS_HELP = "Engine threads.  [default: one per core]"


# --------------------------------------------------------------------------------------------------- errors
@contextmanager
def library_errors() -> Iterator[None]:
    """Turns what the library raises into what a shell sees: a :class:`GcageError` becomes one ``Error: ...``
    line on stderr and exit 1, :class:`Interrupted` (SIGTERM, SIGHUP) exit 128 + the signal, Ctrl-C exit 130."""
    try:
        yield
    except Interrupted as exc:
        click.echo(f"\nError: {exc}", err=True)
        sys.exit(exc.exit_code)
    except GcageError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("\nInterrupted; run the same command with --resume to continue.", err=True)
        sys.exit(130)


class Command(click.Command):
    """A click command that runs under :func:`library_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with library_errors():
            return super().invoke(ctx)


def command(name: str | None = None) -> Callable[[Callable[..., Any]], Command]:
    """``@click.command`` for gcage-fast: the shared context settings and the error map of :class:`Command`."""
    return click.command(name, cls=Command, context_settings=CONTEXT)


# --------------------------------------------------------------------------------------------------- output
def output_file(path: str | None, what: str) -> None:
    """Check that the file ``path`` (``what``: "report", "picture", ...) can be written, before the slow work
    that produces it: its missing parent directories are created (as a file output's are, like ``mkdir -p``), then
    a probe file is created and removed beside it. ``None`` is no output.

    Raises:
        OutputError: the directory cannot be created, or nothing can be written there (read-only location,
            /proc, no permission); the message names the path and the system's reason.
    """
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the directory of the {what} {path}: {exc.strerror}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.probe-")
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {path}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def output_option(help: str, *, aliases: tuple[str, ...] = (), **kwargs: Any) -> Decorator:
    """``-o/--output`` (parameter ``output``, required), the one name every command gives what it writes;
    ``aliases`` are older long names (``--html``) kept as hidden options that fill the same parameter (the last
    one given wins). With aliases click cannot enforce ``required``: the command calls :func:`require_output`."""
    if not aliases:
        return click.option("-o", "--output", "output", required=True, help=help, **kwargs)
    return bundle(click.option("-o", "--output", "output", help=f"{help}  [required]", **kwargs),
                  *(click.option(alias, "output", hidden=True, **kwargs) for alias in aliases))


def require_output(output: str | None) -> str:
    """``output`` of an :func:`output_option` with aliases; click's usage error (exit 2) when none was given."""
    if output is None:
        raise click.UsageError("Missing option '-o' / '--output'.")
    return output


class EscapingFormatter(logging.Formatter):
    """Control characters in messages (from file names, exception texts) are escaped before they reach a
    terminal: a name like ``\\x1b]0;...`` must not drive the operator's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def json_event(event: str, when: float, **values: Any) -> str:
    """One JSON log line (no newline): ``{"event": event, "time": ISO-8601 UTC of ``when`` (epoch seconds), ...}``.
    JSON escapes every control and non-ASCII character, so a hostile name cannot drive a terminal here either."""
    stamp = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"event": event, "time": stamp, **values}, default=str)


class JsonFormatter(logging.Formatter):
    """A log record as ``{"event": "log", "time", "level", "message"}`` (and ``exception`` with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        extra = {"exception": self.formatException(record.exc_info)} if record.exc_info else {}
        return json_event("log", record.created, level=record.levelname.lower(), message=record.getMessage(),
                          **extra)


def setup_logging(quiet: bool, log_format: str = "text") -> None:
    """The library's log (logger ``gcage_fast``) on stderr as ``gcage-fast: ...`` lines, or as one JSON object
    per line (:class:`JsonFormatter`) when ``log_format`` is ``json``; warnings only when quiet."""
    log = logging.getLogger("gcage_fast")
    log.handlers[:] = [h for h in log.handlers if isinstance(h, logging.NullHandler)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else EscapingFormatter("gcage-fast: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def emit_json(obj: Any) -> None:
    """``obj`` on stdout as indented JSON with sorted keys (paths and other objects as strings)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def int_list(text: str | None) -> tuple[int, ...] | None:
    """A comma list of positive integers (``"1,3,5"``), ``None`` for ``None``; anything else is a usage error."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter("values must be positive integers")
    return values


# ------------------------------------------------------------------------------------------- options to dataclasses
def from_options(cls: type, options: Mapping[str, Any], renames: Mapping[str, str] | None = None,
                 **values: Any) -> Any:
    """The dataclass ``cls`` built from a command's options (click's parameter names) and ``values``.

    An option fills the field of its own name, or the one ``renames`` gives it (``{"timeout": "timeout_s"}``).

    Raises:
        TypeError: an option that fills no field, so that a new option is mapped, never silently dropped.
    """
    names = {f.name for f in fields(cls) if f.init}
    renames = renames or {}
    unmapped = sorted(k for k in options if renames.get(k, k) not in names)
    if unmapped:
        raise TypeError(f"options {unmapped} fill no field of {cls.__name__}: map them in gcage_fast/cli")
    return cls(**{renames.get(k, k): v for k, v in options.items()}, **values)


# --------------------------------------------------------------------------------------------------- option bundles
def bundle(*decorators: Decorator) -> Decorator:
    """One decorator applying ``decorators``; options show in ``--help`` in the order they are listed."""

    def apply(fn: F) -> F:
        for dec in reversed(decorators):
            fn = dec(fn)
        return fn

    return apply


def model_option(help: str = MODEL_HELP) -> Decorator:
    """``--model``: a model name (``gcage-fast models``) or directory; ``None`` is the bundled model."""
    return click.option("--model", "model", help=help)


def engine_options(*, calibration_help: str, backend_help: str | None = None,
                   device_help: str | None = None) -> Decorator:
    """``--backend``, ``--device``, ``--precision``, ``--calibration``: what runs the graphs, where, how precisely.

    The names, choices and defaults are those of :class:`gcage_fast.config.ScanConfig`; each command says in
    the help texts what the options mean for it.
    """
    return bundle(
        click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True, help=backend_help),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                     help=device_help),
        click.option("--precision", type=click.Choice(SCAN_PRECISIONS), default="fp32", show_default=True,
                     help=PRECISION_HELP),
        click.option("--calibration", type=click.Path(file_okay=False, path_type=str), help=calibration_help),
    )


def throughput_options(*, workers_help: str, batch_help: str | None = None) -> Decorator:
    """``--batch-size`` (patches per engine call), ``--workers`` (decode processes), ``--threads`` (engine)."""
    return bundle(
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help=batch_help),
        click.option("--workers", type=click.IntRange(min=0), help=workers_help),
        click.option("--threads", type=click.IntRange(min=1), help=THREADS_HELP),
    )


#: The limit options: option -> (field of Limits, type, help). Their defaults are the fields' defaults.
_LIMITS: dict[str, tuple[str, click.ParamType, str | None]] = {
    "--max-pixels": ("max_pixels", click.IntRange(min=1), None),
    "--max-bytes": ("max_bytes", click.IntRange(min=1), None),
    "--archive-max-members": ("max_members", click.IntRange(min=1),
                              "Members listed per archive (archive.bomb_count beyond)."),
    "--archive-max-bytes": ("max_archive_bytes", click.IntRange(min=1),
                            "Bytes an archive may expand to (archive.bomb_total beyond)."),
    "--archive-max-ratio": ("max_ratio", click.FloatRange(min=1),
                            "Expansion ratio of an archive past 64 MiB (archive.bomb_ratio beyond)."),
    "--timeout": ("timeout_s", click.FloatRange(min=0, min_open=True),
                  "Seconds per file before its decode worker is killed (limit.timeout)."),
    "--worker-memory": ("worker_memory_mb", click.IntRange(min=256),
                        "Address-space limit of each decode worker in MiB (limit.rss beyond it)."),
}
#: click's parameter name of each limit option -> its field of Limits (the ``renames`` of :func:`from_options`).
LIMIT_FIELDS: dict[str, str] = {flag[2:].replace("-", "_"): field for flag, (field, _, _) in _LIMITS.items()}


def limit_options(fn: F) -> F:
    """The per-file and per-archive limits of :class:`gcage_fast.config.Limits` (collect them with
    ``from_options(Limits, ..., LIMIT_FIELDS)``)."""
    defaults = Limits()
    return bundle(*(click.option(flag, type=kind, default=getattr(defaults, field), show_default=True, help=text)
                     for flag, (field, kind, text) in _LIMITS.items()))(fn)


def evidence_options(fn: F) -> F:
    """Provenance reading and the verdict policy (ScanConfig's evidence, verdict_policy, c2pa_trust_anchors,
    watermarks; docs/PROVENANCE.md)."""
    from gcage_fast.config import VERDICT_POLICIES

    return bundle(
        click.option("--evidence/--no-evidence", default=True, show_default=True,
                     help="Read provenance from every file's bytes: C2PA manifests (validated offline), IPTC/XMP "
                     "DigitalSourceType and generators declared in EXIF, XMP, PNG text and comments."),
        click.option("--verdict-policy", type=click.Choice(VERDICT_POLICIES), default=VERDICT_POLICIES[0],
                     show_default=True,
                     help="evidence-first: a valid C2PA AI claim, a declared AI generator or a detected watermark "
                     "makes the verdict fake (verdict_source says which); capture claims never decide.  model-only: "
                     "the model's verdict always.  p_fake is the model's score either way."),
        click.option("--c2pa-trust-anchors", type=click.Path(dir_okay=False, exists=True, path_type=str),
                     help="PEM file of the C2PA trust anchors manifests are validated against (nothing is fetched "
                     "from the network).  [default: the official C2PA Trust List shipped in the package]"),
        click.option("--watermarks", default="none", show_default=True, metavar="none|sd",
                     help="Also decode invisible watermarks from the pixels: sd = Stable Diffusion v1/v2 and SDXL "
                     "dwtDct messages (needs the [watermark] extra; costs time per megapixel, see "
                     "docs/PROVENANCE.md)."),
    )(fn)


#: ``--grid`` (ScanConfig.grid): which patches are ranked (gcage_fast.scoring.patches).
grid_option = click.option(
    "--grid", default=GRIDS[0], show_default=True, metavar="|".join(GRIDS),
    help="floor: SuSy's grid, W // 224 x H // 224 patches from the top-left corner (the right and bottom "
    "remainders are never looked at).  cover: the floor grid plus a column at x = W - 224 and a row at "
    "y = H - 224 when the sides are not multiples of 224, so every pixel is in some patch (more patches "
    "to rank, same top-k).")


def json_flag(help: str) -> Decorator:
    """``--json`` (parameter ``as_json``): print the command's result as JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help=help)
