"""What a scan reports: :class:`ScanProgress` as it goes, :class:`ScanSummary` at the end, and the totals of an
output directory that the summary and run.json quote."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


from gcage_fast.output.outdir import OutputDir, shard_rows

__all__ = ["ScanProgress", "ScanSummary", "totals"]


@dataclass
class ScanProgress:
    """Progress of the current attempt (``done`` counts inputs processed now, out of ``todo``; ``committed``
    counts the inputs of the whole output that are committed, earlier attempts included, out of ``total``)."""

    done: int
    todo: int
    total: int
    errors: int
    patches: int
    elapsed: float
    committed: int = 0


@dataclass
class ScanSummary:
    """What a scan produced. Counts cover the whole output (committed earlier or now); rates cover this attempt."""

    output: str
    run_id: str
    resumed: bool
    n_inputs: int
    status: dict[str, int]
    error_codes: dict[str, int]
    verdicts: dict[str, int]  # ok rows by verdict: fake, real and, with a model's uncertain band, uncertain
    processed: int
    patches: int
    wall_s: float  # the whole command, model loading and first-use export included
    scan_s: float  # decoding and scoring only (the basis of the rates)
    shards_total: int
    shards_written: int
    shards_skipped: int
    model_id: str
    backend: str
    cam_method: str
    verdict_sources: dict[str, int] = field(default_factory=dict)  # what decided the verdicts (model, c2pa, ...)
    #: found files that are not inputs and have no row, by reason (junk, excluded, not_included, old_output, ...)
    filtered: dict[str, int] = field(default_factory=dict)
    #: the codes of the skipped rows, counted apart (``error_codes`` counts the codes of every status)
    skipped_codes: dict[str, int] = field(default_factory=dict)
    committed_before: int = 0  # inputs committed before this attempt (resume)
    redone: int | None = 0  # inputs the interrupted attempt had scored, not committed, and this one redid (None: unknown)
    #: a resume: inputs added and removed since the plan was made (gcage_fast.scanning.changes); None otherwise
    since_plan: dict[str, Any] | None = None
    #: finished, or partial: a --shard-index/--num-shards run left ``shards_left`` plan shards to the other runs
    state: str = "finished"
    shards_left: int = 0
    selection: dict[str, int] | None = None  # {"shard_index": I, "num_shards": K} when the run took a selection
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.scan_s if self.scan_s > 0 else 0.0

    @property
    def patches_per_s(self) -> float:
        return self.patches / self.scan_s if self.scan_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images_per_s"] = round(self.images_per_s, 3)
        d["patches_per_s"] = round(self.patches_per_s, 3)
        return d


def _parts(out: OutputDir, rows: dict[int, int] | None) -> list:
    return out.result_files(shard_rows(out.read_plan_info()) if rows is None else rows)


def totals(out: OutputDir, rows: dict[int, int] | None = None) -> tuple[Counter, Counter, Counter, Counter, Counter]:
    """Counts of ``status``, ``error_code``, ``verdict`` and ``verdict_source`` over the committed parts in ``out``,
    and of the skipped rows' ``error_code`` apart (a summary lists them apart from the errors); ``rows``: the
    plan's ``{shard: rows}``, read from plan.json when None. One read of each part."""
    status, codes, verdicts, sources, skipped = Counter(), Counter(), Counter(), Counter(), Counter()
    for part in _parts(out, rows):
        t = out.read_result(part, columns=["status", "error_code", "verdict", "verdict_source"]).to_pydict()
        status.update(t["status"])
        codes.update(c for c in t["error_code"] if c)
        skipped.update(c for st, c in zip(t["status"], t["error_code"]) if st == "skipped" and c)
        verdicts.update(v for v in t["verdict"] if v)
        sources.update(v for v in t["verdict_source"] if v)
    return status, codes, verdicts, sources, skipped
