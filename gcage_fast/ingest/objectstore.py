"""Objects in object stores as inputs: ``s3://bucket/key`` (and ``gs://``), through ``pyarrow.fs``; and web URLs
(``http(s)://host/path``, one object each), through :mod:`gcage_fast.ingest.webobjects`.

The one place where a URI becomes a filesystem and a path. S3 is configured from the standard AWS environment:
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (an S3-compatible server; ``http://`` there means plain HTTP),
``AWS_REGION`` or ``AWS_DEFAULT_REGION``; the credentials are left to the AWS SDK's own chain (``AWS_ACCESS_KEY_ID``
and ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE`` and ``~/.aws``, web identity, instance metadata), so this code never
holds them and nothing it writes can contain them. ``gs://`` goes through ``pyarrow.fs.FileSystem.from_uri`` and
Google's default credentials. A URI that carries credentials itself (``s3://key:secret@bucket``) is refused.

What a scan needs of an object: whether a URI names an object or a prefix (:func:`kind`), the objects under a
prefix sorted by key (:func:`list_prefix`), an object's :class:`ObjectStat` and first bytes (:func:`probe`), and
its bytes within a size cap, checked against the stat the plan recorded (:func:`read`). pyarrow's listing does not
give ETags, so the stat comes from opening the object (a HEAD): size, ETag, version id and Last-Modified; an
object whose size, ETag (or version, or Last-Modified where the store gives no ETag) differs from the plan's is
``fs.changed``. The check is made when the object is opened; a replacement in the moment between that and the
read of its bytes is not seen.

Problems of the run (credentials refused, a missing bucket, an endpoint that cannot be reached) raise
:class:`~gcage_fast.errors.InputError`, one line, never with a credential in it; problems of one object raise
:class:`~gcage_fast.ingest.decode.DecodeFailure` (``fs.vanished``, ``fs.changed``, ``fs.permission``,
``fs.io_error``, ``limit.bytes``) and become its row.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from gcage_fast.errors import InputError
from gcage_fast.ingest import webobjects
from gcage_fast.ingest.decode import DecodeFailure
from gcage_fast.text import printable

__all__ = ["SCHEMES", "ObjectStat", "ObjectURI", "describe_endpoint", "kind", "list_prefix", "parse", "probe",
           "probe_all", "read", "resolve"]

#: URI schemes read as objects (others are rows with ``fs.unsupported_scheme``); http(s) through
#: :mod:`gcage_fast.ingest.webobjects`.
SCHEMES = ("s3", "gs", "gcs", "http", "https")
#: Objects opened at once while planning (each open is a request to the store).
PROBE_THREADS = 8

_CREDENTIALS = {"SIGNATURE_DOES_NOT_MATCH", "INVALID_ACCESS_KEY_ID", "INVALID_CLIENT_TOKEN_ID", "EXPIRED_TOKEN",
                "REQUEST_EXPIRED", "MISSING_AUTHENTICATION_TOKEN", "UNRECOGNIZED_CLIENT", "INCOMPLETE_SIGNATURE",
                "INVALID_TOKEN", "NO_CREDENTIALS"}
_UNREACHABLE = {"NETWORK_CONNECTION", "ENDPOINT_RESOLUTION_FAILURE", "REQUEST_TIMEOUT", "SERVICE_UNAVAILABLE",
                "SLOW_DOWN", "INTERNAL_FAILURE"}
_AWS_CODE = re.compile(r"AWS Error ([A-Z_]+)")


@dataclass(frozen=True)
class ObjectURI:
    """``scheme://bucket/key``: ``key`` without a trailing ``/`` ("" for the whole bucket)."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        """The canonical form: what rows show and input ids hash."""
        return f"{self.scheme}://{self.bucket}" + (f"/{self.key}" if self.key else "")

    @property
    def path(self) -> str:
        """The path pyarrow's filesystem takes."""
        return self.bucket + (f"/{self.key}" if self.key else "")

    @property
    def name(self) -> str:
        """The last part of the key (the file name, for the extension check; a URL's without its query)."""
        key = self.key.split("?", 1)[0] if self.web else self.key
        return key.rsplit("/", 1)[-1]

    @property
    def web(self) -> bool:
        """Whether this is an http(s) URL (one object: HTTP has no listing)."""
        return self.scheme in webobjects.SCHEMES

    def child(self, path: str) -> ObjectURI:
        """The object at pyarrow path ``path`` (``bucket/key``) of this URI's store."""
        return ObjectURI(self.scheme, self.bucket, path.split("/", 1)[1] if "/" in path else "")


def parse(raw: bytes) -> ObjectURI:
    """The :class:`ObjectURI` of ``raw``; InputError for one that cannot name an object (the message never repeats
    what a URI with credentials in it holds)."""
    scheme, sep, rest = raw.partition(b"://")
    scheme_text = scheme.decode("ascii", "replace").lower()
    bucket, _, key = rest.partition(b"/")
    if b"@" in bucket and scheme_text in webobjects.SCHEMES:
        raise InputError(f"a URL with credentials in it ({scheme_text}://user:secret@host/...) is not accepted: "
                         "they would be written into the rows and run.json; serve the files without them")
    if b"@" in bucket:
        raise InputError(f"a URI with credentials in it ({scheme_text}://user:secret@bucket/...) is not accepted; "
                         "give them through the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                         "AWS_PROFILE)")
    try:
        bucket_text, key_text = bucket.decode("utf-8"), key.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{printable(raw.decode('utf-8', 'backslashreplace'))}: an object key is UTF-8") from None
    if not sep or scheme_text not in SCHEMES or not bucket_text:
        raise InputError(f"{printable(raw.decode('utf-8', 'backslashreplace'))}: not a URI of an object store "
                         f"({', '.join(s + '://bucket/key' for s in SCHEMES)})")
    if scheme_text in webobjects.SCHEMES:  # a URL: its path and query as they are
        return ObjectURI(scheme_text, bucket_text.lower(), key_text)
    return ObjectURI("gs" if scheme_text == "gcs" else scheme_text, bucket_text, key_text.rstrip("/"))


@dataclass(frozen=True)
class ObjectStat:
    """What the plan records of an object, to tell at scan time whether it is still the one planned."""

    size: int
    etag: str | None = None
    version: str | None = None
    last_modified: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectStat:
        return cls(int(d["size"]), d.get("etag"), d.get("version"), d.get("last_modified"))

    def change(self, now: ObjectStat) -> str | None:
        """How ``now`` differs from this planned stat (None: the same object): size (unless a web server did not
        say it: -1), then ETag, version id or Last-Modified, the first that both have."""
        if now.size != self.size and min(now.size, self.size) >= 0:
            return f"size {self.size} when planned, {now.size} now"
        for name in ("etag", "version", "last_modified"):
            old, new = getattr(self, name), getattr(now, name)
            if old is not None and new is not None:
                return None if old == new else f"{name.replace('_', '-')} {old} when planned, {new} now"
        return None


# ---- filesystems


_FILESYSTEMS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def describe_endpoint(scheme: str = "s3") -> str:
    """Where requests for ``scheme`` go, for messages (no credentials: an endpoint URL with them is refused)."""
    if scheme != "s3":
        return "Google Cloud Storage"
    endpoint = _endpoint()
    return f"the S3 endpoint {endpoint}" if endpoint else "AWS S3"


def _s3(bucket: str):
    import pyarrow.fs as pafs

    options: dict[str, Any] = {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    endpoint = _endpoint()
    if endpoint:
        parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.username is not None or parts.password is not None:
            raise InputError("AWS_ENDPOINT_URL must not carry credentials (user:secret@host); give them through "
                             "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InputError(f"AWS_ENDPOINT_URL {printable(endpoint)!r} is not an http:// or https:// URL")
        options.update(endpoint_override=parts.netloc + parts.path.rstrip("/"), scheme=parts.scheme)
        region = region or "us-east-1"
    elif region is None:
        try:
            region = pafs.resolve_s3_region(bucket)
        except OSError as exc:
            raise _run_error(ObjectURI("s3", bucket, ""), exc) from None
    return pafs.S3FileSystem(region=region, **options)


def _filesystem(u: ObjectURI):
    """The pyarrow filesystem of ``u``'s store (one per scheme and bucket: the region may differ by bucket)."""
    key = (u.scheme, u.bucket)
    with _LOCK:
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            if u.scheme == "s3":
                fs = _s3(u.bucket)
            else:
                import pyarrow.fs as pafs

                fs = pafs.FileSystem.from_uri(f"{u.scheme}://{u.bucket}")[0]
            _FILESYSTEMS[key] = fs
        return fs


def resolve(uri: str) -> tuple[Any, str]:
    """``(pyarrow filesystem, path)`` of an object-store URI, configured as for inputs: the one place a URI
    becomes a filesystem (also for what will write outputs to object stores)."""
    u = parse(uri.encode("utf-8"))
    return _filesystem(u), u.path


def forget_filesystems() -> None:
    """Drop the filesystems made so far (tests that change the environment between scans in one process)."""
    with _LOCK:
        _FILESYSTEMS.clear()


# ---- errors


def _redact(text: str) -> str:
    """``text`` without the values of the credential variables, should a message ever echo one."""
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return printable(text)


def _code(exc: BaseException) -> str | None:
    m = _AWS_CODE.search(str(exc))
    return m.group(1) if m else None


def _detail(exc: BaseException) -> str:
    """The store's own words, without pyarrow's preamble (which repeats bucket and key) or the request id."""
    text = str(exc)
    text = text.split(": AWS Error ", 1)[-1] if ": AWS Error " in text else text
    text = re.sub(r"\s*\(Request ID: [^)]*\)", "", text)
    return _redact(text)[:300]


def _run_error(u: ObjectURI, exc: BaseException) -> InputError:
    """The one-line error of a problem of the run (or an unexplained one) while reading ``u``."""
    code = _code(exc)
    where = f"cannot read {u.uri}"
    if code in _CREDENTIALS:
        return InputError(f"{where}: {describe_endpoint(u.scheme)} refused the credentials ({code}); check "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile in AWS_PROFILE)")
    if code == "ACCESS_DENIED":
        return InputError(f"{where}: access denied ({code}); check the credentials (AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and what they may read")
    if code == "NO_SUCH_BUCKET":
        return _no_bucket(u)
    if code in _UNREACHABLE:
        return InputError(f"{where}: cannot reach {describe_endpoint(u.scheme)} ({code})")
    return InputError(f"{where}: {_detail(exc)}")


def _no_bucket(u: ObjectURI) -> InputError:
    return InputError(f"cannot read {u.uri}: bucket {u.bucket} does not exist at {describe_endpoint(u.scheme)}")


def _object_failure(u: ObjectURI, exc: OSError) -> DecodeFailure:
    """The row of one object that cannot be read, or InputError (raised) when the run cannot go on."""
    if isinstance(exc, FileNotFoundError):
        return DecodeFailure("fs.vanished", "the object no longer exists")
    code = _code(exc)
    if code == "ACCESS_DENIED" and _credentials_work(u):
        return DecodeFailure("fs.permission", "access denied to this object")
    if code in ("NO_SUCH_KEY", "RESOURCE_NOT_FOUND"):
        return DecodeFailure("fs.vanished", "the object no longer exists")
    if code is None or code not in _CREDENTIALS | _UNREACHABLE | {"ACCESS_DENIED", "NO_SUCH_BUCKET"}:
        return DecodeFailure("fs.io_error", _detail(exc))
    raise _run_error(u, exc)


def _credentials_work(u: ObjectURI) -> bool:
    """Whether the store accepts the credentials for ``u``'s bucket: a HEAD refused gives no reason, so a listing
    of what lies under the key (normally nothing, one request) tells bad credentials from a refusal of one
    object."""
    import pyarrow.fs as pafs

    try:
        _filesystem(u).get_file_info(pafs.FileSelector(u.path, recursive=False, allow_not_found=True))
    except OSError as exc:
        raise _run_error(u, exc) from None
    return True


# ---- what a scan asks


def kind(u: ObjectURI) -> str | None:
    """``object``, ``prefix`` (objects under it: a directory), ``denied`` (the store refuses to say, though it
    takes the credentials), or None when neither exists; InputError for a missing bucket and for problems of the
    run."""
    import pyarrow.fs as pafs

    if u.web:
        try:
            webobjects.head(u.uri, 0)
        except DecodeFailure as f:
            if f.code == "fs.vanished":
                return None
            return "denied" if f.code == "fs.permission" else "object"  # an error the probe will give its row
        return "object"
    fs = _filesystem(u)
    try:
        info = fs.get_file_info(u.path)
        if info.type == pafs.FileType.NotFound and fs.get_file_info(u.bucket).type == pafs.FileType.NotFound:
            raise _no_bucket(u)
    except OSError as exc:
        if _code(exc) == "ACCESS_DENIED" and _credentials_work(u):
            return "denied"
        raise _run_error(u, exc) from None
    if info.type == pafs.FileType.File:
        return "object"
    return "prefix" if info.type == pafs.FileType.Directory else None


def list_prefix(u: ObjectURI) -> list[ObjectURI]:
    """Every object under the prefix ``u`` (recursively), sorted by key bytes; directory markers are left out."""
    import pyarrow.fs as pafs

    try:
        infos = _filesystem(u).get_file_info(pafs.FileSelector(u.path, recursive=True))
    except OSError as exc:
        raise _run_error(u, exc) from None
    keys = sorted((i.path for i in infos if i.type == pafs.FileType.File), key=lambda p: p.encode("utf-8"))
    return [u.child(p) for p in keys]


def _stat(f: Any) -> ObjectStat:
    md = {k.decode("latin-1").lower() if isinstance(k, bytes) else str(k).lower():
          v.decode("latin-1") if isinstance(v, bytes) else str(v) for k, v in (f.metadata() or {}).items()}
    return ObjectStat(int(f.size()), md.get("etag"), md.get("versionid") or md.get("generation"),
                      md.get("last-modified") or md.get("updated"))


def probe(u: ObjectURI, head: int = 512) -> tuple[ObjectStat, bytes]:
    """The object's stat and its first ``head`` bytes (for content sniffing); DecodeFailure for an object that
    cannot be read (its row), InputError for problems of the run."""
    if u.web:
        (size, etag, modified), first = webobjects.head(u.uri, head)
        return ObjectStat(-1 if size is None else size, etag, None, modified), first
    try:
        with _filesystem(u).open_input_file(u.path) as f:
            stat = _stat(f)
            return stat, f.read_at(min(head, stat.size), 0) if stat.size else b""
    except OSError as exc:
        raise _object_failure(u, exc) from None


T = TypeVar("T")
R = TypeVar("R")


def probe_all(items: Iterable[T], fn: Callable[[T], R],
              wanted: Callable[[T], bool] = lambda item: True) -> Iterator[tuple[T, R | None]]:
    """``(item, fn(item))`` for each of ``items``, in order, ``fn`` (a few requests to the store) running on
    :data:`PROBE_THREADS` threads, a few per thread ahead; ``(item, None)`` for the items not ``wanted``, without
    a thread. The first exception is raised, and the work not started is dropped."""
    pool = ThreadPoolExecutor(max_workers=PROBE_THREADS, thread_name_prefix="gcage-probe")
    pending: deque[tuple[T, Future[R] | None]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item) if wanted(item) else None))
            while pending and (pending[0][1] is None or len(pending) >= 4 * PROBE_THREADS):
                first, future = pending.popleft()
                yield first, None if future is None else future.result()
        while pending:
            first, future = pending.popleft()
            yield first, None if future is None else future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read(u: ObjectURI, max_bytes: int, planned: ObjectStat | None = None) -> bytes:
    """The bytes of ``u``: DecodeFailure ``fs.changed`` when it is not the object of ``planned`` any more,
    ``limit.bytes`` over ``max_bytes`` (with the detail a local file gets), the failures of :func:`probe`."""
    if u.web:
        (size, etag, modified), data = webobjects.read(u.uri, max_bytes)
        change = planned.change(ObjectStat(-1 if size is None else size, etag, None, modified)) if planned else None
        if change is not None:
            raise DecodeFailure("fs.changed", f"the object changed since it was planned: {change}")
        if size is not None and len(data) != size:
            raise DecodeFailure("fs.changed", f"the object changed while read: {len(data)} of {size} bytes")
        return data
    try:
        with _filesystem(u).open_input_file(u.path) as f:
            stat = _stat(f)
            change = planned.change(stat) if planned is not None else None
            if change is not None:
                raise DecodeFailure("fs.changed", f"the object changed since it was planned: {change}")
            if stat.size > max_bytes:
                raise DecodeFailure("limit.bytes", f"{stat.size} bytes is over the limit of {max_bytes}")
            data = f.read_at(stat.size, 0) if stat.size else b""
    except OSError as exc:
        raise _object_failure(u, exc) from None
    if len(data) != stat.size:
        raise DecodeFailure("fs.changed", f"the object changed while read: {len(data)} of {stat.size} bytes")
    return bytes(data)
