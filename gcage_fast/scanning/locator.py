"""Where a row's input is, for people and queries: ``locator``, ``input_root`` and ``relpath``.

``locator`` is the display path, with ``!member`` appended for an archive member (both escaped as the ``path``
column is). ``input_root`` is the scanned directory (a command-line input) the file was found under, the longest
one when inputs nest; a file named directly (on the command line or in ``--from-list``) has its own directory as
root. ``relpath`` is the locator relative to that root. Only path bytes are compared, so nothing is read from
disk and every row of one input gets the same answer on every machine.

An object in an object store has its canonical URI as path (``s3://bucket/key``): its root is the prefix named as
input (``s3://bucket/photos``), or for an object named directly the URI up to its last ``/``.
"""

from __future__ import annotations

import os
from functools import lru_cache

from gcage_fast.ingest.sources import display_path, input_root

__all__ = ["locator", "locate"]


def locator(path: str, member: str | None) -> str:
    """``path``, or ``path!member`` for an archive member (display forms)."""
    return path if member is None else f"{path}!{member}"


@lru_cache(maxsize=8)
def _roots(inputs: tuple[str, ...]) -> tuple[bytes, ...]:
    """Absolute command-line inputs (canonical URIs for objects), longest first (the innermost root wins)."""
    roots = {input_root(os.fsencode(i)).rstrip(b"/") or b"/" for i in inputs}
    return tuple(sorted(roots, key=len, reverse=True))


def locate(path_bytes: bytes, member: bytes | None, inputs: tuple[str, ...]) -> tuple[str, str, str]:
    """``(locator, input_root, relpath)`` of an input found from the command-line ``inputs``."""
    member_text = None if member is None else display_path(member)
    root = next((r for r in _roots(inputs) if path_bytes.startswith(r.rstrip(b"/") + b"/")), None)
    if root is None:  # a file named directly (or listed): its directory is the root
        root = os.path.dirname(path_bytes) or b"/"
    rel = path_bytes[len(root.rstrip(b"/")) + 1:]
    return (locator(display_path(path_bytes), member_text), display_path(root),
            locator(display_path(rel), member_text))
