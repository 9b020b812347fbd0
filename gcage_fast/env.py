"""The only module that reads environment variables. Each one is documented here.

- ``GCAGE_CACHE_DIR``: where exported ONNX graphs are cached (default ``$XDG_CACHE_HOME/gcage_fast`` or
  ``~/.cache/gcage_fast``).
- ``GCAGE_MODEL_PATH``: extra directories (``os.pathsep``-separated) searched for model directories by name.
- ``GCAGE_FAULT_AT``: test hook, ``PHASE:N``; the scan kills itself with SIGKILL when it reaches PHASE for the
  N-th time (phases: ``after_plan`` (N = 0) once the plan is written; ``image`` after N images of the run were
  processed; for shard number N: ``in_write``
  (inside the Parquet write, before close), ``before_rename``, ``after_rename``, ``after_commit``; ``enospc``
  makes the write of shard N fail with ENOSPC instead; ``pause`` waits for a signal after N images, so a test
  can interrupt a scan that cannot have finished). With ``--runner ray``: ``after_plan`` and ``after_commit``
  (once the driver sees shard N's marker) kill the driver; ``ray_prepare`` kills the Ray task that decodes shard
  N, ``ray_score`` the engine actor once it has taken in N inputs of a shard, and ``enospc`` fails the engine
  actor's write of shard N (the driver hands these to the tasks and actors). Used by the fault-injection tests;
  never set it in production.
- ``GCAGE_FAULT_ONCE``: test hook, a file path: a ``GCAGE_FAULT_AT`` fault of a Ray task or actor fires only in the
  process that creates this file first, so the task Ray retries, or the actor it restarts, goes on.
- ``GCAGE_CACHE_DIR``, ``GCAGE_MODEL_PATH``, ``GCAGE_KERNEL_IMPL`` and ``GCAGE_TEST_HOOKS``, when set, are passed on
  to the tasks and actors of a ``--runner ray`` scan (:func:`for_workers`), and so are the AWS SDK's variables that
  say where the object store is (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``,
  ``AWS_DEFAULT_REGION``), read by :mod:`gcage_fast.ingest.objectstore` and :mod:`gcage_fast.output.objectout`.
  Credentials are never passed on (Ray shows a task's environment in its dashboard): the nodes' own chains give
  them (the environment ``ray start`` ran in, ``~/.aws``, an instance or pod role).
- ``RAY_ADDRESS`` (Ray's own): the cluster a ``--runner ray`` scan joins when ``--ray-address`` is not given; when
  neither is, the scan starts a Ray instance in its own process.
- ``GCAGE_TEST_HOOKS``: test hook, ``1`` to let decode workers act on magic file contents (a file starting with
  ``GCAGE-TEST-ABORT``, ``-SEGV`` or ``-HANG`` aborts, segfaults or sleeps an hour; one starting with
  ``GCAGE-TEST-ALLOC`` asks for more than the worker's memory limit in one allocation, so it fails at once), so
  tests can drive the worker-supervision paths. Off unless set; never set it in production.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "model_search_path", "fault_point", "fault_once", "for_workers", "ray_address",
           "test_hooks"]

#: What the workers of a distributed scan get from the driver's environment (the rest is the cluster's own).
FOR_WORKERS = ("GCAGE_CACHE_DIR", "GCAGE_MODEL_PATH", "GCAGE_KERNEL_IMPL", "GCAGE_TEST_HOOKS", "AWS_ENDPOINT_URL",
               "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def cache_dir() -> Path:
    """Directory for cached exports (not created here)."""
    explicit = os.environ.get("GCAGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "gcage_fast"


def model_search_path() -> list[Path]:
    """Extra directories searched for named models, in order."""
    raw = os.environ.get("GCAGE_MODEL_PATH", "")
    return [Path(p) for p in raw.split(os.pathsep) if p]


def fault_point() -> tuple[str, int] | None:
    """The fault-injection point ``(phase, n)`` or None. Malformed values are ignored."""
    raw = os.environ.get("GCAGE_FAULT_AT", "")
    phase, sep, count = raw.partition(":")
    if not sep or not phase or not count.isdigit():
        return None
    return phase, int(count)


def fault_once() -> str | None:
    """The GCAGE_FAULT_ONCE file, or None."""
    return os.environ.get("GCAGE_FAULT_ONCE") or None


def ray_address() -> str | None:
    """``$RAY_ADDRESS``, or None."""
    return os.environ.get("RAY_ADDRESS") or None


def for_workers() -> dict[str, str]:
    """The variables of :data:`FOR_WORKERS` that are set here, for the tasks and actors of a Ray scan."""
    return {name: os.environ[name] for name in FOR_WORKERS if os.environ.get(name)}


def test_hooks() -> bool:
    """True when GCAGE_TEST_HOOKS=1 (read by the decode workers at start)."""
    return os.environ.get("GCAGE_TEST_HOOKS") == "1"
