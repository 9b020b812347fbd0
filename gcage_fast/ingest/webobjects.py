"""Objects behind ``http://`` and ``https://`` URLs as inputs, through fsspec's HTTP filesystem (the ``http`` extra:
fsspec and aiohttp), which :mod:`gcage_fast.ingest.objectstore` uses for these schemes.

HTTP has no listing: a URL names one object (or archive). What identifies its version is what a HEAD answers:
``Content-Length``, ``ETag`` and ``Last-Modified``. Every problem is the row of its URL, never a problem of the
run, since a list of URLs names many servers: 404 and 410 are ``fs.vanished``, 401 and 403 ``fs.permission``, a
server that cannot be reached or answers otherwise ``fs.io_error``. A URL with credentials in it
(``https://user:secret@host/...``) is refused by :func:`gcage_fast.ingest.objectstore.parse`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from gcage_fast.ingest.decode import DecodeFailure
from gcage_fast.optional import require
from gcage_fast.text import printable

__all__ = ["SCHEMES", "Stat", "head", "read"]

SCHEMES = ("http", "https")
#: (size or None, ETag, Last-Modified)
Stat = tuple[int | None, str | None, str | None]

_FS: dict[int, Any] = {}
_LOCK = threading.Lock()


def _filesystem() -> Any:
    with _LOCK:
        fs = _FS.get(os.getpid())
        if fs is None:
            require("aiohttp")
            fsspec = require("fsspec")
            fs = fsspec.filesystem("https", skip_instance_cache=True)
            _FS[os.getpid()] = fs
        return fs


def _failure(url: str, exc: BaseException) -> DecodeFailure:
    if isinstance(exc, FileNotFoundError) and exc.__cause__ is not None:
        exc = exc.__cause__  # fsspec's info() says "not found" for any failure of its HEAD and GET: the real one
    if isinstance(exc, FileNotFoundError):
        return DecodeFailure("fs.vanished", "no such object (HTTP 404)")
    status = getattr(exc, "status", None)
    if status in (404, 410):
        return DecodeFailure("fs.vanished", f"no such object (HTTP {status})")
    if status in (401, 403):
        return DecodeFailure("fs.permission", f"the server refused it (HTTP {status})")
    if status is not None:
        return DecodeFailure("fs.io_error", f"HTTP {status}")
    return DecodeFailure("fs.io_error", printable(f"{type(exc).__name__}: {exc}")[:300])


def head(url: str, first: int = 512) -> tuple[Stat, bytes]:
    """The stat of the object at ``url`` and its first ``first`` bytes; DecodeFailure for its row."""
    fs = _filesystem()
    try:
        info = fs.info(url)
        data = fs.cat_file(url, start=0, end=first) if first and info.get("size") != 0 else b""
    except DecodeFailure:
        raise
    except Exception as exc:  # noqa: BLE001 - aiohttp's and fsspec's errors, sorted by _failure
        raise _failure(url, exc) from None
    return _stat(info), bytes(data[:first])


def _stat(info: dict[str, Any]) -> Stat:
    size = info.get("size")
    return (int(size) if size is not None else None), info.get("ETag"), info.get("Last-Modified")


def read(url: str, max_bytes: int) -> tuple[Stat, bytes]:
    """The stat (from a HEAD) and the bytes of the object at ``url``; ``limit.bytes`` over ``max_bytes`` (a server
    that does not say the size is read up to the limit and no further)."""
    fs = _filesystem()
    try:
        stat = _stat(fs.info(url))
        if stat[0] is not None and stat[0] > max_bytes:
            raise DecodeFailure("limit.bytes", f"{stat[0]} bytes is over the limit of {max_bytes}")
        with fs.open(url, "rb", block_size=0) as f:  # streamed: no range requests
            data = _read_upto(f, max_bytes + 1)
    except DecodeFailure:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _failure(url, exc) from None
    if len(data) > max_bytes:
        raise DecodeFailure("limit.bytes", f"over the limit of {max_bytes} bytes")
    return stat, bytes(data)


def _read_upto(f: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes of the stream ``f``: a streamed read gives what has arrived (64 KiB, say), not all."""
    chunks, n = [], 0
    while n < limit:
        chunk = f.read(limit - n)
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    return b"".join(chunks)
