"""Frozen configuration of a scan. The only place defaults live; validated once, serialised into run.json.

Pure Python (no torch, no numpy): the decode workers import it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from gcage_fast.cam.registry import IN_GRAPH_METHODS
from gcage_fast.errors import ConfigError
from gcage_fast.precision import SCAN_PRECISIONS, check_precision

__all__ = ["Limits", "ScanConfig", "Perturbation", "parse_perturbations", "ALLOWED_FORMATS", "CAM_METHODS",
           "BACKENDS", "SCAN_PRECISIONS", "KERNEL_IMPLS", "PILLOW_BOMB_PIXELS", "VERDICT_POLICIES", "WATERMARK_SCHEMES",
           "GRIDS", "HEATMAP_FORMATS", "HEATMAPS_FOR", "INPUT_FORMATS", "default_workers", "table_options_problem"]
#: Training sampling weights (``train-base``/``train-head --balance``): none, equal weight per source within each
#: class, and per generator within each source (gcage_fast.training.frozen.balanced_weights).
BALANCES = ("none", "source", "source-generator")
#: What ``--hold-out`` names (and what ``crossval --by`` leaves out one at a time).
HOLD_OUT_KEYS = ("source", "generator")

#: Formats decoded by default, detected from content (never from the file name).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: The forward-only CAM methods computed inside the base graph (the in-graph entries of gcage_fast.cam.registry).
CAM_METHODS = IN_GRAPH_METHODS
#: How evidence and the model make a verdict (gcage_fast.evidence.policy; the first is the default).
VERDICT_POLICIES = ("evidence-first", "model-only")
#: Patch grids (gcage_fast.scoring.patches): floor is SuSy's inference grid, cover adds edge-aligned border patches.
GRIDS = ("floor", "cover")
#: ``--heatmaps`` choices: none, or the format of the overlay files (png lossless; jpeg and webp at a quality).
HEATMAP_FORMATS = ("none", "png", "jpeg", "webp")
#: ``--heatmaps-for``: overlays of every scored row, of the fake ones, or of the fake and uncertain ones.
HEATMAPS_FOR = ("all", "fake", "uncertain")
#: ``--input-format``: how archives are read. files: each member is an input; webdataset: each sample (the members
#: that share a key) is one, its image scored and the rest kept as its sidecar (gcage_fast.ingest.webdataset);
#: auto, the default, reads them as files.
INPUT_FORMATS = ("auto", "files", "webdataset")
#: ``--runner``: where a scan runs: this machine (gcage_fast.scanning.local), or a Ray cluster
#: (gcage_fast.scanning.ray_runner, the ``ray`` extra).
RUNNERS = ("local", "ray")
#: Invisible-watermark schemes ``--watermarks`` accepts (gcage_fast.evidence.watermark decodes them).
WATERMARK_SCHEMES = ("sd",)
#: Pillow warns about a decompression bomb above this many pixels; we treat the warning as an error.
PILLOW_BOMB_PIXELS = 89_478_485


# --------------------------------------------------------------------- robustness perturbations (eval)
#: Each parameterised perturbation: (type, lowest, highest). Applied by gcage_fast.ingest.perturb.
_PARAM = {"jpeg": (int, 1, 100), "blur": (float, 0.0, 100.0), "noise": (float, 0.0, 255.0),
          "resize": (float, 0.01, 16.0), "crop": (int, 1, 100_000)}


@dataclass(frozen=True)
class Perturbation:
    """One robustness transform of a decoded image (``jpeg:75``, ``grayscale``, …), as ``eval --perturb`` names
    it."""

    name: str
    value: float | int | None = None

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value:g}"


def parse_perturbations(spec: str) -> list[Perturbation]:
    """``"jpeg:75,blur:1,grayscale"`` -> perturbations; raises ConfigError with the accepted forms."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, raw = part.partition(":")
        if name in ("none", "grayscale") and not raw:
            out.append(Perturbation(name))
            continue
        if name not in _PARAM or not raw:
            raise ConfigError(f"invalid perturbation {part!r}; use jpeg:Q, blur:SIGMA, noise:STD, resize:SCALE, "
                              "crop:SIZE, grayscale or none")
        typ, lo, hi = _PARAM[name]
        try:
            value = typ(raw)
        except ValueError:
            raise ConfigError(f"invalid value in perturbation {part!r}: expected {typ.__name__}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"perturbation {part!r}: value must be between {lo} and {hi}")
        out.append(Perturbation(name, value))
    if not out:
        raise ConfigError("no perturbation given")
    return out


def table_options_problem(inputs: tuple[str, ...], from_list: str | None, from_table: str | None,
                          path_column: str | None, keep_columns: tuple[str, ...]) -> str | None:
    """What is wrong with how ``--from-table``, ``--path-column`` and ``--keep-columns`` are combined (a usage
    mistake on the command line), or None."""
    if from_table is not None and (inputs or from_list is not None):
        return "--from-table takes the place of INPUTS and --from-list: put every input in the table"
    if from_table is not None and not path_column:
        return "--from-table needs --path-column COL: the table's column that holds the paths"
    if from_table is None and (path_column is not None or keep_columns):
        option = "--path-column" if path_column is not None else "--keep-columns"
        return f"{option} needs --from-table FILE: it names a column of that table"
    return None


def runner_options_problem(runner: str, ray_address: str | None, ray_actors: int | None,
                           ray_actor_gpus: float | None, shard_index: int | None, num_shards: int | None,
                           workers: int | None) -> str | None:
    """What is wrong with how ``--runner``, the ``--ray-*`` options and ``--shard-index``/``--num-shards`` are
    combined (a usage mistake on the command line), or None."""
    if runner not in RUNNERS:
        return f"unknown --runner {runner!r}; choose {' or '.join(RUNNERS)}"
    if runner != "ray":
        for option, value in (("--ray-address", ray_address), ("--ray-actors", ray_actors),
                              ("--ray-actor-gpus", ray_actor_gpus)):
            if value is not None:
                return f"{option} needs --runner ray"
    elif workers == 0:
        return ("--runner ray needs --workers 1 or more: decode tasks decode in supervised worker processes, so a "
                "file that crashes its decoder costs one worker.crash row and not the Ray task")
    if (shard_index is None) != (num_shards is None):
        return "--shard-index and --num-shards go together: --num-shards K --shard-index I scans shard % K == I"
    if num_shards is not None and not 0 <= shard_index < num_shards:  # type: ignore[operator]
        return f"--shard-index must be between 0 and {num_shards - 1} (--num-shards {num_shards})"
    if ray_actors is not None and ray_actors < 1:
        return "--ray-actors must be at least 1"
    if ray_actor_gpus is not None and not ray_actor_gpus >= 0:
        return "--ray-actor-gpus must be 0 or more"
    return None


def default_workers() -> int:
    """Decode processes when ``--workers`` is not given: one per core, leaving one core to the engine."""
    return max(1, (os.cpu_count() or 2) - 1)


@dataclass(frozen=True)
class Limits:
    """Per-file limits. A file over a limit gets an error row (``limit.*``), never a crash."""

    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 64_000_000
    formats: tuple[str, ...] = ALLOWED_FORMATS
    timeout_s: float = 60.0  # per file, enforced by the parent (the worker is killed)
    worker_memory_mb: int = 4096  # address-space limit of each decode worker
    max_aspect: float = 100.0  # longest side / shortest side
    max_members: int = 100_000  # per archive
    max_archive_bytes: int = 8 * 2**30  # bytes an archive may expand to
    max_ratio: float = 200.0  # expansion ratio of an archive, checked once it has expanded past ratio_min_bytes
    ratio_min_bytes: int = 64 * 2**20

    def validate(self) -> None:
        if self.max_bytes < 1:
            raise ConfigError("--max-bytes must be positive")
        if not 1 <= self.max_pixels <= PILLOW_BOMB_PIXELS:
            raise ConfigError(f"--max-pixels must be between 1 and {PILLOW_BOMB_PIXELS} "
                              "(Pillow's decompression-bomb threshold)")
        if self.max_aspect < 1:
            raise ConfigError("--max-aspect must be at least 1")
        if self.max_members < 1 or self.max_archive_bytes < 1 or self.max_ratio < 1:
            raise ConfigError("archive limits must be positive")
        if self.timeout_s <= 0:
            raise ConfigError("--timeout must be positive")
        if self.worker_memory_mb < 256:
            raise ConfigError("--worker-memory must be at least 256 (MiB)")
        unknown = sorted(set(self.formats) - set(ALLOWED_FORMATS))
        if unknown:
            raise ConfigError(f"unsupported formats {unknown}; choose from {', '.join(ALLOWED_FORMATS)}")


#: Engine backends a scan can ask for (``auto`` picks one, see gcage_fast.engine.factory.resolve_backend).
BACKENDS = ("auto", "ort", "torch", "tensorrt")
#: Implementations of the patch kernels (gcage_fast.kernels.dispatch).
KERNEL_IMPLS = ("auto", "reference", "triton", "cuda")


@dataclass(frozen=True)
class ScanConfig:
    """Everything ``gcage-fast scan`` needs. ``None`` means "take it from the model spec" (top_k, cam, cam_target,
    threshold) or "choose automatically" (workers, threads)."""

    inputs: tuple[str, ...]
    output: str
    from_list: str | None = None
    #: A table of inputs, one per row (gcage_fast.ingest.tables): its column of paths, and the columns whose
    #: values every result row of that table row keeps.
    from_table: str | None = None
    path_column: str | None = None
    keep_columns: tuple[str, ...] = ()
    model: str | None = None
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"  # one of gcage_fast.precision.SCAN_PRECISIONS
    calibration: str | None = None  # int8: directory of calibration images (None = the bundled samples)
    kernel_impl: str | None = None  # auto | reference | triton | cuda; None reads $GCAGE_KERNEL_IMPL (default auto)
    top_k: int | None = None
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    cam: str | None = None
    cam_target: str | None = None
    threshold: float | None = None
    heatmaps: str = "none"  # one of HEATMAP_FORMATS
    heatmap_quality: int = 85  # jpeg/webp quality of the overlays, 1-100 (png is lossless)
    heatmaps_for: str = "all"  # one of HEATMAPS_FOR: which scored rows get an overlay, by their verdict
    shard_size: int = 1000
    mode: str = "new"  # new | resume | overwrite
    follow_symlinks: bool = False
    small_images: str = "pad"  # pad | skip
    limits: Limits = field(default_factory=Limits)
    perturb: str | None = None  # robustness transform (one of gcage_fast.ingest.perturb), used by `eval`
    max_consecutive_failures: int = 50  # circuit breaker: consecutive worker.crash/worker.error rows
    evidence: bool = True  # read provenance (C2PA, IPTC/XMP, declared generators) from every file's bytes
    verdict_policy: str = "evidence-first"  # one of gcage_fast.evidence.policy.VERDICT_POLICIES
    c2pa_trust_anchors: str | None = None  # PEM bundle of C2PA trust anchors; None = the shipped official list
    watermarks: str = "none"  # invisible watermarks to look for: none, or a comma list of WATERMARK_SCHEMES
    grid: str = "floor"  # patch grid: floor (SuSy's, remainders dropped) or cover (plus edge-aligned border patches)
    include: tuple[str, ...] = ()  # globs: only what they match, of what walking directories and archives finds
    exclude: tuple[str, ...] = ()  # globs: none of what they match (gcage_fast.ingest.filters has the rules)
    default_excludes: bool = True  # drop the well-known junk (._*, __MACOSX/, .DS_Store, Thumbs.db, desktop.ini)
    #: Also commit a shard's scored inputs after this many seconds (0: at every batch boundary), so an interrupt
    #: loses at most about this much work. Rows do not depend on it (cuts fall where no batch is open).
    commit_every: float = 30.0
    skip_known: tuple[str, ...] = ()  # earlier outputs: inputs whose sha256 they scored get a row pointing there
    input_format: str = "auto"  # one of INPUT_FORMATS: archives as independent members, or as WebDataset shards
    runner: str = "local"  # one of RUNNERS
    #: ``--runner ray``: the cluster to join (None: Ray's own choice: $RAY_ADDRESS, else an instance started in this
    #: process), how many engine actors (None: one per GPU the actors can take, else 1) and the GPUs each takes
    #: (None: 1 with device cuda, else 0; a logical GPU places CPU actors on the GPU nodes).
    ray_address: str | None = None
    ray_actors: int | None = None
    ray_actor_gpus: float | None = None
    #: Only the plan shards with shard % num_shards == shard_index (a plan split across runs or machines). Not part
    #: of the resume fingerprint; a run that leaves shards to other runs finishes "partial".
    shard_index: int | None = None
    num_shards: int | None = None

    def validate(self) -> None:
        if not self.inputs and self.from_list is None and self.from_table is None:
            raise ConfigError("no inputs: give files or directories, --from-list FILE or --from-table FILE")
        problem = table_options_problem(self.inputs, self.from_list, self.from_table, self.path_column,
                                        self.keep_columns)
        if problem is not None:
            raise ConfigError(problem)
        problem = runner_options_problem(self.runner, self.ray_address, self.ray_actors, self.ray_actor_gpus,
                                         self.shard_index, self.num_shards, self.workers)
        if problem is not None:
            raise ConfigError(problem)
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose {', '.join(BACKENDS)}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.backend == "tensorrt" and self.device != "cuda":
            raise ConfigError("--backend tensorrt runs on --device cuda only")
        check_precision(self.precision, SCAN_PRECISIONS)
        if self.calibration is not None and self.precision != "int8":
            raise ConfigError("--calibration only applies to --precision int8")
        if self.kernel_impl is not None and self.kernel_impl not in KERNEL_IMPLS:
            raise ConfigError(f"unknown --kernel-impl {self.kernel_impl!r}; choose {', '.join(KERNEL_IMPLS)}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError("--top-k must be at least 1")
        if self.batch_size < 1:
            raise ConfigError("--batch-size must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise ConfigError("--workers must be 0 (decode in the main process) or more")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("--threads must be at least 1")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError("--threshold must be between 0 and 1")
        if self.heatmaps not in HEATMAP_FORMATS:
            raise ConfigError(f"unknown --heatmaps {self.heatmaps!r}; choose {', '.join(HEATMAP_FORMATS)}")
        if not 1 <= self.heatmap_quality <= 100:
            raise ConfigError("--heatmap-quality must be between 1 and 100")
        if self.heatmaps_for not in HEATMAPS_FOR:
            raise ConfigError(f"unknown --heatmaps-for {self.heatmaps_for!r}; choose {', '.join(HEATMAPS_FOR)}")
        for option, globs in (("--include", self.include), ("--exclude", self.exclude)):
            if any(not g.strip("/") or "\x00" in g for g in globs):
                raise ConfigError(f"{option} needs a non-empty glob (e.g. {option} '*.jpg')")
        if self.shard_size < 1:
            raise ConfigError("--shard-size must be at least 1")
        if not self.commit_every >= 0:
            raise ConfigError("--commit-every must be 0 (at every batch) or more seconds")
        if self.max_consecutive_failures < 1:
            raise ConfigError("--max-consecutive-failures must be at least 1")
        if self.mode not in ("new", "resume", "overwrite"):
            raise ConfigError(f"unknown mode {self.mode!r}")
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"unknown --input-format {self.input_format!r}; choose {', '.join(INPUT_FORMATS)}")
        if self.grid not in GRIDS:
            raise ConfigError(f"unknown --grid {self.grid!r}; choose {' or '.join(GRIDS)}")
        if self.small_images not in ("pad", "skip"):
            raise ConfigError(f"unknown --small-images {self.small_images!r}; choose pad or skip")
        if self.verdict_policy not in VERDICT_POLICIES:
            raise ConfigError(f"unknown --verdict-policy {self.verdict_policy!r}; choose "
                              f"{' or '.join(VERDICT_POLICIES)}")
        self.watermark_schemes  # validates --watermarks
        self.limits.validate()
        if self.perturb is not None:
            if len(parse_perturbations(self.perturb)) != 1:
                raise ConfigError("a scan applies at most one perturbation")

    @property
    def watermark_schemes(self) -> tuple[str, ...]:
        """The ``--watermarks`` schemes (empty for ``none``); raises ConfigError for an unknown one."""
        names = tuple(dict.fromkeys(w.strip() for w in self.watermarks.split(",") if w.strip()))
        if names == ("none",):
            return ()
        unknown = [n for n in names if n not in WATERMARK_SCHEMES]
        if unknown or not names:
            raise ConfigError(f"unknown --watermarks {self.watermarks!r}; use none or a comma list of "
                              f"{', '.join(WATERMARK_SCHEMES)}")
        return names

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["limits"]["formats"] = list(self.limits.formats)
        d["inputs"] = list(self.inputs)
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        d["keep_columns"] = list(self.keep_columns)
        return d
