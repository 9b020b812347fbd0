"""``gcage-fast train-base``: train or fine-tune a base detector on patches chosen by the SuSy rule.

Defaults follow SuSy's recipe (Adam 1e-4, ReduceLROnPlateau ×0.1 after 4 epochs without a lower validation loss,
early stopping, cross-entropy over classes, horizontal flips) with CNNDetection-style blur/JPEG and T-FF-style
random grayscale as options. The head of the classes is chosen by the data: binary (authentic, synthetic), or one
class per named generator with ``--multiclass``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from gcage_fast.errors import ConfigError
from gcage_fast.fsutil import atomic_write_json
from gcage_fast.hashing import sha256_json
from gcage_fast.models.architectures import ARCHITECTURES, architecture
from gcage_fast.models.registry import create_base, load_model, write_model_dir
from gcage_fast.models.spec import BASE_ARCHS, CamSpec, ModelSpec
from gcage_fast.training.common import (TrainData, TrainOptions, batches, calibrate, load_splits, set_threads,
                                        val_metrics)
from gcage_fast.training.frozen import cached_features, fit_mlp, mlp_scores
from gcage_fast.training.loop import run_epochs

__all__ = ["BaseOptions", "train_base"]


@dataclass(frozen=True)
class BaseOptions:
    arch: str = "susy"
    width: int = 64
    hidden: int = 256
    pretrained: bool = False  # effnet-lite0: start from the ImageNet weights
    init: str | None = None  # fine-tune from this model (name or directory)
    multiclass: bool = False
    name: str = "base"
    monitor: str = "ap"
    freeze_trunk: bool = False  # train the MLP only, on the trunk's pooled features (see training.frozen)


def _class_names(multiclass: bool):
    def pick(ds) -> tuple[str, ...]:
        if multiclass and len(ds.generators) > 1:
            return ("authentic", *ds.generators)
        return ("authentic", "synthetic")
    return pick


def _build(opts: TrainOptions, bo: BaseOptions, n_classes: int) -> torch.nn.Module:
    if bo.arch not in BASE_ARCHS:
        raise ConfigError(f"unknown --arch {bo.arch!r}; choose {', '.join(BASE_ARCHS)}")
    torch.manual_seed(opts.seed)
    model = create_base(bo.arch, n_classes, bo.width, bo.hidden)
    if bo.init:
        source = load_model(bo.init).base
        state = source.state_dict()
        if state["mlp.fc3.weight"].shape[0] != n_classes:  # keep the trunk, start the last layer afresh
            state = {k: v for k, v in state.items() if not k.startswith("mlp.fc3.")}
            state.update({k: v for k, v in model.state_dict().items() if k.startswith("mlp.fc3.")})
        model.load_state_dict(state, strict=True)
    elif bo.pretrained:
        arch = architecture(bo.arch)
        if arch.pretrained is None:
            offline = ", ".join(a.name for a in ARCHITECTURES.values() if a.pretrained is not None)
            raise ConfigError(f"--pretrained exists only for --arch {offline} (no offline SuSy/ResNet weights)")
        arch.load_pretrained(model)
    return model


def train_base(opts: TrainOptions, bo: BaseOptions, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and write a base-only model directory into ``opts.out``; returns the training summary."""
    t0 = time.perf_counter()
    if bo.freeze_trunk and not (bo.pretrained or bo.init):
        raise ConfigError("--freeze-trunk keeps the trunk as it starts: give --pretrained or --init")
    say = log or (lambda _m: None)
    set_threads(opts.threads)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_splits(opts, _class_names(bo.multiclass), say)
    names = data.class_names
    model = _build(opts, bo, len(names))
    if bo.freeze_trunk:
        train_epoch, validate, predict_val = _frozen_steps(model, data, opts, say)
        optimizer = torch.optim.Adam(model.mlp.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        train_epoch = partial(train_epoch, optimizer)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
        train_epoch, validate, predict_val = _full_steps(model, data, opts, optimizer)
    fingerprint = sha256_json({"kind": "base", "opts": opts.fingerprint_dict(), "base": bo.__dict__,
                               "classes": names})
    loop = opts.loop_config(bo.monitor)
    summary = run_epochs(out, model, optimizer, train_epoch, validate, loop, fingerprint, opts.resume,
                         lambda r: say(r.describe()))
    threshold, bal = calibrate(data.val_cache, predict_val())
    spec = write_model_dir(
        out, name=bo.name, version="1", class_names=names, base=model, head=None, threshold=threshold,
        top_k=opts.top_k, cam=CamSpec(),
        description=f"base detector ({bo.arch}) trained by gcage-fast train-base on {opts.data_name}",
    )
    summary.update({"val_balanced_acc_at_threshold": bal, "threshold": threshold, "seconds": time.perf_counter() - t0,
                    "train_images": len(data.train), "val_images": len(data.val), "classes": list(names)})
    _write_summary(out, spec, opts, bo.__dict__, summary)
    return summary


def _frozen_steps(model: torch.nn.Module, data: TrainData, opts: TrainOptions, say: Callable[[str], None]):
    """Epoch, validation and prediction steps that train ``model.mlp`` on the frozen trunk's pooled features."""
    t0 = time.perf_counter()
    for p in model.feature_extractor.parameters():
        p.requires_grad_(False)
    x_train = cached_features(model, data.train_cache)
    x_val = cached_features(model, data.val_cache)
    say(f"features: {len(x_train) + len(x_val)} patches through the frozen trunk in {time.perf_counter() - t0:.0f} s")
    y_train = np.asarray(data.train_cache.classes, dtype=np.int64)
    y_val = np.asarray(data.val_cache.classes, dtype=np.int64)
    weights = data.train_weights if data.train_weights is not None else np.ones(len(y_train))

    def train_epoch(optimizer: torch.optim.Optimizer, epoch: int) -> float:
        return fit_mlp(model.mlp, x_train, y_train, weights, epoch=epoch, seed=opts.seed,
                       batch_size=opts.batch_size, optimizer=optimizer)

    def validate() -> dict[str, float]:
        scores, loss = mlp_scores(model.mlp, x_val, y_val)
        return val_metrics(data.val_cache, scores, loss)

    return train_epoch, validate, lambda: mlp_scores(model.mlp, x_val)[0]


def _full_steps(model: torch.nn.Module, data: TrainData, opts: TrainOptions, optimizer: torch.optim.Optimizer):
    """Epoch, validation and prediction steps that train the whole detector on (augmented) patches."""
    train_y = torch.from_numpy(np.asarray(data.train_cache.classes))
    aug = opts.augment if opts.views is None else None  # views are augmented already

    def train_epoch(epoch: int) -> float:
        total, n = 0.0, 0
        for x, idx in batches(data.train_cache, opts.batch_size, epoch, opts.seed, aug, shuffle=True,
                              weights=data.train_weights):
            logits = model.logits(torch.from_numpy(x))
            loss = F.cross_entropy(logits, train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            n += len(idx)
        return total / max(n, 1)

    def predict(cache) -> tuple[np.ndarray, float]:
        scores, loss, n = [], 0.0, 0
        y = torch.from_numpy(np.asarray(cache.classes))
        for x, idx in batches(cache, 64, 0, opts.seed, None, shuffle=False):
            logits = model.logits(torch.from_numpy(x))
            loss += float(F.cross_entropy(logits, y[idx], reduction="sum"))
            n += len(idx)
            scores.append(1.0 - torch.softmax(logits, dim=1)[:, 0].numpy())
        return np.concatenate(scores), loss / max(n, 1)

    def validate() -> dict[str, float]:
        scores, loss = predict(data.val_cache)
        return val_metrics(data.val_cache, scores, loss)

    def predict_val() -> np.ndarray:
        with torch.no_grad():
            return predict(data.val_cache)[0]

    return train_epoch, validate, predict_val


def _write_summary(out: Path, spec: ModelSpec, opts: TrainOptions, extra: dict[str, Any],
                   summary: dict[str, Any]) -> None:
    atomic_write_json(out / "training.json", {
        "model_id": spec.model_id, "model_sha256": spec.sha256, "options": opts.fingerprint_dict(), "arch": extra,
        "summary": {k: v for k, v in summary.items() if k != "history"}, "torch": torch.__version__,
    })
