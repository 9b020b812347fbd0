"""``gcage-fast train-head``: train the G-CAGE head on the 4-channel inputs a scan would build.

Each training patch goes through the base model's graph (the same ONNX graph and runner the scan uses, or the
torch runner without onnxruntime) to get its CAM, and through the scan's own fused step (``kernels/cpu.py``) to get
the head input. Heatmaps are computed on the fly rather than cached: the base pass is cheap next to the epoch
(one forward per patch, no backward), and on-the-fly CAMs always match the augmented pixels (a flipped, shifted,
blurred or recompressed patch gets its own heatmap), so the head trains on exactly what it will see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gcage_fast.engine.base import infer_chunked
from gcage_fast.engine.factory import create_runners
from gcage_fast.export.to_onnx import ExportOptions
from gcage_fast.hashing import sha256_json
from gcage_fast.kernels.cpu import fuse_cam_from_patches
from gcage_fast.models.head import GCageHead
from gcage_fast.models.registry import load_model, write_model_dir
from gcage_fast.models.spec import CamSpec
from gcage_fast.training.base import _write_summary
from gcage_fast.training.common import TrainOptions, batches, calibrate, load_splits, set_threads, val_metrics
from gcage_fast.training.loop import run_epochs

__all__ = ["HeadOptions", "train_head"]


@dataclass(frozen=True)
class HeadOptions:
    base: str  # model name or directory holding the trained base detector
    widths: tuple[int, ...] = (16, 32, 64, 128)
    cam: str | None = None
    cam_target: str | None = None
    backend: str = "auto"
    name: str = "gcage"


def train_head(opts: TrainOptions, ho: HeadOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a head for ``ho.base`` and write a complete G-CAGE model directory into ``opts.out``."""
    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    set_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    base = load_model(ho.base)
    options = ExportOptions.for_model(base, ho.cam, ho.cam_target)
    pair = create_runners(base, options, ho.backend, "cpu", opts.threads)
    data = load_splits(opts, None, say)
    torch.manual_seed(opts.seed)
    head = GCageHead(widths=ho.widths)
    optimizer = torch.optim.Adam(head.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    train_y = torch.from_numpy(np.asarray(data.train_cache.labels)).float()

    with pair.base as runner:
        def head_input(x: np.ndarray) -> torch.Tensor:
            cams = infer_chunked(runner, x, 64)["cam"]
            return torch.from_numpy(fuse_cam_from_patches(x, cams))

        val_inputs = [(head_input(x), idx) for x, idx in batches(data.val_cache, 64, 0, opts.seed, None, False)]
        val_y = torch.from_numpy(np.asarray(data.val_cache.labels)).float()

        # Views are fixed patches: their CAMs are computed once. Grid patches are augmented anew every epoch, so
        # each augmented patch gets its own CAM.
        fixed_cams = None
        if opts.views is not None:
            t_cam = time.perf_counter()
            fixed_cams = np.concatenate([infer_chunked(runner, x, 64)["cam"] for x, _ in
                                         batches(data.train_cache, 64, 0, opts.seed, None, False)])
            say(f"CAMs of {len(fixed_cams)} training views in {time.perf_counter() - t_cam:.0f} s")

        def train_input(x: np.ndarray, idx: np.ndarray) -> torch.Tensor:
            if fixed_cams is None:
                return head_input(x)
            return torch.from_numpy(fuse_cam_from_patches(x, fixed_cams[idx]))

        aug = opts.augment if opts.views is None else None

        def train_epoch(epoch: int) -> float:
            total, n = 0.0, 0
            for x, idx in batches(data.train_cache, opts.batch_size, epoch, opts.seed, aug, shuffle=True,
                                  weights=data.train_weights):
                loss = F.binary_cross_entropy_with_logits(head(train_input(x, idx)), train_y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                n += len(idx)
            return total / max(n, 1)

        def predict() -> tuple[np.ndarray, float]:
            scores, loss = [], 0.0
            for inp, idx in val_inputs:
                logits = head(inp)
                loss += float(F.binary_cross_entropy_with_logits(logits, val_y[idx], reduction="sum"))
                scores.append(torch.sigmoid(logits).numpy())
            return np.concatenate(scores), loss / max(len(data.val_cache), 1)

        def validate() -> dict[str, float]:
            scores, loss = predict()
            return val_metrics(data.val_cache, scores, loss)


        fingerprint = sha256_json({"kind": "head", "opts": opts.fingerprint_dict(), "head": ho.__dict__,
                                   "base_sha256": base.spec.sha256, "cam": options.__dict__})
        loop = opts.loop_config("ap")
        summary = run_epochs(out, head, optimizer, train_epoch, validate, loop, fingerprint, opts.resume,
                             lambda r: say(r.describe()))
        with torch.no_grad():
            scores, _ = predict()
    threshold, bal = calibrate(data.val_cache, scores)
    spec = write_model_dir(
        out, name=ho.name, version="1", class_names=base.spec.class_names, base=base.base, head=head,
        threshold=threshold, base_threshold=base.spec.base_threshold, top_k=opts.top_k,
        cam=CamSpec(options.cam_method, options.cam_target, options.cam_layer),
        description=f"G-CAGE: base {base.spec.model_id} + head trained by gcage-fast train-head on "
                    f"{opts.data_name}",
    )
    summary.update({"val_balanced_acc_at_threshold": bal, "threshold": threshold, "seconds": time.perf_counter() - t0,
                    "train_images": len(data.train), "val_images": len(data.val), "base": base.spec.model_id})
    _write_summary(out, spec, opts, {"head": ho.__dict__}, summary)
    return summary
