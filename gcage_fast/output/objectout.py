"""A scan's output in an object store: ``-o s3://bucket/prefix`` (AWS S3 and S3-compatible servers).

The layout is that of a local output (:mod:`gcage_fast.output.outdir`) under the prefix. An object store has no
rename and no lock, so a commit is made in two steps that each either happen whole or not at all:

1. the part is uploaded under a key of its own attempt, ``results/shard-NNNNN[-OOOOOO].<attempt>.parquet``, which
   nothing else ever writes;
2. the marker ``commits/shard-NNNNN[-OOOOOO].json`` is created by a conditional PUT (``If-None-Match: *``): the
   first attempt to create it wins, and its marker names its part (``part``, with its size, ETag and sha256). An
   attempt that loses (a Ray retry whose first try had in fact committed, two machines given the same shard)
   deletes its own part; the rows are the winner's.

A part without a marker (an attempt killed between the two steps) is removed by the next ``--resume`` and is a
problem for ``verify``, which follows the markers. Plan shards, plan.json and run.json are written by the driver
alone and are plain PUTs. Whether a part is still the committed one is told by its size and ETag in one listing
(``verify`` reads it and checks its sha256).

Requests go through boto3 (pyarrow's filesystems cannot make a conditional PUT), configured by the standard AWS
chains: ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` for an S3-compatible server, ``AWS_REGION``, and credentials
from the environment, ``AWS_PROFILE``/``~/.aws`` or the instance's role. Nothing here stores or prints them.
Problems of the run (credentials refused, a missing bucket, a store that cannot be reached) are one-line
:class:`~gcage_fast.errors.OutputError`\\ s.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gcage_fast.errors import OutputError
from gcage_fast.hashing import sha256_bytes
from gcage_fast.optional import require
from gcage_fast.output.outdir import (_OURS, OutputDir, json_bytes, parse_stem, part_stem, read_parquet_bytes,
                                      shard_name)
from gcage_fast.text import printable

__all__ = ["ObjectOutputDir", "PartInfo", "part_key"]

_CREDENTIALS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidClientTokenId", "ExpiredToken",
                "RequestExpired", "InvalidToken", "AuthorizationHeaderMalformed"}
_CLIENTS: dict[tuple[int, str | None, str | None], Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class PartInfo:
    """What a listing says of an object: its size and ETag."""

    size: int
    etag: str | None


def part_key(shard: int, offset: int | None, attempt: str) -> str:
    """The key (relative to the output) of one attempt's part of a shard or piece."""
    return f"results/{part_stem(shard, offset)}.{attempt}.parquet"


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _client() -> Any:
    """This process's S3 client (one per process and endpoint: clients are not shared across a fork)."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    key = (os.getpid(), _endpoint(), region)
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            boto3 = require("boto3")
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10, read_timeout=120)
            client = boto3.session.Session().client("s3", region_name=region or ("us-east-1" if _endpoint() else None),
                                                    config=config)
            _CLIENTS[key] = client
        return client


def forget_clients() -> None:
    """Drop the clients made so far (tests that change the environment between scans in one process)."""
    with _LOCK:
        _CLIENTS.clear()


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "") or None
    return None


def _describe_endpoint() -> str:
    endpoint = _endpoint()
    return f"the S3 endpoint {printable(endpoint)}" if endpoint else "AWS S3"


class ObjectOutputDir(OutputDir):
    """The output at ``s3://bucket/prefix``."""

    remote = True

    def __init__(self, uri: str) -> None:
        scheme, sep, rest = uri.partition("://")
        bucket, _, prefix = rest.partition("/")
        if scheme.lower() != "s3":
            raise OutputError(f"cannot write the output to {printable(uri)}: outputs in object stores are written "
                              "to s3:// URIs (AWS S3, or an S3-compatible store through AWS_ENDPOINT_URL)")
        if "@" in bucket:
            raise OutputError("an output URI with credentials in it (s3://user:secret@bucket/...) is not accepted; "
                              "give them through the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                              "or AWS_PROFILE)")
        prefix = prefix.strip("/")
        if not bucket or not prefix:
            raise OutputError(f"cannot write the output to {printable(uri)}: name a prefix in the bucket for it "
                              "(s3://bucket/results), not the bucket itself")
        self.bucket, self.prefix = bucket, prefix
        self.uri = f"s3://{bucket}/{prefix}"
        self._lock_fd = None
        self._listing: dict[str, PartInfo] | None = None

    # ---- names
    @property
    def where(self) -> str:
        return self.uri  # type: ignore[return-value]

    def display(self, rel: str) -> str:
        return f"{self.uri}/{rel}"

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    # ---- requests
    def _fail(self, exc: Exception, doing: str) -> OutputError:
        """The one-line error of a request that failed for a reason of the run."""
        code = _code(exc)
        where = f"cannot {doing} {self.uri}"
        if code in _CREDENTIALS:
            return OutputError(f"{where}: {_describe_endpoint()} refused the credentials ({code}); check "
                               "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the profile in AWS_PROFILE)")
        if code == "403":  # a HEAD's answer has no body: a listing tells refused credentials from no access
            try:
                _client().list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/", MaxKeys=1)
            except Exception as listed:  # noqa: BLE001
                if _code(listed) != "403":
                    return self._fail(listed, doing)
            code = "AccessDenied"
        if code == "AccessDenied":
            may = "read" if doing in ("read", "list") else "write"
            return OutputError(f"{where}: access denied; check the credentials (AWS_ACCESS_KEY_ID and "
                               f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE) and what they may {may}")
        if code == "NoSuchBucket":
            return self._no_bucket(doing)
        name = type(exc).__name__
        if name == "NoCredentialsError":
            return OutputError(f"{where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                               "or AWS_PROFILE)")
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"):
            return OutputError(f"{where}: cannot reach {_describe_endpoint()} ({name})")
        return OutputError(f"{where}: {code or name}: {printable(str(exc))[:300]}")

    def _no_bucket(self, doing: str = "write the output to") -> OutputError:
        return OutputError(f"cannot {doing} {self.uri}: bucket {self.bucket} does not exist at "
                           f"{_describe_endpoint()}")

    def read_bytes(self, rel: str) -> bytes:
        try:
            return _client().get_object(Bucket=self.bucket, Key=self._key(rel))["Body"].read()
        except Exception as exc:  # noqa: BLE001 - botocore's errors, sorted below
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(self.display(rel)) from None
            raise self._fail(exc, "read") from None

    def write_bytes(self, rel: str, data: bytes, tag: str = "w") -> None:
        self.put(rel, data)

    def put(self, rel: str, data: bytes) -> str | None:
        """Upload ``data`` as ``rel`` (replacing what is there); returns its ETag."""
        try:
            return _client().put_object(Bucket=self.bucket, Key=self._key(rel), Body=data).get("ETag")
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, "write to") from None

    def create(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` unless it exists (``If-None-Match: *``): True when this call created it, False when an
        object was there first (it is left as it is)."""
        for attempt in range(5):
            try:
                _client().put_object(Bucket=self.bucket, Key=self._key(rel), Body=data, IfNoneMatch="*")
                return True
            except Exception as exc:  # noqa: BLE001
                code = _code(exc)
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # S3: another conditional write of the key in flight
                    raise self._fail(exc, "write to") from None
            if self.exists(rel):
                return False
            time.sleep(0.1 * 2 ** attempt)
        raise OutputError(f"cannot write {self.display(rel)}: the store kept answering ConditionalRequestConflict")

    def delete(self, rel: str) -> None:
        try:
            _client().delete_object(Bucket=self.bucket, Key=self._key(rel))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, "delete from") from None

    def exists(self, rel: str) -> bool:
        try:
            _client().head_object(Bucket=self.bucket, Key=self._key(rel))
            return True
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._fail(exc, "read") from None

    def listing(self, rel_dir: str = "", doing: str = "list") -> dict[str, PartInfo]:
        """Every object under ``rel_dir`` (recursively): its key relative to the output -> size and ETag
        (``doing``: what a message says could not be done)."""
        root = self._key(rel_dir).rstrip("/") + "/"
        found: dict[str, PartInfo] = {}
        try:
            for page in _client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
                for o in page.get("Contents", []):
                    found[o["Key"][len(self.prefix) + 1:]] = PartInfo(int(o["Size"]), o.get("ETag"))
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc, doing) from None
        return found

    def has_run(self) -> bool:
        return self.exists("run.json")

    def has_plan(self) -> bool:
        return self.exists("plan/plan.json")

    # ---- lifecycle
    def precheck(self, mode: str) -> None:
        try:
            _client().head_bucket(Bucket=self.bucket)
        except Exception as exc:  # noqa: BLE001
            if _code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise self._no_bucket() from None
            raise self._fail(exc, "write the output to") from None
        if mode == "new" and self.listing(doing="write the output to"):
            raise OutputError(f"output {self.uri} is not empty; use --resume to continue that scan or --overwrite "
                              "to replace it")

    def open_for_scan(self, mode: str) -> bool:
        """No lock (an object store has none): two scans of one output cannot both commit a shard (the markers
        are created once), but their run.json would be the last one written."""
        existing = self.listing()
        ours = "run.json" in existing
        if mode == "resume":
            if ours:
                return True
            if existing:
                raise OutputError(f"cannot resume: {self.uri} holds objects but no run.json (not a gcage_fast output)")
            return False
        if mode == "overwrite":
            if existing and not ours and not any(k.startswith("plan/") for k in existing):
                raise OutputError(f"refusing to overwrite {self.uri}: it is not a gcage_fast output")
            for rel in sorted(existing):
                if rel.split("/", 1)[0] in _OURS:
                    self.delete(rel)
            return False
        if existing:
            raise OutputError(f"output {self.uri} is not empty; use --resume to continue that scan or --overwrite "
                              "to replace it")
        return False

    def scan_running(self) -> bool:
        return False  # no lock to ask: run.json's state is what there is

    def close(self) -> None:
        pass

    def make_dirs(self) -> None:
        pass  # prefixes need no directories

    def make_plan_dir(self) -> None:
        pass

    # ---- plan
    def _plan_shard_table(self, shard: int, expected_sha256: str | None) -> pa.Table:
        rel = f"plan/{shard_name(shard)}.arrow"
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            data = None
        if data is None or (expected_sha256 is not None and sha256_bytes(data) != expected_sha256):
            raise OutputError(f"plan file {self.display(rel)} is missing or does not match plan.json")
        return pa.ipc.open_file(pa.BufferReader(data)).read_all()

    def _plan_schema(self, shard: int) -> pa.Schema | None:
        return pa.ipc.open_file(pa.BufferReader(self.read_bytes(f"plan/{shard_name(shard)}.arrow"))).schema

    # ---- commits
    def marker_names(self) -> list[str]:
        return [rel.split("/", 1)[1] for rel in self.listing("commits") if rel.count("/") == 1]

    def committed_parts(self, shard_rows: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
        self._listing = self.listing("results")  # one listing for every part's size and ETag
        try:
            return super().committed_parts(shard_rows)
        finally:
            self._listing = None

    def _part_matches(self, stem: str, marker: dict[str, Any]) -> bool:
        listing = self._listing if self._listing is not None else self.listing("results")
        info = listing.get(self.part_ref(stem, marker))
        return (info is not None and info.size == marker.get("bytes")
                and (marker.get("etag") is None or info.etag is None or info.etag == marker.get("etag")))

    def part_ref(self, stem: str, marker: dict[str, Any] | None) -> str:
        part = (marker or {}).get("part")
        return part if isinstance(part, str) and part.startswith("results/") else f"results/{stem}.parquet"

    def _committed_ref(self, shard: int, marker: dict[str, Any]) -> str:
        return self.part_ref(part_stem(shard, marker.get("offset") if marker.get("piece") else None), marker)

    def part_name(self, ref: Any) -> str:
        return str(ref).rsplit("/", 1)[-1]

    def part_bytes(self, ref: Any) -> bytes | None:
        try:
            return self.read_bytes(str(ref))
        except FileNotFoundError:
            return None

    def read_result(self, ref: Any, columns: list[str] | None = None) -> pa.Table:
        return read_parquet_bytes(self.read_bytes(str(ref)), columns)

    def result_names(self, ref: Any) -> list[str]:
        return pq.ParquetFile(pa.BufferReader(self.read_bytes(str(ref)))).schema_arrow.names

    def leftovers(self, expected: set[str]) -> list[str]:
        return [f"part no commit marker names: {rel} (an attempt that was cut off or lost the commit to another; "
                "the next --resume deletes it)"
                for rel in sorted(self.listing("results")) if rel.split("/", 1)[1] not in expected]

    def remove_uncommitted(self, keep: set[str]) -> int:
        """Delete the markers whose stem is not in ``keep`` and every part no kept marker names."""
        removed = 0
        named = set()
        for items in self.markers().values():
            for stem, marker in items:
                if stem in keep:
                    named.add(self.part_ref(stem, marker))
                else:
                    self.delete(f"commits/{stem}.json")
                    removed += 1
        for rel in self.listing("results"):
            stem = rel.split("/", 1)[1].split(".", 1)[0]
            if parse_stem(stem) is not None and rel not in named:
                self.delete(rel)
                removed += 1
        return removed

    def write_heatmap(self, image: Any, input_id: str, fmt: str, tag: str, quality: int) -> None:
        from gcage_fast.output.heatmaps import encode_heatmap, heatmap_path

        self.put(str(heatmap_path(input_id, fmt)), encode_heatmap(image, fmt, quality))

    # ---- the commit of one part
    def commit_part(self, shard: int, offset: int | None, data: bytes, marker: dict[str, Any],
                    fault: Any = None) -> dict[str, Any]:
        """Upload one part under its attempt's own key, then create its marker (``marker`` plus where the part
        is); returns the marker that stands, this attempt's or the one that was there first."""
        rel = part_key(shard, offset, uuid.uuid4().hex[:16])
        etag = self.put(rel, data)
        if fault:
            fault("after_rename", shard)
        marker = {**marker, "part": rel, "etag": etag}
        if self.create(f"commits/{part_stem(shard, offset)}.json", json_bytes(marker)):
            return marker
        self.delete(rel)  # another attempt committed this shard first: its part and rows stand
        return self.read_commit(shard, offset) or marker
