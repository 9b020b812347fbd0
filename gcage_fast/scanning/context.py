"""What the shard steps of a scan are given: plain, frozen, picklable descriptions, so that the same steps run in
the local runner's threads today and in other processes (Ray tasks and actors) later.

- :class:`ShardSpec`: one shard of the frozen plan (its number, its row count, the sha256 of its plan file).
- :class:`RunContext`: what every step of one run needs, the same for all its shards: the configuration, the
  settings resolved once at setup (from the model, the engines and the environment), the run id, the output path.

Nothing here holds an open resource: a step that writes makes its own :class:`OutputDir` from the path (the
runner that set the run up holds the directory's lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from gcage_fast.config import ScanConfig
from gcage_fast.ingest.perturb import Perturbation, parse_perturbations
from gcage_fast.output.heatmaps import PREVIEW_MAX
from gcage_fast.output.location import output_dir
from gcage_fast.output.outdir import OutputDir
from gcage_fast.output.schema import with_kept

__all__ = ["RunContext", "ShardSpec"]


@dataclass(frozen=True)
class ShardSpec:
    """One shard of the plan, as plan.json lists it, and where in it work starts: ``start`` inputs of it are
    committed already (time-based commits, ``--commit-every``), so ``todo`` are left."""

    shard: int
    rows: int
    sha256: str
    start: int = 0

    @property
    def todo(self) -> int:
        return self.rows - self.start

    @classmethod
    def from_plan(cls, entry: dict[str, Any]) -> ShardSpec:
        """From one item of plan.json's ``shards``."""
        return cls(int(entry["shard"]), int(entry["rows"]), str(entry["sha256"]))


@dataclass(frozen=True)
class RunContext:
    """Everything the shard steps of one run read. Built once by the runner after setup; never changed."""

    config: ScanConfig
    output: str  # the output directory
    run_id: str
    model_id: str
    model_sha256: str
    backend: str  # the engine's label, as rows and run.json show it (e.g. "ort-cpu")
    cam_method: str
    cam_target: str
    threshold: float
    top_k: int
    #: Patch selection on the engine's device (whole images leave the decode workers). Resolved once at setup,
    #: from the configuration and ``$GCAGE_KERNEL_IMPL``, so a step in another process does not read its own
    #: environment.
    full_image: bool
    class_names: tuple[str, ...] = ()  # the model's classes, in the order of base_probs
    kept: tuple[pa.Field, ...] = ()  # the table columns the rows keep (scan --from-table --keep-columns)

    @property
    def row_schema(self) -> pa.Schema:
        """The schema of this run's rows: the standard columns, then the kept ones."""
        return with_kept(self.kept)

    @property
    def preview_max(self) -> int:
        """Longest side of the preview a decode worker keeps for heatmap overlays (0: none)."""
        return PREVIEW_MAX if self.config.heatmaps != "none" else 0

    @property
    def perturbation(self) -> Perturbation | None:
        return parse_perturbations(self.config.perturb)[0] if self.config.perturb else None

    def outdir(self) -> OutputDir:
        """The output directory, unlocked (the runner holds the lock)."""
        return output_dir(self.output)
