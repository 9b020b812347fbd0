"""One input's row: its plan entry, what its decode worker found, and its score (output/schema.py has the columns).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gcage_fast.evidence.policy import fuse
from gcage_fast.ingest.prepare import Prepared
from gcage_fast.ingest.sources import display_path
from gcage_fast.output.outdir import PlanEntry
from gcage_fast.scanning.context import RunContext
from gcage_fast.scanning.locator import locate
from gcage_fast.scoring.base import ImageScore

__all__ = ["build_row"]


def _evidence(ctx: RunContext, prep: Prepared) -> list[dict[str, Any]] | None:
    """The evidence list: null where nothing was read (evidence off, the bytes never reached a worker, or their
    content was known: --skip-known)."""
    if not ctx.config.evidence or prep.sha256 is None or prep.known is not None:
        return None
    return [e.as_row() for e in prep.evidence]


def build_row(ctx: RunContext, shard: int, entry: PlanEntry, prep: Prepared,
              score: ImageScore | None, heatmap_path: str | None = None) -> dict[str, Any]:
    """The row of ``entry``; the score columns stay empty without a score (the input was not scored).
    ``heatmap_path``: the overlay written for it, relative to the output directory. The kept columns of a table's
    row (``entry.carried``) come last, under their own names."""
    member = entry.member_bytes
    where, root, relpath = locate(entry.path_bytes, member, ctx.config.inputs)
    row: dict[str, Any] = {
        "input_id": entry.input_id,
        "path": entry.path,
        "path_bytes": entry.path_bytes,
        "member": None if member is None else display_path(member),
        "member_bytes": member,
        "member_index": entry.member_index,
        "locator": where,
        "input_root": root,
        "relpath": relpath,
        "sidecar": entry.sidecar,
        "size_bytes": prep.size_bytes,
        "sha256": prep.sha256,
        "format": prep.format,
        "width": prep.width,
        "height": prep.height,
        "mode": prep.mode,
        "n_frames": prep.n_frames,
        "frames_scanned": prep.frames_scanned if prep.status == "ok" else 0 if prep.n_frames else None,
        "status": prep.status,
        "error_code": prep.error_code,
        "error_detail": prep.error_detail,
        "known": prep.known,
        "flags": list(entry.flags) + prep.flags,
        "trailing_bytes": prep.trailing_bytes,
        "exif_orientation": prep.exif_orientation,
        "evidence": _evidence(ctx, prep),
        "c2pa": None if prep.c2pa is None else prep.c2pa.as_row(),
        "n_patches_total": prep.n_patches_total,
        "n_patches_scanned": None,
        "padded": prep.padded,
        "model_id": ctx.model_id,
        "model_sha256": ctx.model_sha256,
        "backend": ctx.backend,
        "cam_method": ctx.cam_method,
        "cam_target": ctx.cam_target,
        "run_id": ctx.run_id,
        "shard": shard,
        "scanned_at": datetime.now(timezone.utc),
        **(entry.carried or {}),
    }
    if score is not None:
        verdict, source = fuse(prep.evidence, score.verdict, ctx.config.verdict_policy)
        row.update({
            "n_patches_scanned": len(score.patch_p_fake),
            "p_fake": score.p_fake,
            "verdict": verdict,
            "verdict_source": source,
            "threshold": ctx.threshold,
            "base_p_fake": score.base_p_fake,
            "base_probs": score.base_probs.tolist(),
            "base_class_probs": (list(zip(ctx.class_names, score.base_probs.tolist()))
                                 if len(ctx.class_names) == len(score.base_probs) else None),
            "attribution": score.attribution,
            "heatmap_path": heatmap_path,
            "patches": [
                {"x": int(x), "y": int(y), "contrast": float(c), "p_fake": float(p), "probs": pr.tolist(),
                 "cam": cam.tolist()}
                for (x, y), c, p, pr, cam in zip(prep.boxes, prep.contrast, score.patch_p_fake, score.patch_probs,
                                                score.patch_cams)
            ],
        })
    return row
