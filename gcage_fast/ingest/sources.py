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

URIs of object stores (``s3://bucket/prefix``, ``gs://...``: gcage_fast.ingest.objectstore) and web URLs
(``http(s)://``, never walked: gcage_fast.ingest.webobjects) are inputs too, on
the command line, in lists and in tables: an object is one input (an archive object one per member), a prefix is
walked like a directory (every object under it, sorted by key), each object's size and ETag go into the plan
(``object_info``), and its canonical URI is its path. ``file://`` URIs are local paths; other schemes are refused
on the command line and are ``fs.unsupported_scheme`` rows in lists and tables. Objects are opened on a few threads
at once (each open is a request), in order.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import sys
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gcage_fast.ingest import objectstore
from gcage_fast.ingest.archives import ArchiveListing, is_archive_bytes, list_archive, sniff_archive
from gcage_fast.config import Limits
from gcage_fast.errors import InputError
from gcage_fast.ingest.decode import DecodeFailure
from gcage_fast.ingest.filters import PathFilter, is_output_dir
from gcage_fast.ingest.webdataset import samples
from gcage_fast.log import logger
from gcage_fast.text import printable

__all__ = ["Discovery", "InputRef", "input_id", "display_path", "discover_inputs", "discover_table",
           "enumerate_inputs", "input_root", "read_path_list", "uri_scheme"]


@dataclass(frozen=True)
class InputRef:
    """One planned input. ``preset`` = (status, error_code, detail) when the outcome is known without reading;
    ``member``/``member_index`` locate an archive member; ``flags`` are recorded on its row. A WebDataset sample
    (``--input-format webdataset``) is its image member, with its other members as ``sidecars`` (index, name).
    An input from a table (``--from-table``) has its ``row`` number, part of its identity, and the values of the
    kept columns of that row (``carried``). An object in an object store has its canonical URI as its path and
    what identifies its version (:class:`gcage_fast.ingest.objectstore.ObjectStat`) as ``object_info``."""

    path_bytes: bytes
    member: bytes | None = None
    preset: tuple[str, str, str] | None = None
    member_index: int | None = None
    flags: tuple[str, ...] = ()
    sidecars: tuple[tuple[int, bytes], ...] | None = None
    row: int | None = None
    carried: dict[str, Any] | None = field(default=None, hash=False)
    object_info: dict[str, Any] | None = field(default=None, hash=False)

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
        self._archive(path, kind, list_archive(path, kind, self.limits))

    def _archive(self, path: bytes, kind: str, listing: ArchiveListing, info: dict[str, Any] | None = None) -> None:
        """The refs of an archive's members (or samples), and its own row when listing it went wrong."""
        members = listing.members
        if self.filters is not None:
            reasons = [self.filters.reason(os.fsdecode(m.name)) for m in members]
            self.dropped_members.update(r for r in reasons if r is not None)
            members = [m for m, r in zip(members, reasons) if r is None]
        if self.webdataset:  # one input per sample, its other members as sidecars
            refs = [InputRef(path, s.member, s.preset, s.member_index, s.flags, s.sidecars, object_info=info)
                    for s in samples(members)]
        else:
            refs = [InputRef(path, m.name, m.preset, m.index, m.flags, object_info=info) for m in members]
        if listing.problem is not None or not refs:
            detail = (f"{kind} archive: every member was filtered out" if listing.members
                      else f"{kind} archive without regular members")
            problem = listing.problem or ("skipped", "archive.empty", detail)
            refs.append(InputRef(path, preset=problem, flags=(f"archive.{kind}",), object_info=info))
        self.refs[path] = refs

    # ---- objects in object stores

    def uri(self, raw: bytes, strict: bool, named: Any = None, prefixes: bool = True) -> None:
        """A URI named on the command line (``strict``: one that names nothing is an InputError), in a list or in
        a table (``prefixes=False``: a prefix is a row, not walked). ``named``: what :func:`_named` found, when
        it ran already (on the probe threads)."""
        scheme = uri_scheme(raw) or ""
        if scheme not in objectstore.SCHEMES:
            if strict:
                raise InputError(f"cannot read {display_path(raw)}: {scheme}:// inputs are not read (local paths, "
                                 "file://, s3://, gs://, http:// and https:// are)")
            self[raw] = InputRef(raw, preset=("error", "fs.unsupported_scheme", f"{scheme}:// is not read (yet): "
                                              "local paths, s3:// or gs:// objects and http(s):// URLs are"))
            return
        u = objectstore.parse(raw)
        path = u.uri.encode("utf-8")
        found = _named(u) if named is None else named
        if found == "prefix":
            if prefixes:
                self.prefix(u)
            else:
                self[path] = InputRef(path, preset=("error", "fs.is_directory", "a prefix with objects under it: a "
                                                    "table row names one object (or archive)"))
        elif isinstance(found, DecodeFailure):
            if strict and found.code == "fs.vanished":
                raise InputError(f"input not found: {u.uri} (no object has this key, and none is under it)")
            self[path] = InputRef(path, preset=(found.status, found.code, found.detail))
        else:
            self.object(u, found)

    def prefix(self, u: objectstore.ObjectURI) -> None:
        """Every object under the prefix ``u``, filtered like the files of a directory."""
        root = u.uri.encode("utf-8")
        found = [o for o in objectstore.list_prefix(u) if self.keep(o.uri.encode("utf-8"), root, include=False)]
        for o, probed in objectstore.probe_all(found, _probe):
            self.object(o, probed, root)

    def object(self, u: objectstore.ObjectURI, probed: Any, root: bytes | None = None) -> None:
        """One object, from what :func:`_probe` found: an input, an archive's members, or the row of a failure."""
        path = u.uri.encode("utf-8")
        if isinstance(probed, DecodeFailure):
            if self.keep(path, root):
                self[path] = InputRef(path, preset=(probed.status, probed.code, probed.detail))
            return
        stat, head = probed
        info = stat.to_dict()
        if self.limits is not None and is_archive_bytes(head):
            if stat.size > self.limits.max_bytes:
                self[path] = InputRef(path, preset=("error", "limit.bytes", f"{stat.size} bytes is over the limit "
                                                    f"of {self.limits.max_bytes} (an archive object is read into "
                                                    "memory whole)"), object_info=info)
                return
            try:
                data = objectstore.read(u, self.limits.max_bytes, stat)
            except DecodeFailure as f:
                self[path] = InputRef(path, preset=(f.status, f.code, f.detail), object_info=info)
                return
            kind = sniff_archive(path, data)
            if kind is not None:
                self._archive(path, kind, list_archive(path, kind, self.limits, data), info)
                return
        if self.keep(path, root):
            self[path] = InputRef(path, object_info=info)

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


def _probe(u: objectstore.ObjectURI) -> Any:
    """An object's stat and first bytes, or the DecodeFailure of its row (run on the probe threads)."""
    try:
        return objectstore.probe(u)
    except DecodeFailure as f:
        return f


def _named(u: objectstore.ObjectURI) -> Any:
    """What a URI named by the user is: what :func:`_probe` finds for an object, ``"prefix"`` for a prefix with
    objects under it, the ``fs.vanished`` DecodeFailure when there is neither (InputError for a missing bucket)."""
    probed = _probe(u) if u.key else DecodeFailure("fs.vanished", "a bucket is not an object")
    if not isinstance(probed, DecodeFailure) or probed.code != "fs.vanished":
        return probed
    what = objectstore.kind(u)
    if what == "object":  # made since the probe
        return _probe(u)
    if what == "denied":
        return DecodeFailure("fs.permission", "access denied to this object")
    return "prefix" if what == "prefix" else DecodeFailure("fs.vanished", "no such object")


def _is_object(raw: bytes) -> bool:
    return uri_scheme(raw) in objectstore.SCHEMES


def _named_raw(raw: bytes) -> Any:
    return _named(objectstore.parse(raw))


def _local(raw: bytes) -> bytes | None:
    """The local path of ``raw``: itself, or the path of a ``file://`` URI; None for a URI of anything else."""
    scheme = uri_scheme(raw)
    if scheme is None:
        return raw
    if scheme == "file" and raw[7:].startswith((b"/", b"localhost/")):
        return urllib.parse.unquote_to_bytes(raw[7:].removeprefix(b"localhost"))
    return None


def input_root(raw: bytes) -> bytes:
    """What paths found from the input ``raw`` start with: its absolute path, or the canonical URI of a prefix
    (a URI that names no object store, or a bad one, as it is)."""
    local = _local(raw)
    if local is not None:
        return os.path.abspath(local)
    if not _is_object(raw):
        return raw
    try:
        return objectstore.parse(raw).uri.encode("utf-8")
    except InputError:
        return raw


def _add_root(raw: bytes, follow: bool, strict: bool, seen_dirs: set, out: _Collector, named: Any = None) -> None:
    local = _local(raw)
    if local is None:
        out.uri(raw, strict, named)
        return
    raw = local
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
    if from_list is not None:  # the objects a list names are opened on the probe threads
        for raw, named in objectstore.probe_all(read_path_list(from_list), _named_raw, wanted=_is_object):
            _add_root(raw, follow_symlinks, False, seen_dirs, out, named)
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
    that names nothing to read keeps its row all the same: no path (``table.no_path``), a URI of a scheme that is
    not read (``fs.unsupported_scheme``), a directory or a prefix (``fs.is_directory``), a file or object that
    does not exist (``fs.vanished``). The objects rows name are opened on the probe threads."""
    refs: list[InputRef] = []
    filtered: Counter = Counter()
    own = _identity(own_output)
    rows = objectstore.probe_all(enumerate(zip(paths, values)), lambda item: _named_raw(item[1][0]),
                                 wanted=lambda item: bool(item[1][0]) and _is_object(item[1][0]))
    for (row, (raw, carried)), named in rows:
        carried = carried or None
        local = _local(raw) if raw else None
        if not raw:
            refs.append(InputRef(b"", preset=("error", "table.no_path", "this row of the table has no path"),
                                 row=row, carried=carried))
            continue
        out = _Collector(limits, filters, own, input_format)
        if local is None:
            out.uri(raw, False, named, prefixes=False)
        elif os.path.isdir(local):
            out[os.path.abspath(local)] = InputRef(os.path.abspath(local), preset=(
                "error", "fs.is_directory", "a directory: a table row names one file (or archive)"))
        else:
            _add_root(local, follow_symlinks, False, set(), out)
        refs += [replace(r, row=row, carried=carried) for r in out.ordered()]
        filtered.update(out.filtered())
    return Discovery(refs, dict(sorted(filtered.items())), tuple(kept))


def enumerate_inputs(inputs: Iterable[str], from_list: str | None = None, follow_symlinks: bool = False,
                     limits: Limits | None = Limits(), filters: PathFilter | None = PathFilter()) -> list[InputRef]:
    """The inputs of :func:`discover_inputs`, without the counts."""
    return discover_inputs(inputs, from_list, follow_symlinks, limits, filters).refs
