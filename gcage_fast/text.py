"""Text that is safe to show: control characters escaped, for terminals, logs and row details.

Pure Python: the decode workers import it.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str) -> str:
    """``text`` with every non-printable character (other than the space) written as its Python escape, so a
    hostile file or member name cannot move the cursor, clear a terminal or forge a log line."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii") for c in text)
