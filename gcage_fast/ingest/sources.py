"""Enumerate inputs deterministically: files, directories (recursive), path lists and archive members.

Every path found becomes exactly one :class:`InputRef` (an archive becomes one per member, see
:mod:`gcage_fast.ingest.archives`). Paths are raw bytes (names need not be UTF-8) made absolute, de-duplicated and
sorted by bytes, so the same inputs always give the same plan; members keep their order inside their archive.
Things that cannot be scanned are kept with a preset outcome instead of being dropped: special files (FIFOs,
sockets, devices), symbolic links when links are not followed, link loops, and directories that cannot be read.

What walking a directory or listing an archive finds passes a :class:`~gcage_fast.ingest.filters.PathFilter`
first (junk, ``--include``/``--exclude``, earlier gcage-fast outputs): what it drops is no input and gets no row,
only a count by reason. Files named explicitly (on the command line or in a path list) are always inputs; the
members of an archive named explicitly are filtered like any others.

The rows of a table (``--from-table``, :func:`discover_table`) keep the table's order instead, and each row is
an input of its own (its row number is part of its identity), even where two rows name the same file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gcage_fast.ingest.archives import list_archive, sniff_archive
from gcage_fast.config import Limits
from gcage_fast.errors import InputError
from gcage_fast.ingest.filters import PathFilter, is_output_dir
from gcage_fast.ingest.webdataset import samples
from gcage_fast.log import logger
from gcage_fast.text import printable

__all__ = ["Discovery", "InputRef", "input_id", "display_path", "discover_inputs", "discover_table",
           "enumerate_inputs", "read_path_list", "uri_scheme"]


@dataclass(frozen=True)
class InputRef:
    """One planned input. ``preset`` = (status, error_code, detail) when the outcome is known without reading;
    ``member``/``member_index`` locate an archive member; ``flags`` are recorded on its row. A WebDataset sample
    (``--input-format webdataset``) is its image member, with its other members as ``sidecars`` (index, name).
    An input from a table (``--from-table``) has its ``row`` number, part of its identity, and the values of the
    kept columns of that row (``carried``)."""

    path_bytes: bytes
    member: bytes | None = None
    preset: tuple[str, str, str] | None = None
    member_index: int | None = None
    flags: tuple[str, ...] = ()
    sidecars: tuple[tuple[int, bytes], ...] | None = None
    row: int | None = None
    carried: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def input_id(self) -> str:
        return input_id(self.path_bytes, self.member, self.member_index, self.row)

    @property
    def path(self) -> str:
        return display_path(self.path_bytes)


def input_id(path_bytes: bytes, member: bytes | None = None, member_index: int | None = None,
             row: int | None = None) -> str:
    """sha256 of the canonical locator (absolute path bytes; archive member position and name bytes; for an
    input from a table, its row number: two rows naming one file are two inputs)."""
    h = hashlib.sha256(b"gcage-input-v1\x00" + path_bytes + b"\x00")
    if row is not None:
        h.update(b"row\x00%d\x00" % row)
    if member is not None:
        h.update(b"member\x00%d\x00" % (member_index or 0) + member)
    return h.hexdigest()


def display_path(raw: bytes) -> str:
    """A printable string for a raw path: undecodable bytes as \\xNN, control characters escaped."""
    return printable(raw.decode("utf-8", errors="backslashreplace"))


def _special(st_mode: int) -> str:
    if stat.S_ISFIFO(st_mode):
        return "FIFO"
    if stat.S_ISSOCK(st_mode):
        return "socket"
    if stat.S_ISCHR(st_mode) or stat.S_ISBLK(st_mode):
        return "device"
    return "special file"


@dataclass
class Discovery:
    """The inputs, and how many found files are not inputs, by reason (gcage_fast.ingest.filters.REASONS); for
    the inputs of a table, the columns (``pyarrow.Field``) whose values they carry."""

    refs: list[InputRef]
    filtered: dict[str, int] = field(default_factory=dict)
    kept: tuple[Any, ...] = ()


def _relative(path: bytes, root: bytes) -> str:
    """``path`` below ``root`` as a ``/``-separated string (undecodable bytes kept as surrogates)."""
    return os.fsdecode(path[len(root):].lstrip(b"/"))


class _Collector:
    """Refs by path; a regular file is expanded when it is an archive (content sniffed). Files the filter drops
    are remembered by path with their reason (a path also named explicitly stays an input)."""

    def __init__(self, limits: Limits | None, filters: PathFilter | None, own_output: tuple[int, int] | None,
                 input_format: str = "auto") -> None:
        self.limits = limits
        self.filters = filters
        self.own_output = own_output
        self.webdataset = input_format == "webdataset"
        self.refs: dict[bytes, list[InputRef]] = {}
        self.dropped: dict[bytes, str] = {}
        self.dropped_members: Counter = Counter()

    def __setitem__(self, path: bytes, ref: InputRef) -> None:
        self.refs[path] = [ref]

    def keep(self, path: bytes, root: bytes | None, include: bool = True) -> bool:
        """False (and the reason noted) when walking found ``path`` under ``root`` and the filter drops it
        (``include=False``: whatever ``--include`` says)."""
        if root is None or self.filters is None:
            return True
        reason = self.filters.reason(_relative(path, root), include)
        if reason is not None:
            self.dropped[path] = reason
        return reason is None

    def skip_dir(self, path: bytes, st: os.stat_result) -> bool:
        """True for this scan's own output directory and for earlier gcage-fast outputs (noted, with a notice)."""
        if self.filters is None:
            return False
        if self.own_output is not None and (st.st_dev, st.st_ino) == self.own_output:
            self.dropped[path] = "own_output"
            return True
        if is_output_dir(path):
            logger.warning("skipping %s: an earlier gcage-fast output directory", display_path(path))
            self.dropped[path] = "old_output"
            return True
        return False

    def regular(self, path: bytes, root: bytes | None = None) -> None:
        if not self.keep(path, root, include=False):
            return
        kind = sniff_archive(path) if self.limits is not None else None
        if kind is None:
            if self.keep(path, root):
                self.refs[path] = [InputRef(path)]
            return
        listing = list_archive(path, kind, self.limits)
        members = listing.members
        if self.filters is not None:
            reasons = [self.filters.reason(os.fsdecode(m.name)) for m in members]
            self.dropped_members.update(r for r in reasons if r is not None)
            members = [m for m, r in zip(members, reasons) if r is None]
        if self.webdataset:  # one input per sample, its other members as sidecars
            refs = [InputRef(path, s.member, s.preset, s.member_index, s.flags, s.sidecars) for s in samples(members)]
        else:
            refs = [InputRef(path, m.name, m.preset, m.index, m.flags) for m in members]
        if listing.problem is not None or not refs:
            detail = (f"{kind} archive: every member was filtered out" if listing.members
                      else f"{kind} archive without regular members")
            problem = listing.problem or ("skipped", "archive.empty", detail)
            refs.append(InputRef(path, preset=problem, flags=(f"archive.{kind}",)))
        self.refs[path] = refs

    def ordered(self) -> list[InputRef]:
        return [ref for path in sorted(self.refs) for ref in self.refs[path]]

    def filtered(self) -> dict[str, int]:
        counts = Counter(r for p, r in self.dropped.items() if p not in self.refs) + self.dropped_members
        return dict(sorted(counts.items()))


def _walk(root: bytes, follow: bool, seen_dirs: set[tuple[int, int]], out: _Collector) -> None:
    """Depth-first walk of a directory (entries sorted later); never raises for a bad entry."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError as exc:
            out[d] = InputRef(d, preset=("error", "fs.permission" if isinstance(exc, PermissionError)
                                         else "fs.io_error", f"cannot list directory: {exc.strerror or exc}"))
            continue
        for e in entries:
            p = e.path
            try:
                if e.is_symlink():
                    if not follow:
                        if out.keep(p, root):
                            out[p] = InputRef(p, preset=("skipped", "fs.symlink_skipped",
                                                         "symbolic link not followed (use --follow-symlinks)"))
                        continue
                    try:
                        st = os.stat(p)
                    except OSError as exc:
                        code = "fs.symlink_loop" if exc.errno == errno.ELOOP else "fs.vanished"
                        out[p] = InputRef(p, preset=("error", code, f"broken symbolic link: {exc.strerror}"))
                        continue
                else:
                    st = e.stat(follow_symlinks=False)
            except OSError as exc:
                out[p] = InputRef(p, preset=("error", "fs.io_error", exc.strerror or str(exc)))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    out[p] = InputRef(p, preset=("skipped", "fs.symlink_loop", "directory already visited (link loop)"))
                    continue
                seen_dirs.add(key)
                if not out.skip_dir(p, st):
                    stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                out.regular(p, root)
            elif out.keep(p, root):
                out[p] = InputRef(p, preset=("skipped", "fs.not_regular", f"{_special(st.st_mode)}, not scanned"))


def _identity(path: str | None) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, None when there is none."""
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        st = None
    return None if st is None else (st.st_dev, st.st_ino)


def _add_root(raw: bytes, follow: bool, strict: bool, seen_dirs: set, out: _Collector) -> None:
    path = os.path.abspath(raw)
    try:
        st = os.stat(path)  # a path named explicitly is followed even if it is a link
    except OSError as exc:
        if strict:
            raise InputError(f"input not found: {display_path(raw)} ({exc.strerror})") from None
        out[path] = InputRef(path, preset=("error", "fs.vanished", exc.strerror or "not found"))
        return
    if stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key not in seen_dirs:
            seen_dirs.add(key)
            if not out.skip_dir(path, st):
                _walk(path, follow, seen_dirs, out)
    elif stat.S_ISREG(st.st_mode):
        out.regular(path)
    else:
        out[path] = InputRef(path, preset=("skipped", "fs.not_regular", f"{_special(st.st_mode)}, not scanned"))


def read_path_list(source: str) -> Iterator[bytes]:
    """Paths from a list file (one per line; ``-`` = stdin). Blank lines are ignored."""
    try:
        fh = sys.stdin.buffer if source == "-" else open(source, "rb")
    except OSError as exc:
        raise InputError(f"cannot read path list {source}: {exc.strerror}") from None
    try:
        for line in fh:
            line = line.rstrip(b"\r\n")
            if line:
                yield line
    finally:
        if fh is not sys.stdin.buffer:
            fh.close()


def discover_inputs(inputs: Iterable[str], from_list: str | None = None, follow_symlinks: bool = False,
                    limits: Limits | None = Limits(), filters: PathFilter | None = PathFilter(),
                    own_output: str | None = None, input_format: str = "auto") -> Discovery:
    """All inputs, absolute, de-duplicated, sorted by path bytes (archive members in archive order), and the
    counts of what ``filters`` dropped (None: nothing is dropped, earlier outputs are walked too).

    Command-line paths that do not exist raise InputError (a usage mistake); paths from a list that do not
    exist become ``fs.vanished`` rows (lists are large and may be stale). ``limits=None`` treats archives as
    plain files. ``own_output``, when it exists, is never walked. ``input_format="webdataset"`` makes each
    sample of an archive one input (:mod:`gcage_fast.ingest.webdataset`) instead of each member.
    """
    out = _Collector(limits, filters, _identity(own_output), input_format)
    seen_dirs: set[tuple[int, int]] = set()
    for raw in inputs:
        _add_root(os.fsencode(raw), follow_symlinks, True, seen_dirs, out)
    if from_list is not None:
        for raw in read_path_list(from_list):
            _add_root(raw, follow_symlinks, False, seen_dirs, out)
    return Discovery(out.ordered(), out.filtered())


_URI = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://")


def uri_scheme(raw: bytes) -> str | None:
    """The scheme of a URI (``s3``, ``https``, ...), None for a local path."""
    m = _URI.match(raw)
    return m.group(1).decode("ascii").lower() if m else None


def discover_table(paths: Sequence[bytes | None], values: Sequence[dict[str, Any]], kept: tuple[Any, ...] = (),
                   follow_symlinks: bool = False, limits: Limits | None = Limits(),
                   filters: PathFilter | None = PathFilter(), own_output: str | None = None,
                   input_format: str = "auto") -> Discovery:
    """The inputs of a table's rows (gcage_fast.ingest.tables), in table order: each row's path is one input (an
    archive: one per member, or per sample), numbered by its row and carrying the row's kept ``values``. A row
    that names nothing to read keeps its row all the same: no path (``table.no_path``), a URI
    (``fs.unsupported_scheme``: local paths only, so far), a directory (``fs.is_directory``), a file that does
    not exist (``fs.vanished``)."""
    refs: list[InputRef] = []
    filtered: Counter = Counter()
    own = _identity(own_output)
    for row, (raw, carried) in enumerate(zip(paths, values)):
        carried = carried or None
        scheme = None if not raw else uri_scheme(raw)
        if not raw:
            refs.append(InputRef(b"", preset=("error", "table.no_path", "this row of the table has no path"),
                                 row=row, carried=carried))
        elif scheme is not None:
            refs.append(InputRef(raw, preset=("error", "fs.unsupported_scheme", f"{scheme}:// is not read (yet): a "
                                              "table's path column holds local paths"), row=row, carried=carried))
        elif os.path.isdir(raw):
            refs.append(InputRef(os.path.abspath(raw), preset=("error", "fs.is_directory", "a directory: a table row "
                                                               "names one file (or archive)"), row=row,
                                 carried=carried))
        else:
            out = _Collector(limits, filters, own, input_format)
            _add_root(raw, follow_symlinks, False, set(), out)
            refs += [replace(r, row=row, carried=carried) for r in out.ordered()]
            filtered.update(out.filtered())
    return Discovery(refs, dict(sorted(filtered.items())), tuple(kept))


def enumerate_inputs(inputs: Iterable[str], from_list: str | None = None, follow_symlinks: bool = False,
                     limits: Limits | None = Limits(), filters: PathFilter | None = PathFilter()) -> list[InputRef]:
    """The inputs of :func:`discover_inputs`, without the counts."""
    return discover_inputs(inputs, from_list, follow_symlinks, limits, filters).refs
