"""Durable file writes (temp file in the same directory, fsync, rename, fsync the directory), and the private
cache directories whose files gcage_fast executes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "fsync_dir", "tmp_name", "private_dir"]


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry so a rename inside it survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(final: Path, tag: str) -> Path:
    """The temp name used while ``final`` is written: ``<name>.tmp-<tag>`` beside it."""
    return final.with_name(f"{final.name}.tmp-{tag}")


def atomic_write_bytes(path: str | Path, data: bytes, tag: str = "w") -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the complete new one."""
    final = Path(path)
    tmp = tmp_name(final, tag)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def atomic_write_json(path: str | Path, obj: Any, tag: str = "w") -> None:
    """:func:`atomic_write_bytes` of indented, key-sorted JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), tag=tag)


def private_dir(path: Path, what: str, error: type[Exception]) -> Path:
    """Create ``path`` (0700) or check that an existing one is a plain directory of ours that others cannot
    write; raise ``error`` naming ``what`` otherwise. For caches whose files gcage_fast will execute (ONNX graphs,
    TensorRT engines): nobody else may be able to put one there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is not a plain directory; remove it or set GCAGE_CACHE_DIR")
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise error(f"{what} {path} is owned by another user or writable by others; "
                    "fix its permissions (chmod go-w) or set GCAGE_CACHE_DIR")
    return path
