"""Which of the files that walking a directory or listing an archive finds are inputs.

A found file (or archive member) is not an input, and gets no row, for one of these reasons (counted by reason in
the scan summary and run.json):

- ``junk``: the well-known junk of copied trees and archives: AppleDouble files (``._*``), anything under a
  ``__MACOSX`` directory, ``.DS_Store``, and ``Thumbs.db`` / ``desktop.ini`` in any letter case. Off with
  ``default_excludes=False`` (``--no-default-excludes``).
- ``excluded``: it matches an ``--exclude`` glob.
- ``not_included``: ``--include`` globs are given and it matches none of them (``--include`` means "only these").
  An archive found in a directory is opened whatever ``--include`` says (junk and ``--exclude`` still apply to
  it): ``--include`` applies to its members.
- ``old_output``: it lies in an earlier gcage-fast output directory (skipped whole, see :func:`is_output_dir`).
- ``own_output``: it lies in this scan's own output directory.

Globs are matched against the path relative to the directory named as input (``/``-separated), or against an
archive member's name. ``*`` and ``?`` never match ``/``, ``[...]`` is a character class (``[!...]`` negated), and a
whole ``**`` segment matches any number of directories (``**/cache/*.png``, ``raw/**``). A glob without ``/``
matches a name at any depth (``*.txt``, ``cache``); a glob with ``/`` is anchored at the input root
(``batch1/*.jpg``; a leading ``/`` is dropped). A glob that matches a directory matches everything under it, so
``--exclude cache`` and ``--exclude 'old/**'`` both drop a whole tree. Matching is case-sensitive.

Pure Python (no numpy, no torch): the planner imports it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field

__all__ = ["PathFilter", "REASONS", "compile_glob", "is_junk", "is_output_dir"]

#: Reasons a found file is not an input, in the order they are checked.
REASONS = ("own_output", "old_output", "junk", "excluded", "not_included")
_JUNK_NAMES = frozenset({".DS_Store"})
_JUNK_NAMES_ANY_CASE = frozenset({"thumbs.db", "desktop.ini"})
_JUNK_DIRS = frozenset({"__MACOSX"})
_RUN_JSON_MAX = 16 * 2**20


def _segment_regex(seg: str) -> str:
    """One path segment of a glob as a regex: ``*`` and ``?`` stay inside the segment."""
    out, i, n = [], 0, len(seg)
    while i < n:
        c = seg[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + (1 if i < n and seg[i] in "!^" else 0)
            j += 1 if j < n and seg[j] == "]" else 0
            while j < n and seg[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: a literal "["
                out.append(re.escape(c))
                continue
            body = seg[i:j]
            i = j + 1
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("[", "\\[")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def compile_glob(pattern: str) -> tuple[re.Pattern[str], bool]:
    """``(regex, anchored)`` of a glob: anchored globs match a whole relative path, the others one name."""
    anchored = "/" in pattern.rstrip("/")
    pat = pattern.strip("/")
    segs = pat.split("/")
    parts: list[str] = []
    for k, seg in enumerate(segs):
        if seg == "**":
            last = k == len(segs) - 1
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        parts.append(_segment_regex(seg) + ("/" if k < len(segs) - 1 else ""))
    regex = "".join(parts)
    if regex.endswith("/.*"):  # "a/**" also matches "a" itself
        regex = regex[:-3] + "(?:/.*)?"
    return re.compile(f"(?s:{regex})\\Z"), anchored


def is_junk(parts: list[str]) -> bool:
    """True for the default junk list (``parts``: the path's segments, the file's name last)."""
    name = parts[-1] if parts else ""
    return (name.startswith("._") or name in _JUNK_NAMES or name.lower() in _JUNK_NAMES_ANY_CASE
            or any(p in _JUNK_DIRS for p in parts[:-1]))


@dataclass(frozen=True)
class PathFilter:
    """The ``--include`` / ``--exclude`` globs and the default junk list of one scan."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    default_excludes: bool = True
    _include: tuple[tuple[re.Pattern[str], bool], ...] = field(init=False, repr=False, compare=False)
    _exclude: tuple[tuple[re.Pattern[str], bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", tuple(compile_glob(p) for p in self.include))
        object.__setattr__(self, "_exclude", tuple(compile_glob(p) for p in self.exclude))

    @property
    def is_default(self) -> bool:
        return not self.include and not self.exclude and self.default_excludes

    def reason(self, rel: str, include: bool = True) -> str | None:
        """Why ``rel`` (a ``/``-separated relative path or member name) is not an input, or None when it is.
        ``include=False`` leaves ``--include`` out (for an archive, whose members it applies to instead)."""
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        if self.default_excludes and is_junk(parts):
            return "junk"
        if any(_matches(g, parts) for g in self._exclude):
            return "excluded"
        if include and self._include and not any(_matches(g, parts) for g in self._include):
            return "not_included"
        return None

    def to_dict(self) -> dict[str, object]:
        return {"include": list(self.include), "exclude": list(self.exclude),
                "default_excludes": self.default_excludes}


def _matches(glob: tuple[re.Pattern[str], bool], parts: list[str]) -> bool:
    """The glob matches the path, or one of the directories it lies in."""
    regex, anchored = glob
    if not anchored:
        return any(regex.match(p) for p in parts)
    return any(regex.match("/".join(parts[:i])) for i in range(len(parts), 0, -1))


def is_output_dir(path: bytes) -> bool:
    """True when ``path`` is a gcage-fast output directory: a regular ``run.json`` that names the tool, beside a
    ``plan`` directory or the ``.lock`` file (see gcage_fast.output.outdir for the layout)."""
    run_json = os.path.join(path, b"run.json")
    try:
        st = os.lstat(run_json)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _RUN_JSON_MAX:
            return False
        if not (os.path.isdir(os.path.join(path, b"plan")) or os.path.lexists(os.path.join(path, b".lock"))):
            return False
        with open(run_json, "rb") as fh:
            info = json.loads(fh.read())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("tool") == "gcage_fast"
