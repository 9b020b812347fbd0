"""The format/size shortcut probe: can a classifier tell real from AI images by traces of format and size alone?

In many datasets the classes differ in file format and size (``broad``: most reals are JPEG around 500 px, most
AI images PNG around 1024 px). A detector trained on such data can learn "JPEG, small" = real. The probe measures
what a model *could* learn from that confound, for three kinds of inputs:

- ``file``: the file's format and size (format one-hot, log width, log height, log bytes, bits per pixel): what the
  confound is at the file level; no training patch carries these numbers, only their traces in the pixels.
- ``patches``: the traces in the grid patches of the unmodified image (what grid-patch training feeds a model).
- ``views``: the traces in the training views of :mod:`gcage_fast.training.views` (both classes re-encoded and
  rescaled by one random recipe).

The set the probe runs on has classes that differ *only* in format and size: every image of a source set is
written twice, as a large PNG (long side up to 1024 px, like most AI images of ``broad``) and as a small JPEG
(long side 512 px, quality 75–95, like most of its reals), labelled as the two classes; both copies of an image
fall in the same split. Whatever a classifier learns there is the shortcut and nothing else.

The pixel traces (:data:`TRACE_FEATURES`) are the usual fingerprints of a file's history: JPEG 8×8 block
boundaries (the grid's strength at its strongest phase, for rows and columns), chroma subsampling (share of the
chroma spectrum at high frequencies) and resolution (share of the luma spectrum above a quarter and above
three eighths of the sampling rate, which up- and down-scaling change). A logistic regression on them (with
their squares) is trained on the train split and scored on the test split, per image (features averaged over its
patches or views); an ROC-AUC near 0.5 means the shortcut is gone.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from gcage_fast.evaluation.datasets import LabelledImage, split_of
from gcage_fast.evaluation.metrics import roc_auc
from gcage_fast.fsutil import atomic_write_bytes
from gcage_fast.training.views import ViewCache, ViewRecipe

__all__ = ["TRACE_FEATURES", "FILE_FEATURES", "trace_features", "file_features", "probe_auc", "per_image",
           "format_size_pairs", "format_size_ablation"]

TRACE_FEATURES = ("jpeg_grid_cols", "jpeg_grid_rows", "chroma_hf", "luma_hf_quarter", "luma_hf_3_8")
FILE_FEATURES = ("is_jpeg", "is_png", "is_webp", "is_other", "log2_width", "log2_height", "log2_bytes",
                 "bits_per_pixel")


def _grid_strength(diffs: np.ndarray) -> float:
    """Strength of an 8-periodic pattern in mean absolute neighbour differences along one axis: the largest of the
    8 phase means over the mean of all (1.0 when there is no block grid)."""
    n = len(diffs) - len(diffs) % 8
    phases = diffs[:n].reshape(-1, 8).mean(axis=0)
    return float(phases.max() / max(phases.mean(), 1e-6))


def _hf_share(channel: np.ndarray, cutoff: float) -> float:
    """Share of the (mean-removed, Hann-windowed) power spectrum at radial frequency above ``cutoff`` cycles/px."""
    h, w = channel.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2((channel - channel.mean()) * win)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    r = np.hypot(fy, fx)
    return float(power[r > cutoff].sum() / max(power.sum(), 1e-12))


def trace_features(patch: np.ndarray) -> np.ndarray:
    """:data:`TRACE_FEATURES` of an (H, W, 3) uint8 patch."""
    x = patch.astype(np.float64)
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    cb = -0.168736 * x[..., 0] - 0.331264 * x[..., 1] + 0.5 * x[..., 2]
    cols = np.abs(np.diff(y, axis=1)).mean(axis=0)
    rows = np.abs(np.diff(y, axis=0)).mean(axis=1)
    return np.array([_grid_strength(cols), _grid_strength(rows), _hf_share(cb, 0.25), _hf_share(y, 0.25),
                     _hf_share(y, 0.375)])


def file_features(data: bytes) -> np.ndarray:
    """:data:`FILE_FEATURES` of an image file's bytes (format from the content, never from the name)."""
    with Image.open(io.BytesIO(data)) as im:
        fmt, (w, h) = (im.format or "").upper(), im.size
    return np.array([fmt == "JPEG", fmt == "PNG", fmt == "WEBP", fmt not in ("JPEG", "PNG", "WEBP"),
                     np.log2(w), np.log2(h), np.log2(len(data)), 8 * len(data) / (w * h)], dtype=np.float64)


def _expand(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    z = (x - mean) / std
    return np.hstack([z, z ** 2, np.ones((len(z), 1))])


def probe_auc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
              steps: int = 2000, l2: float = 1e-3, boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """ROC-AUC on the test rows of a class-balanced logistic regression (features and their squares, standardised
    on the train rows) fitted by gradient descent, with a 95% bootstrap interval over the test rows."""
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    a, b = _expand(x_train, mean, std), _expand(x_test, mean, std)
    w_cls = np.where(y_train == 1, 0.5 / max((y_train == 1).sum(), 1), 0.5 / max((y_train == 0).sum(), 1))
    theta = np.zeros(a.shape[1])
    lr = 0.5
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ theta, -30, 30)))
        grad = a.T @ ((p - y_train) * w_cls) + l2 * np.r_[theta[:-1], 0.0]
        theta -= lr * grad
    s = b @ theta
    auc = float(roc_auc(y_test, s))
    rng = np.random.default_rng(seed)
    stats: list[float] = []
    for _ in range(boot):
        idx = rng.integers(0, len(y_test), len(y_test))
        if 0 < y_test[idx].sum() < len(idx):
            stats.append(float(roc_auc(y_test[idx], s[idx])))
    lo, hi = (np.percentile(stats, [2.5, 97.5]) if stats else (np.nan, np.nan))
    return {"roc_auc": auc, "ci_low": float(lo), "ci_high": float(hi), "n_train": int(len(y_train)),
            "n_test": int(len(y_test))}


def per_image(features: np.ndarray, image: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean feature rows per image (in order of first appearance) and the image indices."""
    image = np.asarray(image)
    ids = np.unique(image)
    return np.stack([features[image == i].mean(axis=0) for i in ids]), ids


def format_size_pairs(items: Sequence[LabelledImage], out_dir: Path, seed: int = 0,
                      large: int = 1024, small: int = 512) -> tuple[list[LabelledImage], list[str]]:
    """Each image of ``items`` as a large PNG (label 1) and a small JPEG (label 0) in ``out_dir``, with the split of
    the original (by its sha256) for both copies. Files already written are reused; images that do not open are
    left out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs: list[LabelledImage] = []
    splits: list[str] = []
    for item in items:
        d = item.digest()
        png, jpg = out_dir / f"{d[:20]}-large.png", out_dir / f"{d[:20]}-small.jpg"
        if not (png.is_file() and jpg.is_file()):
            try:
                with Image.open(item.path) as im:
                    rgb = im.convert("RGB")
            except (OSError, ValueError, Image.DecompressionBombError):
                continue
            w, h = rgb.size
            if max(w, h) > large:
                f = large / max(w, h)
                rgb = rgb.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BICUBIC)
            f = small / max(rgb.size)
            little = rgb.resize((max(224, round(rgb.size[0] * f)), max(224, round(rgb.size[1] * f))), Image.BICUBIC)
            quality = int(np.random.default_rng([seed, int(d[:16], 16)]).integers(75, 96))
            for path, im, fmt, kw in ((png, rgb, "PNG", {}), (jpg, little, "JPEG", {"quality": quality})):
                buf = io.BytesIO()
                im.save(buf, fmt, **kw)
                atomic_write_bytes(path, buf.getvalue())
        pairs += [LabelledImage(jpg, jpg.name, 0), LabelledImage(png, png.name, 1)]
        splits += [split_of(d)] * 2
    return pairs, splits


def format_size_ablation(items: Sequence[LabelledImage], work_dir: Path, recipes: dict[str, ViewRecipe], *,
                         seed: int = 0, top_k: int = 5, workers: int = 0, test_split: str = "test") -> dict[str, Any]:
    """The probe on the format/size-only pairs of ``items``: rows ``file`` (file features), ``patches`` (grid
    patches of the unmodified images, floor grid) and one per recipe of ``recipes`` (its training views); trained
    on the other splits, scored on ``test_split``."""
    pairs, splits = format_size_pairs(items, work_dir / "pairs", seed)
    split = np.array(splits)
    labels = np.array([p.label for p in pairs])
    rows: dict[str, Any] = {}
    x_file = np.stack([file_features(p.path.read_bytes()) for p in pairs])
    te = split == test_split
    rows["file"] = probe_auc(x_file[~te], labels[~te], x_file[te], labels[te])
    for name, rec, grid in [("patches", None, "floor")] + [(k, r, r.grid) for k, r in recipes.items()]:
        cache = ViewCache.build(pairs, list(labels), work_dir / "cache", recipe=rec, top_k=top_k, grid=grid,
                                seed=seed, workers=workers)
        x, ids = per_image(np.stack([trace_features(cache.patches[k]) for k in range(len(cache))]), cache.image)
        y, te = labels[ids], split[ids] == test_split
        rows[name] = probe_auc(x[~te], y[~te], x[te], y[te])
    return {"images": len(pairs) // 2, "features": {"file": list(FILE_FEATURES), "pixels": list(TRACE_FEATURES)},
            "rows": rows}
