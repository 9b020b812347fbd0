"""Where a scan's output lies: a local directory, or a prefix in an object store (``s3://bucket/prefix``)."""

from __future__ import annotations

import re
from pathlib import Path

from gcage_fast.output.outdir import OutputDir

__all__ = ["is_uri", "output_dir"]

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(path, str) and _URI.match(path) is not None


def output_dir(path: str | Path) -> OutputDir:
    """The output at ``path``: an :class:`OutputDir`, or for ``s3://bucket/prefix`` an
    :class:`~gcage_fast.output.objectout.ObjectOutputDir` (OutputError for another scheme)."""
    if is_uri(path):
        from gcage_fast.output.objectout import ObjectOutputDir  # boto3: only for outputs in object stores

        return ObjectOutputDir(str(path))
    return OutputDir(path)
