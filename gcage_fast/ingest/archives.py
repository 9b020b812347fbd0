"""Archives as inputs (tar, tar.gz/.tgz, tar.bz2, tar.xz, zip): listed at plan time, read in memory at scan time.

Nothing is ever extracted to disk, and member names are labels, never paths. Every regular member becomes an
input (``member`` set, ``member_index`` its position in the archive); links, devices and FIFOs inside an archive
become ``skipped`` rows; names that would escape a directory if extracted (absolute, ``..``, drive letters,
backslashes) are flagged ``archive.unsafe_name`` and still scanned. Limits apply to the member count, the bytes
actually decompressed (headers are not trusted) and the expansion ratio; when one is hit, the members listed so
far keep their rows and one archive-level row says what happened. A damaged archive likewise gives rows for what
could be read plus one archive-level row.

An archive that is an object in an object store (gcage_fast.ingest.objectstore) is read whole into memory, within
``--max-bytes``, and given to these functions as ``data``; ``path`` then only names it.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from gcage_fast.config import Limits
from gcage_fast.ingest.decode import DecodeFailure

__all__ = ["ArchiveMember", "ArchiveListing", "sniff_archive", "list_archive", "MemberReader", "unsafe_name",
           "is_archive_bytes"]

_TAR_COMPRESSED = {b"\x1f\x8b": "tar.gz", b"BZh": "tar.bz2", b"\xfd7zXZ\x00": "tar.xz"}
_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError,
           NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class ArchiveMember:
    """One listed member: its position, raw name, and a preset outcome when it will not be read."""

    index: int
    name: bytes
    preset: tuple[str, str, str] | None = None
    flags: tuple[str, ...] = ()


@dataclass
class ArchiveListing:
    kind: str
    members: list[ArchiveMember]
    problem: tuple[str, str, str] | None = None  # the archive-level row, when something went wrong


def unsafe_name(name: bytes) -> bool:
    """True when extracting under this name could leave the target directory."""
    n = name.replace(b"\\", b"/")
    if n.startswith(b"/") or b"\\" in name or (len(n) > 1 and n[1:2] == b":" and n[:1].isalpha()):
        return True
    return b".." in n.split(b"/")


def is_archive_bytes(head: bytes) -> bool:
    """Magic numbers of zip, tar and compressed streams (used to refuse nested archives)."""
    return (head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")) or head[257:262] == b"ustar"
            or any(head.startswith(m) for m in _TAR_COMPRESSED))


def _source(path: bytes, data: bytes | None) -> str | io.BytesIO:
    """What the archive modules open: the file's name, or the archive's bytes in memory."""
    return os.fsdecode(path) if data is None else io.BytesIO(data)


def sniff_archive(path: bytes, data: bytes | None = None) -> str | None:
    """``zip``, ``tar``, ``tar.gz``, ``tar.bz2``, ``tar.xz`` or None, from content (compressed streams are
    confirmed to hold a tar by reading its first header); of ``data`` when given."""
    if data is not None:
        head = data[:512]
    else:
        try:
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError:
            return None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head[257:262] == b"ustar":
        return "tar"
    for magic, kind in _TAR_COMPRESSED.items():
        if head.startswith(magic):
            opener = {"tar.gz": _gunzip, "tar.bz2": bz2.open, "tar.xz": lzma.open}[kind]
            try:
                with opener(_source(path, data)) as stream:
                    inner = stream.read(512)
            except _ERRORS:
                return None
            return kind if inner[257:262] == b"ustar" or _looks_like_old_tar(inner) else None
    return None


def _gunzip(source: str | io.BytesIO):
    import gzip

    return gzip.open(source, "rb")


def _looks_like_old_tar(block: bytes) -> bool:
    """A pre-POSIX tar header: a valid octal checksum over the 512-byte block."""
    if len(block) < 512:
        return False
    try:
        stored = int(block[148:156].strip(b"\x00 ") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * 32 + sum(block[156:512])


def _raw_name(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _tar_kind_preset(info: tarfile.TarInfo) -> tuple[str, str, str] | None:
    if info.issym() or info.islnk():
        return ("skipped", "archive.link_member", "link inside an archive, never followed")
    if not info.isreg():
        return ("skipped", "archive.special_member", "device, FIFO or other special member, not read")
    return None


def list_archive(path: bytes, kind: str, limits: Limits, data: bytes | None = None) -> ArchiveListing:
    """List the members of an archive (of ``data`` when given), applying the member-count, byte and ratio
    limits."""
    try:
        size = os.stat(path).st_size if data is None else len(data)
    except OSError as exc:
        return ArchiveListing(kind, [], ("error", "fs.vanished", exc.strerror or "gone"))
    if kind == "zip":
        return _list_zip(_source(path, data), limits)
    return _list_tar(_source(path, data), kind, size, limits)


def _limit_problem(count: int, total: int, compressed: int, limits: Limits) -> tuple[str, str, str] | None:
    if count > limits.max_members:
        return ("error", "archive.bomb_count", f"more than {limits.max_members} members; the rest were not listed")
    if total > limits.ratio_min_bytes and compressed > 0 and total / compressed > limits.max_ratio:
        return ("error", "archive.bomb_ratio", f"expands more than {limits.max_ratio:g}x; the rest was not listed")
    if total > limits.max_archive_bytes:
        return ("error", "archive.bomb_total", f"more than {limits.max_archive_bytes} bytes when expanded; "
                "the rest was not listed")
    return None


def _list_zip(source: str | io.BytesIO, limits: Limits) -> ArchiveListing:
    members: list[ArchiveMember] = []
    try:
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
            compressed = 0
            declared = 0
            for index, info in enumerate(infos):
                compressed += info.compress_size
                declared += info.file_size
                problem = _limit_problem(len(members) + 1, declared, compressed, limits)
                if problem:
                    return ArchiveListing("zip", members, problem)
                if info.is_dir():
                    continue
                name = _raw_name(info.orig_filename)
                mode = (info.external_attr >> 16) & 0xFFFF
                preset = None
                if stat.S_ISLNK(mode):
                    preset = ("skipped", "archive.link_member", "link inside an archive, never followed")
                elif mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                    preset = ("skipped", "archive.special_member", "special member, not read")
                elif info.flag_bits & 0x1:
                    preset = ("error", "archive.encrypted", "encrypted member; no password is ever tried")
                flags = ("archive.unsafe_name",) if unsafe_name(name) else ()
                members.append(ArchiveMember(index, name, preset, flags))
    except _ERRORS as exc:
        return ArchiveListing("zip", members, ("error", "archive.corrupt", f"{type(exc).__name__}: {exc}"[:512]))
    return ArchiveListing("zip", members)


def _list_tar(source: str | io.BytesIO, kind: str, compressed: int, limits: Limits) -> ArchiveListing:
    members: list[ArchiveMember] = []
    total = 0
    try:
        with _open_tar(source) as tf:
            for index, info in enumerate(tf):
                total += info.size if info.isreg() else 0
                problem = _limit_problem(len(members) + 1, total, compressed, limits)
                if problem:
                    return ArchiveListing(kind, members, problem)
                if info.isdir():
                    continue
                name = _raw_name(info.name)
                flags = ("archive.unsafe_name",) if unsafe_name(name) else ()
                members.append(ArchiveMember(index, name, _tar_kind_preset(info), flags))
    except _ERRORS as exc:
        return ArchiveListing(kind, members, ("error", _damage_code(exc), f"{type(exc).__name__}: {exc}"[:512]))
    return ArchiveListing(kind, members)


def _damage_code(exc: BaseException) -> str:
    """``archive.truncated`` when the data simply stops, else ``archive.corrupt``."""
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "unexpected end" in text or "ended before" in text or "truncated" in text:
        return "archive.truncated"
    return "archive.corrupt"


def _open_tar(source: str | io.BytesIO) -> tarfile.TarFile:
    """A tar (compressed or not) opened for one sequential pass."""
    if isinstance(source, str):
        return tarfile.open(source, mode="r|*", encoding="utf-8", errors="surrogateescape")
    return tarfile.open(fileobj=source, mode="r|*", encoding="utf-8", errors="surrogateescape")


class MemberReader:
    """Reads planned members of one archive in plan order (tar archives in one sequential pass); of ``data``, the
    archive's bytes, when given."""

    def __init__(self, path: bytes, limits: Limits, data: bytes | None = None) -> None:
        self.path = path
        self.limits = limits
        self.kind = sniff_archive(path, data)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._tar_iter: Iterator[tarfile.TarInfo] | None = None
        self._tar_pos = -1
        self._total = 0
        if self.kind == "zip":
            try:
                self._zip = zipfile.ZipFile(_source(path, data))
                self._infos = self._zip.infolist()
            except _ERRORS:
                self._zip = None
        elif self.kind is not None:
            try:
                self._tar = _open_tar(_source(path, data))
                self._tar_iter = iter(self._tar)
            except _ERRORS:
                self._tar = None

    def close(self) -> None:
        for h in (self._zip, self._tar):
            if h is not None:
                try:
                    h.close()
                except _ERRORS:
                    pass

    def _bounded(self, fh: io.BufferedIOBase, cap: int) -> bytes:
        data = fh.read(cap + 1)
        if len(data) > cap:
            raise DecodeFailure("limit.bytes", f"member is larger than the limit of {cap} bytes")
        self._total += len(data)
        if self._total > self.limits.max_archive_bytes:
            raise DecodeFailure("archive.bomb_total", f"the archive expanded past {self.limits.max_archive_bytes} "
                                "bytes while being read")
        return data

    def read(self, index: int, name: bytes, max_bytes: int | None = None) -> bytes:
        """The content of member ``index`` (its planned ``name`` is checked), or DecodeFailure (``limit.bytes``
        past ``max_bytes``, by default the limit of a file)."""
        cap = self.limits.max_bytes if max_bytes is None else max_bytes
        if self.kind is None or (self._zip is None and self._tar is None):
            raise DecodeFailure("fs.changed", "the archive can no longer be opened as it was when planned")
        try:
            if self._zip is not None:
                if index >= len(self._infos) or _raw_name(self._infos[index].orig_filename) != name:
                    raise DecodeFailure("fs.changed", "the archive changed since it was planned")
                with self._zip.open(self._infos[index]) as fh:
                    return self._bounded(fh, cap)
            assert self._tar_iter is not None and self._tar is not None
            if index <= self._tar_pos:
                raise DecodeFailure("fs.changed", "member order differs from the plan")
            while self._tar_pos < index:
                info = next(self._tar_iter)
                self._tar_pos += 1
            if _raw_name(info.name) != name or not info.isreg():
                raise DecodeFailure("fs.changed", "the archive changed since it was planned")
            fh = self._tar.extractfile(info)
            if fh is None:
                raise DecodeFailure("archive.special_member", "member has no data")
            return self._bounded(fh, cap)
        except DecodeFailure:
            raise
        except StopIteration:
            raise DecodeFailure("archive.truncated", "the archive ended before this member") from None
        except RuntimeError as exc:
            raise DecodeFailure("archive.encrypted", f"{exc}"[:512]) from None
        except _ERRORS as exc:
            raise DecodeFailure(_damage_code(exc), f"{type(exc).__name__}: {exc}"[:512]) from None
