"""Pieces shared by the two training commands: options, data preparation, batching, validation metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcage_fast.config import BALANCES, HOLD_OUT_KEYS, default_workers
from gcage_fast.evaluation.datasets import LabelledImage, LabelledSet, load_labelled, load_pool, split_of
from gcage_fast.fsutil import atomic_write_bytes
from gcage_fast.errors import ConfigError
from gcage_fast.evaluation.metrics import MetricError, average_precision, best_balanced_threshold
from gcage_fast.training.data import Augment, PatchCache, augment_patch
from gcage_fast.training.frozen import balanced_weights
from gcage_fast.training.views import ViewCache, ViewRecipe
from gcage_fast.training.loop import LoopConfig

__all__ = ["TrainData", "TrainOptions", "load_splits", "held_out", "group_of", "patch_weights", "write_split", "batches", "image_scores",
           "calibrate"]


@dataclass(frozen=True)
class TrainOptions:
    """Options common to train-base and train-head (defaults follow SuSy's recipe where it has one)."""

    data: tuple[str, ...]  # one or more labelled sets (pooled: see load_pool)
    out: str
    manifest: str | None = None
    seed: int = 0
    epochs: int = 30
    min_epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    patience: int = 5
    min_delta: float = 0.0
    plateau_patience: int = 4
    top_k: int = 5
    margin: int = 16
    augment: Augment = field(default_factory=Augment)
    workers: int | None = None
    threads: int | None = None
    max_images: int | None = None  # per split, for quick runs
    resume: bool = False
    views: ViewRecipe | None = None  # the shortcut-free view protocol (None: grid patches + ``augment``)
    balance: str = "none"  # none | source | source-generator: sampling weights (see balanced_weights)
    hold_out: tuple[str, ...] = ()  # sources (or generators) left out of training and validation
    hold_out_by: str = "source"  # what --hold-out names: a source or a generator (HOLD_OUT_KEYS)
    grid: str = "floor"  # grid of the validation patches (the scan's ``--grid``)
    cache_dir: str | None = None  # patch/view/feature cache (default OUT/cache; crossval shares one across folds)

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            object.__setattr__(self, "data", (self.data,))
        if self.balance not in BALANCES:
            raise ConfigError(f"unknown balance {self.balance!r}; choose {', '.join(BALANCES)}")
        if self.hold_out_by not in HOLD_OUT_KEYS:
            raise ConfigError(f"unknown hold-out key {self.hold_out_by!r}; choose {', '.join(HOLD_OUT_KEYS)}")

    @property
    def data_name(self) -> str:
        """The dataset folder names, for descriptions."""
        return "+".join(Path(d).name for d in self.data)

    def loop_config(self, monitor: str) -> LoopConfig:
        return LoopConfig(self.epochs, self.min_epochs, self.patience, self.min_delta, monitor,
                          self.plateau_patience, seed=self.seed)

    def fingerprint_dict(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (the epoch budget may grow)."""
        d = asdict(self)
        for key in ("resume", "workers", "threads", "epochs", "cache_dir"):
            d.pop(key)
        return d


@dataclass
class TrainData:
    dataset: LabelledSet
    train: list[LabelledImage]
    val: list[LabelledImage]
    train_cache: PatchCache | ViewCache
    val_cache: PatchCache | ViewCache
    class_names: tuple[str, ...]
    train_weights: np.ndarray | None = None  # per training patch (None: unweighted)


def _limit(items: list[LabelledImage], n: int | None, seed: int) -> list[LabelledImage]:
    """A class-balanced, seeded subset of at most ``n`` items (all when ``n`` is None)."""
    if n is None or len(items) <= n:
        return items
    rng = np.random.default_rng(seed)
    fakes = [i for i in items if i.label == 1]
    reals = [i for i in items if i.label == 0]
    take_f = min(len(fakes), n // 2)
    take_r = min(len(reals), n - take_f)
    take_f = min(len(fakes), n - take_r)  # give the rest to fakes when reals run short
    pick = [fakes[j] for j in sorted(rng.choice(len(fakes), take_f, replace=False))]
    pick += [reals[j] for j in sorted(rng.choice(len(reals), take_r, replace=False))]
    return sorted(pick, key=lambda i: i.relpath)


def load_splits(opts: TrainOptions, class_names: Callable[[LabelledSet], tuple[str, ...]] | None = None,
                log: Callable[[str], None] | None = None) -> TrainData:
    """Train and val splits of the dataset (by content hash) with their patch caches."""
    if opts.manifest is not None and len(opts.data) > 1:
        raise ConfigError("--manifest names the files of one dataset; give one DATA with it")
    ds = load_labelled(opts.data[0], opts.manifest) if opts.manifest else load_pool(opts.data)
    kept = held_out(ds, opts.hold_out, opts.hold_out_by)
    train = _limit([i for i in kept if split_of(i.digest()) == "train"], opts.max_images, opts.seed)
    val = _limit([i for i in kept if split_of(i.digest()) == "val"], opts.max_images, opts.seed + 1)
    for name, items in (("train", train), ("val", val)):
        n_fake = sum(i.label for i in items)
        if n_fake in (0, len(items)):
            raise ConfigError(f"the {name} split of {opts.data_name} needs real and fake images "
                              f"(got {len(items) - n_fake} real, {n_fake} fake)")
    names = class_names(ds) if class_names else ("authentic", "synthetic")

    def class_of(item: LabelledImage) -> int:
        if item.label == 0:
            return 0
        if len(names) > 2 and item.generator in names:
            return names.index(item.generator)
        return 1

    workers = default_workers() if opts.workers is None else opts.workers
    cache_dir = Path(opts.cache_dir) if opts.cache_dir else Path(opts.out) / "cache"
    t0 = time.perf_counter()
    caches: list[PatchCache | ViewCache]
    if opts.views is None:
        caches = [PatchCache.build(items, [class_of(i) for i in items], cache_dir, top_k=opts.top_k,
                                   margin=opts.margin, workers=workers) for items in (train, val)]
    else:
        caches = [ViewCache.build(items, [class_of(i) for i in items], cache_dir, recipe=recipe,
                                  top_k=opts.top_k, grid=opts.grid, seed=opts.seed, workers=workers)
                  for items, recipe in ((train, opts.views), (val, None))]
    write_split(ds, Path(opts.out) / "split.csv")
    if log:
        log(f"data: {len(train)} train images ({len(caches[0])} patches), {len(val)} val images "
            f"({len(caches[1])} patches), prepared in {time.perf_counter() - t0:.1f} s")
    return TrainData(ds, train, val, caches[0], caches[1], names,
                     patch_weights(caches[0], train, opts.balance))


def held_out(ds: LabelledSet, hold_out: tuple[str, ...], by: str = "source") -> list[LabelledImage]:
    """The items whose source (``by="source"``) or generator (``by="generator"``) is not held out; every name
    must be one of the set's."""
    if not hold_out:
        return ds.items
    values = {group_of(i, by) for i in ds.items} - {None}
    unknown = [h for h in hold_out if h not in values]
    if unknown:
        raise ConfigError(f"--hold-out {unknown[0]!r} is not a {by} of {ds.root} "
                          f"({by}s: {', '.join(sorted(str(s) for s in values))})")
    return [i for i in ds.items if group_of(i, by) not in hold_out]


def group_of(item: LabelledImage, by: str) -> str | None:
    """The item's source, or for ``by="generator"`` its generator (None for real images)."""
    if by == "generator":
        return item.generator if item.label == 1 else None
    return item.source


def patch_weights(cache: PatchCache | ViewCache, items: list[LabelledImage], balance: str) -> np.ndarray | None:
    """Per-patch sampling weights of ``balance`` (None for ``none``)."""
    if balance == "none":
        return None
    levels = [[items[i].source for i in cache.image]]
    if balance == "source-generator":
        levels.append([items[i].generator for i in cache.image])
    return balanced_weights(np.asarray(cache.labels), levels)


def write_split(ds: LabelledSet, path: Path) -> None:
    """Record the split of every file of the dataset as ``sha256,split`` lines (ids only, no paths or pixels)."""
    rows = sorted({(i.digest(), split_of(i.digest())) for i in ds.items})
    atomic_write_bytes(path, ("sha256,split\n" + "".join(f"{h},{s}\n" for h, s in rows)).encode())


def batches(cache: PatchCache | ViewCache, batch_size: int, epoch: int, seed: int, aug: Augment | None,
            shuffle: bool, weights: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(patches N×3×224×224 float32 in [0, 1], indices) per batch; augmentation seeded by (seed, epoch, index).
    With ``weights`` (and ``shuffle``) an epoch draws as many patches, with replacement, in proportion to them."""
    order = np.arange(len(cache))
    if shuffle and weights is not None:
        order = np.random.default_rng([seed, epoch]).choice(len(cache), len(cache), p=weights / weights.sum())
    elif shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(cache))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if aug is None:
            pix = np.stack([cache.patch(int(i)) for i in idx])
        else:
            pix = np.stack([augment_patch(cache, int(i), aug, np.random.default_rng([seed, epoch, int(i)]))
                            for i in idx])
        # NCHW *contiguous*: a channels-last-strided batch crashes torch 2.13's CPU backward through ResNet's strided
        # 1x1 convolutions (heap corruption), and NumPy's astype would keep the NHWC memory order.
        x = np.ascontiguousarray(pix.transpose(0, 3, 1, 2), dtype=np.float32)
        x /= 255.0
        yield x, idx


def image_scores(cache: PatchCache | ViewCache, patch_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image labels and mean patch scores (the scan's aggregation)."""
    images = np.unique(cache.image)
    y = np.array([cache.labels[cache.image == i][0] for i in images])
    s = np.array([patch_scores[cache.image == i].mean() for i in images])
    return y, s


def val_metrics(cache: PatchCache, patch_scores: np.ndarray, loss: float) -> dict[str, float]:
    y, s = image_scores(cache, patch_scores)
    try:
        ap = average_precision(y, s)
    except MetricError:
        ap = float("nan")
    return {"loss": loss, "ap": ap, "acc": float(((s >= 0.5) == y).mean())}


def calibrate(cache: PatchCache, patch_scores: np.ndarray) -> tuple[float, float]:
    """The validation threshold maximising balanced accuracy of the per-image score, and that accuracy."""
    y, s = image_scores(cache, patch_scores)
    return best_balanced_threshold(y, s)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
