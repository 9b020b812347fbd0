"""A synthetic scan output of any size (seeded): rows that follow the output schema, committed shards, run.json,
and optionally heatmap overlays for the most suspicious rows. For report tests and the report benchmark, where
scanning a million real files would take hours."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gcage_fast.hashing import sha256_file
from gcage_fast.output.outdir import OutputDir
from gcage_fast.output.schema import ROW_SCHEMA
from genimages import photo_like

ERROR_CODES = ["decode.truncated", "decode.unidentified", "limit.pixels", "fs.permission"]


def synthetic_output(out: Path, rows: int, shard_size: int = 2000, seed: int = 0, heatmaps_for_top: int = 0,
                     heatmap_size: tuple[int, int] = (1024, 768)) -> Path:
    rng = np.random.default_rng(seed)
    ev_rng = np.random.default_rng(seed + 1)
    od = OutputDir(out)
    for d in (od.results_dir, od.commits_dir, od.plan_dir):
        d.mkdir(parents=True, exist_ok=True)
    n_shards = -(-rows // shard_size)
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    all_pf = []
    all_ids = []
    for shard in range(n_shards):
        n = min(shard_size, rows - shard * shard_size)
        idx = np.arange(shard * shard_size, shard * shard_size + n)
        ids = [hashlib.sha256(b"input%d" % i).hexdigest() for i in idx]
        paths = [f"/data/uploads/{i % 97:02d}/img{i:07d}.jpg" for i in idx]
        kind = rng.random(n)
        status = np.where(kind < 0.02, "error", np.where(kind < 0.03, "skipped", "ok"))
        ok = status == "ok"
        p_fake = np.where(ok, rng.beta(0.6, 2.0, n), np.nan)
        base = np.where(ok, np.clip(p_fake + rng.normal(0, 0.05, n), 0, 1), np.nan)
        codes = np.where(ok, None, np.array(ERROR_CODES, dtype=object)[rng.integers(0, len(ERROR_CODES), n)])
        codes = np.where(status == "skipped", "decode.format_not_allowed", codes)
        k = 3
        patches = []
        for j in range(n):
            if not ok[j]:
                patches.append(None)
                continue
            cams = rng.integers(0, 256, (k, 49), dtype=np.uint8)
            patches.append([{"x": 224 * m, "y": 0, "contrast": 100.0 + m, "p_fake": float(p_fake[j]),
                             "probs": [float(1 - base[j]), float(base[j])], "cam": cams[m].tolist()}
                            for m in range(k)])
        # provenance on about 1 % of the rows (its own generator, so the other columns stay as they were)
        declared = ev_rng.random(n) < 0.01
        evidence = [[{"kind": "metadata", "claim": "ai_generated", "generator": "ComfyUI",
                      "detail": "png:prompt: {...}", "strength": "declared"}] if d else [] for d in declared]
        verdicts = [("fake" if v >= 0.5 or d else "real") if o else None for v, o, d in zip(p_fake, ok, declared)]
        sources = [("metadata" if d else "model") if o else None for o, d in zip(ok, declared)]
        cols = {
            "input_id": ids, "path": paths, "path_bytes": [p.encode() for p in paths], "member": [None] * n,
            "member_bytes": [None] * n, "member_index": [None] * n, "locator": paths,
            "input_root": ["/data/uploads"] * n, "relpath": [p.removeprefix("/data/uploads/") for p in paths],
            "size_bytes": rng.integers(10_000, 5_000_000, n).tolist(), "sha256": ids,
            "format": ["JPEG"] * n, "width": [1024] * n, "height": [768] * n, "mode": ["RGB"] * n,
            "n_frames": [1] * n, "frames_scanned": [1] * n, "status": status.tolist(),
            "error_code": codes.tolist(), "error_detail": [None if c is None else f"synthetic {c}" for c in codes],
            "known": [None] * n, "sidecar": [None] * n,
            "flags": [["trailing.bytes"] if r < 0.001 else [] for r in rng.random(n)],
            "trailing_bytes": [None] * n, "exif_orientation": [1] * n, "evidence": evidence, "c2pa": [None] * n,
            "n_patches_total": [12] * n,
            "n_patches_scanned": [k if o else None for o in ok], "padded": [False] * n,
            "p_fake": [float(v) if o else None for v, o in zip(p_fake, ok)],
            "verdict": verdicts, "verdict_source": sources,
            "threshold": [0.5 if o else None for o in ok],
            "base_p_fake": [float(v) if o else None for v, o in zip(base, ok)],
            "base_probs": [[float(1 - v), float(v)] if o else None for v, o in zip(base, ok)],
            "base_class_probs": [[("authentic", float(1 - v)), ("synthetic", float(v))] if o else None
                                 for v, o in zip(base, ok)],
            "heatmap_path": [None] * n,
            "attribution": [("synthetic" if v >= 0.5 else "authentic") if o else None for v, o in zip(base, ok)],
            "patches": patches, "model_id": ["synthetic@1"] * n, "model_sha256": ["0" * 64] * n,
            "backend": ["ort:CPUExecutionProvider"] * n, "cam_method": ["gradcam"] * n, "cam_target": ["fake"] * n,
            "run_id": ["synthetic"] * n, "shard": [shard] * n, "scanned_at": [now] * n,
        }
        table = pa.Table.from_pydict(cols, schema=ROW_SCHEMA)
        pq.write_table(table, od.part_path(shard))
        od.commit_path(shard).write_text(json.dumps({"shard": shard, "rows": n, "run_id": "synthetic",
                                                     "part": f"results/shard-{shard:05d}.parquet",
                                                     "sha256": sha256_file(od.part_path(shard))}))
        all_pf.append(np.where(ok, p_fake, -1.0))
        all_ids += ids
    run = {
        "run_id": "synthetic", "state": "finished", "attempts": 1, "schema_version": 4,
        "started_at": "2026-11-01T00:00:00+00:00", "finished_at": "2026-11-01T01:00:00+00:00",
        "plan": {"n_inputs": rows, "n_shards": n_shards, "shard_size": shard_size},
        "model": {"id": "synthetic@1", "sha256": "0" * 64, "class_names": ["authentic", "synthetic"]},
        "engine": {"backend": "ort:CPUExecutionProvider"},
        "fingerprint": {"cam_method": "gradcam", "threshold": 0.5},
        "last_attempt": {"processed": rows, "patches": rows * 3, "scan_s": rows / 40.0, "wall_s": rows / 39.0},
        "versions": {"gcage_fast": "test"},
    }
    od.run_json.write_text(json.dumps(run))
    shards = [{"shard": k, "rows": min(shard_size, rows - k * shard_size), "sha256": ""} for k in range(n_shards)]
    (od.plan_dir / "plan.json").write_text(json.dumps({"schema_version": 4, "n_inputs": rows, "shard_size": shard_size,
                                                       "n_shards": n_shards, "shards": shards}))
    if heatmaps_for_top:
        from PIL import Image

        pf = np.concatenate(all_pf)
        for r, i in enumerate(np.argsort(-pf)[:heatmaps_for_top]):
            path = od.heatmap_path(all_ids[i])
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo_like(*heatmap_size, seed=r)).save(path, "PNG")
    return out
