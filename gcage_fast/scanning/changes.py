"""What changed in the inputs since a resumed scan froze its plan.

``--resume`` follows the frozen plan (the same inputs, in the same shards), so files added since are not scanned
and removed ones that were not committed yet get an ``fs.vanished`` row. :func:`since_plan` runs discovery again
(same inputs, same filters), compares input ids with the plan's and says so, in run.json's ``since_plan``, in the
summary, and in one warning that says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from gcage_fast.config import ScanConfig
from gcage_fast.errors import InputError
from gcage_fast.ingest.sources import Discovery, display_path
from gcage_fast.log import logger
from gcage_fast.output.outdir import OutputDir
from gcage_fast.scanning.locator import locator

__all__ = ["EXAMPLES", "compare", "since_plan", "summary_line"]

#: How many display paths of each kind run.json and the warning name.
EXAMPLES = 5


def _planned(out: OutputDir, plan: dict[str, Any]) -> dict[str, str]:
    """input_id -> locator of every planned input."""
    ids: dict[str, str] = {}
    for s in plan["shards"]:
        for e in out.read_plan_shard(s["shard"], s["sha256"]):
            ids[e.input_id] = locator(e.path, None if e.member_bytes is None else display_path(e.member_bytes))
    return ids


def compare(out: OutputDir, plan: dict[str, Any], found: Discovery) -> dict[str, Any]:
    """Counts and the first few locators (in plan order) of the inputs found now and not planned (``added``),
    and planned and not found now (``removed``)."""
    planned = _planned(out, plan)
    now = {r.input_id: r for r in found.refs}
    added = [r for i, r in now.items() if i not in planned]
    removed = [where for i, where in planned.items() if i not in now]
    return {"added": len(added), "removed": len(removed),
            "added_first": [locator(r.path, None if r.member is None else display_path(r.member))
                            for r in added[:EXAMPLES]],
            "removed_first": removed[:EXAMPLES]}


def since_plan(config: ScanConfig, out: OutputDir, plan: dict[str, Any],
               discover: Callable[[], Discovery]) -> dict[str, Any]:
    """:func:`compare` for a resume of ``out`` (``discover`` enumerates the inputs as planning did), with a
    warning when anything changed; ``{"compared": False, "reason": ...}`` when the inputs cannot be listed again
    (standard input, or a named input that is gone)."""
    if config.from_list == "-":
        return {"compared": False, "reason": "the inputs came from standard input"}
    try:
        found = discover()
    except InputError as exc:
        logger.warning("cannot tell what changed since the plan: %s", exc)
        return {"compared": False, "reason": str(exc)}
    changes = {"compared": True, **compare(out, plan, found)}
    if changes["added"] or changes["removed"]:
        where = out.where if out.remote else display_path(os.fsencode(out.path))
        logger.warning(
            "since the plan of %s was made, %d inputs were added%s and %d removed%s; --resume scans only the "
            "planned inputs: scan the added ones into a new output with --skip-known %s (what this one scored "
            "is then skipped and points at its rows); removed inputs keep their rows where they are committed, "
            "the others get an fs.vanished error row",
            where, changes["added"], _first(changes["added_first"], changes["added"]), changes["removed"],
            _first(changes["removed_first"], changes["removed"]), where)
    return changes


def _first(names: list[str], n: int) -> str:
    if not names:
        return ""
    return " (" + ", ".join(names) + (", ..." if n > len(names) else "") + ")"


def summary_line(since: dict[str, Any] | None, output: str) -> str | None:
    """The scan summary's line about :func:`since_plan` (None when there is nothing to say)."""
    if not since:
        return None
    if not since.get("compared"):
        return f"since plan: not compared ({since.get('reason')})"
    if not since["added"] and not since["removed"]:
        return None
    added = (f"{since['added']} inputs added (not scanned by --resume: scan them into a new output with "
             f"--skip-known {display_path(os.fsencode(output))})")
    return f"since plan: {added}, {since['removed']} removed"
