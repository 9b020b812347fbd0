"""A frozen trunk: its pooled features are computed once per patch, and only the MLP of the base detector trains.

With an ImageNet-initialised trunk this is a linear-probe-style detector (the trunk's low- and mid-level filters
stay as ImageNet made them, so they cannot latch onto a few hundred images' quirks), and it makes training and
leave-one-source-out validation affordable on a CPU: one forward pass per patch, then seconds per model.

The MLP sees exactly what the scan's graph computes: ``mlp(gap(trunk(x)))`` with the trunk unchanged, so the
trained weights are a complete base detector (trunk + MLP) for export, CAMs and scans.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["pooled_features", "cached_features", "trunk_digest", "fit_mlp", "mlp_scores", "balanced_weights"]


def pooled_features(model: nn.Module, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, C) float32: the trunk's globally pooled features of (N, 224, 224, 3) uint8 patches (pixels /255)."""
    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(patches), batch_size):
            pix = np.asarray(patches[start:start + batch_size])
            x = torch.from_numpy(np.ascontiguousarray(pix.transpose(0, 3, 1, 2))).float().div_(255.0)
            out.append(model.feature_extractor(x).numpy())
    return np.concatenate(out)


def trunk_digest(model: nn.Module) -> str:
    """sha256 of the trunk's weights (names and bytes, in order): the key of its cached features."""
    h = hashlib.sha256()
    for name, value in model.feature_extractor.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_features(model: nn.Module, cache) -> np.ndarray:
    """:func:`pooled_features` of every patch of ``cache``; for a per-image :class:`ViewCache` each image's features
    are kept beside its patches (``<store>-f<trunk>/<sha256>.npy``) and computed only once per trunk."""
    if getattr(cache, "store", None) is None:
        if not len(cache):  # grid-patch cache (no --views): its exact grid patches, not cached
            return np.zeros((0, 0), np.float32)
        return pooled_features(model, np.stack([cache.patch(i) for i in range(len(cache))]))
    folder = cache.store.with_name(f"{cache.store.name}-f{trunk_digest(model)[:16]}")
    folder.mkdir(parents=True, exist_ok=True)
    images = np.asarray(cache.image)
    starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]]) if len(images) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(images)]
    todo = [(a, b) for a, b in zip(starts, ends) if not (folder / f"{cache.digests[images[a]]}.npy").is_file()]
    patches = cache.patches
    for a, b in todo:  # one batch per image: its features do not depend on which other images are missing
        tmp = folder / f"{cache.digests[images[a]]}.tmp.npy"
        np.save(tmp, pooled_features(model, patches[a:b]))
        os.replace(tmp, folder / f"{cache.digests[images[a]]}.npy")
    parts = [np.load(folder / f"{cache.digests[images[a]]}.npy") for a in starts]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def balanced_weights(labels: np.ndarray, groups: list[list[str | None]]) -> np.ndarray:
    """Per-sample weights, mean 1: the two classes weigh the same, within a class each value of ``groups[0]``
    (e.g. the source) weighs the same, within that each value of ``groups[1]`` (e.g. the generator), and so on."""
    n = len(labels)
    levels = [[f"c{int(v)}" for v in labels]] + [[str(g) for g in level] for level in groups]
    w = np.ones(n, dtype=np.float64)
    parent = [""] * n
    for level in levels:  # each level splits its parent's weight evenly among the parent's children
        child = [p + "\x00" + v for p, v in zip(parent, level)]
        kids: dict[str, set[str]] = {}
        for p, c in zip(parent, child):
            kids.setdefault(p, set()).add(c)
        w /= np.array([len(kids[p]) for p in parent], dtype=np.float64)
        parent = child
    counts = Counter(parent)
    w /= np.array([counts[c] for c in parent], dtype=np.float64)
    return w * (n / w.sum())


def fit_mlp(mlp: nn.Module, x: np.ndarray, y: np.ndarray, weights: np.ndarray, *, epoch: int, seed: int,
            batch_size: int, optimizer: torch.optim.Optimizer) -> float:
    """One epoch of weighted cross-entropy on pooled features (shuffled by ``(seed, epoch)``); the mean loss."""
    order = np.random.default_rng([seed, epoch]).permutation(len(y))
    xt, yt, wt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(weights.astype(np.float32))
    total = 0.0
    mlp.train()
    for start in range(0, len(order), batch_size):
        idx = torch.from_numpy(order[start:start + batch_size])
        loss = (F.cross_entropy(mlp(xt[idx]), yt[idx], reduction="none") * wt[idx]).sum() / wt[idx].sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(idx)
    return total / max(len(y), 1)


def mlp_scores(mlp: nn.Module, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """P(synthetic) = 1 - P(authentic) per row of pooled features, and the mean cross-entropy when ``y`` is given."""
    mlp.eval()
    with torch.no_grad():
        logits = mlp(torch.from_numpy(x))
        loss = float(F.cross_entropy(logits, torch.from_numpy(y))) if y is not None and len(y) else float("nan")
        return 1.0 - torch.softmax(logits, dim=1)[:, 0].numpy(), loss
