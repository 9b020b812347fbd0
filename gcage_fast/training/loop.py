"""The epoch loop shared by ``train-base`` and ``train-head``: validation, plateau schedule, early stopping, the
best epoch kept by a validation metric, a CSV log (and TensorBoard when installed), and checkpoints after every
epoch (safetensors + JSON, written temp-then-rename) so an interrupted run resumes where it stopped.

Determinism: every random choice of an epoch derives from (seed, epoch), so a resumed run takes the same path
as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gcage_fast.errors import ConfigError
from gcage_fast.fsutil import atomic_write_json
from gcage_fast.log import logger
from gcage_fast.models.weights import alias_map, canonical_state_dict, load_weights, save_weights

__all__ = ["LoopConfig", "EpochResult", "run_epochs"]

LOG_FIELDS = ("epoch", "train_loss", "val_loss", "val_ap", "val_acc", "lr", "seconds", "best")


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 30
    min_epochs: int = 1
    patience: int = 5  # early stopping: epochs without a new best (see run_epochs)
    min_delta: float = 0.0
    monitor: str = "ap"  # ap | acc (higher is better)
    plateau_patience: int = 4
    plateau_factor: float = 0.1
    seed: int = 0


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    val: dict[str, float]
    lr: float
    seconds: float
    best: bool

    def describe(self) -> str:
        """One progress line for the epoch."""
        return (f"epoch {self.epoch}: train loss {self.train_loss:.4f}, val loss {self.val['loss']:.4f}, "
                f"val AP {self.val['ap']:.4f}, val acc {self.val['acc']:.4f}, lr {self.lr:.1e}, "
                f"{self.seconds:.0f} s" + (" (best)" if self.best else ""))


@dataclass
class _State:
    next_epoch: int = 0
    best_score: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _save_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau, state: _State, fingerprint: str) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in canonical_state_dict(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for name, value in st.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tmp = ckpt / "last.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, ckpt / "last.safetensors")
    atomic_write_json(ckpt / "last.json", {
        "fingerprint": fingerprint,
        "state": state.__dict__,
        "param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
    })


def _load_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau, fingerprint: str) -> _State:
    from safetensors.torch import load_file

    meta = json.loads((ckpt / "last.json").read_text())
    if meta["fingerprint"] != fingerprint:
        raise ConfigError(f"cannot resume from {ckpt}: it was started with other data or settings "
                          "(start again without --resume, or into another output directory)")
    tensors = load_file(str(ckpt / "last.safetensors"))
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for alias, canonical in alias_map(model).items():
        model_sd[alias] = model_sd[canonical]
    model.load_state_dict(model_sd, strict=True)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    return _State(**meta["state"])


def run_epochs(
    out: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_epoch: Callable[[int], float],
    validate: Callable[[], dict[str, float]],
    cfg: LoopConfig,
    fingerprint: str,
    resume: bool = False,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> dict[str, Any]:
    """Train until ``cfg.epochs`` or early stopping; leaves ``model`` holding the best epoch's weights.

    ``train_epoch(epoch)`` returns the mean training loss; ``validate()`` returns at least ``loss``, ``ap`` and
    ``acc``. Files in ``out``: ``train_log.csv``, ``checkpoints/{last,best}.*``, ``tb/`` (with tensorboard).
    """
    if cfg.monitor not in ("ap", "acc"):
        raise ConfigError(f"unknown monitor {cfg.monitor!r}; choose ap or acc")
    ckpt = out / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
    log_path = out / "train_log.csv"
    if resume and (ckpt / "last.json").is_file():
        st = _load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint)
        logger.info("resuming from epoch %d (best %s %.4f at epoch %d)", st.next_epoch, cfg.monitor,
                    st.best_score, st.best_epoch)
    else:
        st = _State()
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(LOG_FIELDS)
    writer = _tensorboard(out / "tb")
    try:
        for epoch in range(st.next_epoch, cfg.epochs):
            if st.bad_epochs >= cfg.patience and epoch >= cfg.min_epochs:
                break
            t0 = time.perf_counter()
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            model.train()
            train_loss = float(train_epoch(epoch))
            model.eval()
            with torch.no_grad():
                val = validate()
            scheduler.step(val["loss"])
            score = val[cfg.monitor]
            # A gain in the monitored metric wins; at an equal metric (AP saturates at 1.0 on easy data) a lower
            # validation loss does.
            best = (st.best_epoch < 0 or score > st.best_score + cfg.min_delta
                    or (score >= st.best_score and val["loss"] < st.best_loss))
            if best:
                st.best_score, st.best_loss, st.best_epoch, st.bad_epochs = score, val["loss"], epoch, 0
                save_weights(model, ckpt / "best.safetensors.tmp")
                os.replace(ckpt / "best.safetensors.tmp", ckpt / "best.safetensors")
            else:
                st.bad_epochs += 1
            lr = optimizer.param_groups[0]["lr"]
            result = EpochResult(epoch, train_loss, val, lr, time.perf_counter() - t0, best)
            row = {"epoch": epoch, "train_loss": round(train_loss, 6), "val_loss": round(val["loss"], 6),
                   "val_ap": round(val["ap"], 6), "val_acc": round(val["acc"], 6), "lr": lr,
                   "seconds": round(result.seconds, 1), "best": int(best)}
            st.history.append(row)
            with open(log_path, "a", newline="") as fh:
                csv.writer(fh).writerow([row[f] for f in LOG_FIELDS])
            if writer is not None:
                for key in ("train_loss", "val_loss", "val_ap", "val_acc", "lr"):
                    writer.add_scalar(key, row[key], epoch)
            st.next_epoch = epoch + 1
            _save_checkpoint(ckpt, model, optimizer, scheduler, st, fingerprint)
            if on_epoch is not None:
                on_epoch(result)
    finally:
        if writer is not None:
            writer.close()
    if st.best_epoch < 0:
        raise ConfigError("no epoch was trained (--epochs 0?)")
    load_weights(model, ckpt / "best.safetensors")
    model.eval()
    return {"best_epoch": st.best_epoch, f"best_val_{cfg.monitor}": st.best_score, "epochs_run": st.next_epoch,
            "history": st.history}


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))
