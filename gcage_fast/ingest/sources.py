"""Enumerate inputs deterministically: files, directories (recursive), path lists and archive members.

Every path found becomes exactly one :class:`InputRef` (an archive becomes one per member, see
:mod:`gcage_fast.ingest.archives`). Paths are raw bytes (names need not be UTF-8) made absolute, de-duplicated and
sorted by bytes, so the same inputs always give the same plan; members keep their order inside their archive.
Things that cannot be scanned are kept with a preset outcome instead of being dropped: special files (FIFOs,
sockets, devices), symbolic links when links are not followed, link loops, and directories that cannot be read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gcage_fast.ingest.archives import list_archive, sniff_archive
from gcage_fast.config import Limits
from gcage_fast.errors import InputError
from gcage_fast.text import printable

__all__ = ["InputRef", "input_id", "display_path", "enumerate_inputs", "read_path_list"]


@dataclass(frozen=True)
class InputRef:
    """One planned input. ``preset`` = (status, error_code, detail) when the outcome is known without reading;
    ``member``/``member_index`` locate an archive member; ``flags`` are recorded on its row."""

    path_bytes: bytes
    member: bytes | None = None
    preset: tuple[str, str, str] | None = None
    member_index: int | None = None
    flags: tuple[str, ...] = ()

    @property
    def input_id(self) -> str:
        return input_id(self.path_bytes, self.member, self.member_index)

    @property
    def path(self) -> str:
        return display_path(self.path_bytes)


def input_id(path_bytes: bytes, member: bytes | None = None, member_index: int | None = None) -> str:
    """sha256 of the canonical locator (absolute path bytes; archive member position and name bytes)."""
    h = hashlib.sha256(b"gcage-input-v1\x00" + path_bytes + b"\x00")
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


class _Collector:
    """Refs by path; a regular file is expanded when it is an archive (content sniffed)."""

    def __init__(self, limits: Limits | None) -> None:
        self.limits = limits
        self.refs: dict[bytes, list[InputRef]] = {}

    def __setitem__(self, path: bytes, ref: InputRef) -> None:
        self.refs[path] = [ref]

    def regular(self, path: bytes) -> None:
        kind = sniff_archive(path) if self.limits is not None else None
        if kind is None:
            self.refs[path] = [InputRef(path)]
            return
        listing = list_archive(path, kind, self.limits)
        refs = [InputRef(path, m.name, m.preset, m.index, m.flags) for m in listing.members]
        if listing.problem is not None or not refs:
            problem = listing.problem or ("skipped", "archive.empty", f"{kind} archive without regular members")
            refs.append(InputRef(path, preset=problem, flags=(f"archive.{kind}",)))
        self.refs[path] = refs

    def ordered(self) -> list[InputRef]:
        return [ref for path in sorted(self.refs) for ref in self.refs[path]]


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
                stack.append(p)
            elif stat.S_ISREG(st.st_mode):
                out.regular(p)
            else:
                out[p] = InputRef(p, preset=("skipped", "fs.not_regular", f"{_special(st.st_mode)}, not scanned"))


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


def enumerate_inputs(inputs: Iterable[str], from_list: str | None = None, follow_symlinks: bool = False,
                     limits: Limits | None = Limits()) -> list[InputRef]:
    """All inputs, absolute, de-duplicated, sorted by path bytes (archive members in archive order).

    Command-line paths that do not exist raise InputError (a usage mistake); paths from a list that do not
    exist become ``fs.vanished`` rows (lists are large and may be stale). ``limits=None`` treats archives as
    plain files.
    """
    out = _Collector(limits)
    seen_dirs: set[tuple[int, int]] = set()
    for raw in inputs:
        _add_root(os.fsencode(raw), follow_symlinks, True, seen_dirs, out)
    if from_list is not None:
        for raw in read_path_list(from_list):
            _add_root(raw, follow_symlinks, False, seen_dirs, out)
    return out.ordered()
