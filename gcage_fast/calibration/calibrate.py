"""``gcage-fast calibrate``: choose a model's threshold for a target false-positive rate on the user's own real
images, and write the result as a new model directory.

The reference reals (and, optionally, known-AI images) are scored by an ordinary scan (same decoding, patch
selection, engines and aggregation as ``gcage-fast scan``) into a temporary directory, with the ``model-only``
verdict policy: only the model's ``p_fake`` of ``ok`` rows is used, never a verdict. The threshold rule is that of
:mod:`gcage_fast.calibration.threshold`. With known-AI images an isotonic map of p_fake to P(fake) is fitted
(:mod:`gcage_fast.calibration.isotonic`) and recorded in ``calibration.json``; it is NOT applied to p_fake by
scans (yet). The new directory holds copies of the weights (sha256 verified against the source spec), a
``model.json`` with the new threshold and id, and ``calibration.json``.

With ``uncertain_fpr`` (looser than ``fpr``), the lower edge of an uncertain band is chosen by the same rule at that
target on the same reals: scans of the new model call ``uncertain_threshold <= p_fake < threshold`` ``uncertain``.
Without it the new model has no band (a band of the source model belonged to its old threshold and is dropped).

Never changes the source model, never writes outside the output directory (and its temporary sibling), and never
changes how a scan computes p_fake.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gcage_fast.calibration.isotonic import apply_isotonic, fit_isotonic
from gcage_fast.calibration.threshold import (ThresholdChoice, allowed_false_positives, clopper_pearson,
                                              fpr_threshold, reals_needed)
from gcage_fast.errors import ConfigError, InputError, ModelError, OutputError
from gcage_fast.fsutil import atomic_write_bytes, atomic_write_json, fsync_dir
from gcage_fast.output.outdir import OutputDir

__all__ = ["CalibrationConfig", "calibrate", "CALIBRATION_FILE", "CALIBRATION_VERSION", "MAP_NOTE", "SUFFIX"]

CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 1
#: Appended to the source model's name to make the calibrated model's id.
SUFFIX = "-calibrated"
CONFIDENCE = 0.95
MAP_NOTE = ("recorded, not applied: scans still report the model's uncalibrated p_fake; the threshold in "
            "model.json is on that p_fake")
RULE = ("smallest float64 t with #{real p_fake >= t} <= floor(fpr * n_real): t = nextafter(v, +inf), v the "
        "(floor(fpr * n_real) + 1)-th highest real p_fake; reals tied at v all fall below t")


@dataclass(frozen=True)
class CalibrationConfig:
    """Everything ``gcage-fast calibrate`` needs. ``None`` means "the bundled model" (model) or "choose
    automatically" (workers, threads).

    Attributes:
        reference: a folder (or file) of known-real images, walked like a scan input.
        output: the model directory to write; it must not exist or be empty, unless ``overwrite``.
        fpr: the target false-positive rate on the reals, in (0, 0.5].
        uncertain_fpr: the looser target (above ``fpr``, at most 0.5) whose threshold is the lower edge of the
            uncertain band; None: no band.
        ai: an optional folder of known-AI images (true-positive rate, isotonic map).
        command: the command line, recorded in calibration.json.
    """

    reference: str
    output: str
    model: str | None = None
    fpr: float = 0.01
    uncertain_fpr: float | None = None
    ai: str | None = None
    backend: str = "auto"
    device: str = "cpu"
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    overwrite: bool = False
    command: str | None = None

    def validate(self) -> None:
        """Raise ConfigError for an invalid option (before any model is loaded or image scanned)."""
        if not (isinstance(self.fpr, (int, float)) and math.isfinite(self.fpr) and 0.0 < self.fpr <= 0.5):
            raise ConfigError(f"--fpr must be in (0, 0.5], got {self.fpr}")
        u = self.uncertain_fpr
        if u is not None and not (isinstance(u, (int, float)) and math.isfinite(u) and self.fpr < u <= 0.5):
            raise ConfigError(f"--uncertain-fpr must be above --fpr ({self.fpr:g}) and at most 0.5, got {u}")
        self.scan_config(("x",), "out").validate()

    def scan_config(self, inputs: tuple[str, ...], output: str, model: str | None = None, shard_size: int = 1000):
        from gcage_fast.config import ScanConfig

        return ScanConfig(inputs=inputs, output=output, model=model or self.model, backend=self.backend,
                          device=self.device, batch_size=self.batch_size, workers=self.workers,
                          threads=self.threads, shard_size=shard_size, evidence=False, verdict_policy="model-only")


# ------------------------------------------------------------------------------------------------ inputs
def _enumerate(root: str, what: str) -> set[bytes]:
    from gcage_fast.ingest.sources import enumerate_inputs

    refs = enumerate_inputs((root,))
    if not refs:
        raise InputError(f"the {what} set {root} holds no files")
    return {r.path_bytes for r in refs}


def _check_output(cfg: CalibrationConfig, model_path: Path) -> Path:
    out = Path(cfg.output)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise OutputError(f"{cfg.output} exists and is not a directory")
        if os.path.realpath(out) == os.path.realpath(model_path):
            raise OutputError(f"{cfg.output} is the source model's directory; write the calibrated model elsewhere")
        if any(out.iterdir()):
            if not cfg.overwrite:
                raise OutputError(f"{cfg.output} exists and is not empty; choose a new directory or pass --overwrite")
            if not (out / "model.json").is_file():
                raise OutputError(f"{cfg.output} is not a model directory (no model.json); refusing to overwrite it")
    return out


def _scores(cfg: CalibrationConfig, model_path: Path, ref: set[bytes], ai: set[bytes]) -> dict[str, Any]:
    """Scan both sets once; p_fake of the ok rows per set, and the error codes of the others."""
    import pyarrow.dataset as pads

    from gcage_fast.scanning.local import scan

    inputs = (cfg.reference,) + ((cfg.ai,) if cfg.ai else ())
    with tempfile.TemporaryDirectory(prefix="gcage-calibrate-") as tmp:
        out = Path(tmp) / "scan"
        summary = scan(cfg.scan_config(inputs, str(out), model=str(model_path),
                                       shard_size=max(1, len(ref) + len(ai))))
        table = pads.dataset(OutputDir(out).results_dir, format="parquet").to_table(
            columns=["path_bytes", "status", "error_code", "p_fake"])
    scores: dict[str, list[float]] = {"real": [], "ai": []}
    unscanned: dict[str, Counter[str]] = {"real": Counter(), "ai": Counter()}
    for row in table.to_pylist():
        which = "ai" if row["path_bytes"] in ai else "real"
        if row["status"] == "ok" and row["p_fake"] is not None:
            scores[which].append(float(row["p_fake"]))
        else:
            unscanned[which][row["error_code"] or row["status"]] += 1
    return {"real": np.array(scores["real"]), "ai": np.array(scores["ai"]), "unscanned": unscanned,
            "backend": summary.backend}


def _check_scored(cfg: CalibrationConfig, got: dict[str, Any]) -> None:
    for which, root, what in (("real", cfg.reference, "reference"), ("ai", cfg.ai, "AI")):
        if root is None or got[which].size:
            continue
        codes = got["unscanned"][which]
        detail = ", ".join(f"{c}: {n}" for c, n in sorted(codes.items()))
        raise InputError(f"no image of the {what} set {root} could be scored ({sum(codes.values())} files "
                         f"unscanned: {detail})")
    n = int(got["real"].size)
    if allowed_false_positives(cfg.fpr, n) < 1:
        raise InputError(f"{n} scored reference reals are too few for --fpr {cfg.fpr:g}: at least "
                         f"{reals_needed(cfg.fpr)} are needed (fpr * n_real must be >= 1)")


def _choose(cfg: CalibrationConfig, real: np.ndarray) -> tuple[ThresholdChoice, ThresholdChoice | None]:
    """The threshold at --fpr and, with --uncertain-fpr, the band's lower edge at that target (same reals)."""
    choice = fpr_threshold(real, cfg.fpr)
    if cfg.uncertain_fpr is None:
        return choice, None
    lower = fpr_threshold(real, cfg.uncertain_fpr)
    if lower.threshold >= choice.threshold:  # k no larger, or the reals between the two places are tied
        raise InputError(f"--uncertain-fpr {cfg.uncertain_fpr:g} gives the same threshold as --fpr {cfg.fpr:g} on "
                         f"{choice.n_real} scored reference reals (they allow {choice.allowed} and {lower.allowed} "
                         "false positives, and no real scores between the two boundaries): there is no band; "
                         "choose a larger --uncertain-fpr or add reals")
    return choice, lower


# ------------------------------------------------------------------------------------------------ record
def _rate(x: int, n: int) -> dict[str, Any]:
    low, high = clopper_pearson(x, n, CONFIDENCE)
    return {"value": x / n, "count": x, "n": n, "interval": [low, high], "method": "clopper-pearson",
            "confidence": CONFIDENCE}


def _map_and_ece(real: np.ndarray, ai: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from gcage_fast.evaluation.metrics import expected_calibration_error

    y = np.r_[np.zeros(real.size, dtype=np.int64), np.ones(ai.size, dtype=np.int64)]
    s = np.r_[real, ai]
    before = expected_calibration_error(y, s)
    if ai.size == 0:
        return ({"method": None, "applied": False,
                 "note": "reals only (no --ai): no calibration map; p_fake is unchanged"},
                {"before": before, "after": None, "bins": 10, "data": "the reference reals (in-sample)"})
    kx, ky = fit_isotonic(s, y)
    after = expected_calibration_error(y, np.clip(apply_isotonic(s, kx, ky), 0.0, 1.0))
    return ({"method": "isotonic", "applied": False, "note": MAP_NOTE, "input": "p_fake",
             "interpolation": "linear between knots, end values beyond them",
             "x": kx.tolist(), "y": ky.tolist()},
            {"before": before, "after": after, "bins": 10,
             "data": "the reference reals and AI images the map was fitted on (in-sample)"})


def _band(choice: ThresholdChoice, lower: ThresholdChoice | None, cfg: CalibrationConfig,
          got: dict[str, Any]) -> dict[str, Any] | None:
    """What the uncertain band does on the scored sets (None without one): its realised FPR (reals at or above its
    lower edge, that is uncertain or fake) and the shares of reals and AI images inside it."""
    from gcage_fast.scoring.aggregate import model_verdict

    if lower is None:
        return None
    real, ai = got["real"], got["ai"]

    def inside(scores: np.ndarray) -> int:
        return sum(model_verdict(float(v), choice.threshold, lower.threshold) == "uncertain" for v in scores)

    return {
        "target_fpr": cfg.uncertain_fpr,
        "uncertain_threshold": lower.threshold,
        "boundary_score": lower.boundary_score,
        "fpr": _rate(lower.n_false_positive, lower.n_real),
        "band": "uncertain_threshold <= p_fake < threshold",
        "real_in_band": _rate(inside(real), int(real.size)),
        "ai_in_band": None if ai.size == 0 else _rate(inside(ai), int(ai.size)),
    }


def _record(cfg: CalibrationConfig, source: Any, new_spec: Any, choice: ThresholdChoice,
            lower: ThresholdChoice | None, got: dict[str, Any]) -> dict[str, Any]:
    real, ai = got["real"], got["ai"]
    cal_map, ece = _map_and_ece(real, ai)
    unscanned = {k: dict(sorted(v.items())) for k, v in got["unscanned"].items()}
    return {
        "calibration_version": CALIBRATION_VERSION,
        "source_model": {"id": source.spec.model_id, "sha256": source.spec.sha256, "path": os.path.abspath(source.path),
                         "threshold": source.spec.threshold, "uncertain_threshold": source.spec.uncertain_threshold},
        "model": {"id": new_spec.model_id, "sha256": new_spec.sha256},
        "score": "p_fake (the model's score; verdict policy model-only)",
        "target_fpr": cfg.fpr,
        "threshold": choice.threshold,
        "threshold_rule": RULE,
        "boundary_score": choice.boundary_score,
        "fpr": _rate(choice.n_false_positive, choice.n_real),
        "tpr": None if ai.size == 0 else _rate(int((ai >= choice.threshold).sum()), int(ai.size)),
        "uncertain_threshold": None if lower is None else lower.threshold,
        "uncertain": _band(choice, lower, cfg, got),
        "n_real": int(real.size),
        "n_ai": int(ai.size),
        "n_unscanned": sum(sum(v.values()) for v in unscanned.values()),
        "unscanned": unscanned,
        "map": cal_map,
        "ece": ece,
        "backend": got["backend"],
        "reference": os.path.abspath(cfg.reference),
        "ai": None if cfg.ai is None else os.path.abspath(cfg.ai),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": cfg.command,
    }


# ------------------------------------------------------------------------------------------------ writing
def _new_spec(spec: Any, choice: ThresholdChoice, lower: ThresholdChoice | None, cfg: CalibrationConfig) -> Any:
    name = spec.name if spec.name.endswith(SUFFIX) else spec.name + SUFFIX
    band = "" if lower is None else f", uncertain from {lower.threshold:.6g} (FPR <= {cfg.uncertain_fpr:g})"
    note = (f"calibrated: threshold {choice.threshold:.6g} for FPR <= {cfg.fpr:g}{band} on {choice.n_real} "
            f"reference reals (calibration.json)")
    new = replace(spec, threshold=choice.threshold, uncertain_threshold=None if lower is None else lower.threshold,
                  name=name, description=f"{spec.description} | {note}" if spec.description else note)
    if spec.head is None:  # base-only: p_fake is the base detector's score, so its threshold moves too
        new = replace(new, base_threshold=new.threshold)
    new.validate("calibrated spec")
    return new


def _copy_verified(src_dir: Path, dst_dir: Path, name: str, expected: str) -> None:
    from gcage_fast.hashing import sha256_file

    data = (src_dir / name).read_bytes()
    atomic_write_bytes(dst_dir / name, data)
    actual = sha256_file(dst_dir / name)
    if actual != expected:
        raise ModelError(f"copied weights {dst_dir / name} do not match the source spec: sha256 {actual[:16]}… "
                         f"expected {expected[:16]}…; the source file changed or is corrupt")


def _write_model_dir(out: Path, source: Any, spec: Any, record: dict[str, Any]) -> None:
    """Build the directory beside ``out`` and rename it into place (an old one is removed only after)."""
    from gcage_fast.models.spec import write_spec

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for part in (source.spec.base, source.spec.head):
            if part is not None:
                _copy_verified(source.path, stage, part.weights, part.sha256)
        write_spec(stage, spec)
        atomic_write_json(stage / CALIBRATION_FILE, record)
        os.chmod(stage, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(stage, out)
        fsync_dir(out.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def calibrate(cfg: CalibrationConfig) -> dict[str, Any]:
    """Score the sets, choose the threshold (and the band's lower edge), write the model directory; returns the
    calibration.json record.

    Raises:
        ConfigError: --fpr outside (0, 0.5], --uncertain-fpr not in (fpr, 0.5], or another invalid option.
        InputError: an empty set, no scorable image in a set, too few reals for the target, or an
            --uncertain-fpr that gives the same threshold as --fpr (no band).
        OutputError: the output exists and is not empty (without ``overwrite``), or is not a model directory.
        GcageError: whatever loading the model or the scan raises.
    """
    from gcage_fast.models.registry import load_model

    cfg.validate()
    source = load_model(cfg.model)  # verifies the source weights' sha256
    out = _check_output(cfg, source.path)
    ref = _enumerate(cfg.reference, "reference")
    ai = _enumerate(cfg.ai, "AI") if cfg.ai else set()
    overlap = ref & ai
    if overlap:
        raise ConfigError(f"{len(overlap)} files are in both the reference set and the AI set; keep them apart")
    got = _scores(cfg, source.path, ref, ai)
    _check_scored(cfg, got)
    choice, lower = _choose(cfg, got["real"])
    spec = _new_spec(source.spec, choice, lower, cfg)
    record = _record(cfg, source, spec, choice, lower, got)
    _write_model_dir(out, source, spec, record)
    return record
