"""The shortcut-free training protocol: every image, real or AI, goes through the same random view recipe.

A *view* is one 224×224 training patch: the decoded image is rescaled by a random factor (the same distribution
for both classes, up and down, so neither "sharp" nor "smooth from upscaling" belongs to one class), a patch is
taken around one of the SuSy-rule patches of the whole rescaled image (``cover`` grid, so the borders count) with
a random shift, re-encoded as JPEG at a random quality or left as it is, and flipped at random. The file's format,
size and metadata never reach the model: only decoded pixels go through the recipe, and the crop has one size.

Evaluation patches are what a scan scores: the top-k SuSy-rule patches of the unmodified image on a given grid.

Every random choice of an image derives from ``(seed, sha256 of the file)``, so views do not depend on the order
or the number of workers, and a rebuilt cache is identical. Both kinds of patches are cached as NumPy files in
the output directory (reused when the inputs and the recipe are unchanged).
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gcage_fast.config import Limits
from gcage_fast.fsutil import atomic_write_bytes
from gcage_fast.evaluation.datasets import LabelledImage
from gcage_fast.hashing import sha256_json
from gcage_fast.ingest.decode import DecodeFailure, decode_rgb
from gcage_fast.ingest.prepare import read_file
from gcage_fast.ingest.workers import SupervisedPool, WorkerFailure
from gcage_fast.log import logger
from gcage_fast.scoring.patches import PATCH, pad_to_patch, select

__all__ = ["ViewRecipe", "make_view", "scan_patches", "ViewCache", "VIEW_META"]

#: Columns of :attr:`ViewCache.meta`: what the recipe did to each view (the ablation reads them).
VIEW_META = ("scale", "jpeg_quality", "flipped")


@dataclass(frozen=True)
class ViewRecipe:
    """The random view recipe, identical for both classes."""

    views: int = 4  # training views per image
    rescale_p: float = 1.0
    scale: tuple[float, float] = (0.5, 2.0)  # log-uniform factor
    jpeg_p: float = 0.8
    jpeg_quality: tuple[int, int] = (65, 100)
    candidates: int = 5  # crop around one of the top-k SuSy-rule patches
    shift: int = 16  # pixels of random shift around that patch
    grid: str = "cover"
    flip: bool = True
    max_side: int = 4096  # larger images are first shrunk to this long side (bounded memory per view)

    def __post_init__(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < low <= high, got {self.scale}")
        qlo, qhi = self.jpeg_quality
        if not 1 <= qlo <= qhi <= 100:
            raise ValueError(f"JPEG quality range must lie in 1..100, got {self.jpeg_quality}")


def _seed(sha256: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(sha256[:16], 16)])


def make_view(rgb: np.ndarray, recipe: ViewRecipe, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, int, int]]:
    """One 224×224 uint8 view of an RGB image and what was done to it ``(scale, jpeg quality or 0, flipped)``."""
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    f = 1.0
    if rng.random() < recipe.rescale_p:
        lo, hi = recipe.scale
        f = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    f = max(f, PATCH / min(h, w))  # never below one patch
    f = min(f, recipe.max_side / max(h, w))
    if abs(f - 1.0) > 1e-3:
        im = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BICUBIC)
    arr, _ = pad_to_patch(np.asarray(im))
    sel = select(arr, recipe.candidates, grid=recipe.grid)
    x, y = (int(v) for v in sel.boxes[int(rng.integers(len(sel.boxes)))])
    hh, ww = arr.shape[:2]
    s = recipe.shift
    x = int(np.clip(x + rng.integers(-s, s + 1), 0, ww - PATCH)) if s else x
    y = int(np.clip(y + rng.integers(-s, s + 1), 0, hh - PATCH)) if s else y
    patch = arr[y:y + PATCH, x:x + PATCH]
    quality = 0
    if rng.random() < recipe.jpeg_p:
        quality = int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1))
        buf = io.BytesIO()
        Image.fromarray(patch).save(buf, "JPEG", quality=quality)
        with Image.open(buf) as dec:
            patch = np.asarray(dec.convert("RGB"))
    flipped = int(recipe.flip and rng.random() < 0.5)
    if flipped:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch), (round(f, 6), quality, flipped)


def scan_patches(rgb: np.ndarray, top_k: int, grid: str) -> np.ndarray:
    """The (top_k, 224, 224, 3) patches a scan scores (the last repeated when the image has fewer)."""
    arr, _ = pad_to_patch(rgb)
    sel = select(arr, top_k, grid=grid)
    patches = [arr[y:y + PATCH, x:x + PATCH] for x, y in sel.boxes]
    patches += [patches[-1]] * (top_k - len(patches))
    return np.stack(patches)


@dataclass(frozen=True)
class _ViewTask:
    index: int
    path: str
    sha256: str
    recipe: ViewRecipe | None  # None: the scan's patches instead of views
    top_k: int
    grid: str
    seed: int
    limits: Limits = Limits()


def _build_one(task: _ViewTask) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
    try:
        rgb = decode_rgb(read_file(os.fsencode(task.path), task.limits.max_bytes), task.limits).rgb
    except DecodeFailure as f:
        return task.index, None, None, f.code
    if task.recipe is None:
        return task.index, scan_patches(rgb, task.top_k, task.grid), None, None
    rng = _seed(task.sha256, task.seed)
    made = [make_view(rgb, task.recipe, rng) for _ in range(task.recipe.views)]
    return task.index, np.stack([m[0] for m in made]), np.array([m[1] for m in made], dtype=np.float64), None


def _failed(task: _ViewTask, failure: WorkerFailure) -> tuple[int, None, None, str]:
    return task.index, None, None, failure.code


class ViewCache:
    """Patches with their labels, shaped like :class:`gcage_fast.training.data.PatchCache` for the training loops:
    ``patch(i)``, ``labels``, ``classes``, ``image`` (the item index of each patch) and ``meta`` (views only), plus
    ``digests`` (each item's sha256) and ``store`` (the per-image cache folder) for caches derived from it.

    The cache is per image and content-addressed (``STORE/<sha256>.npy``, one folder per recipe), so sets that
    share images (the folds of a leave-one-source-out run, the final training) decode each image once.
    """

    margin = 0

    def __init__(self, patches: np.ndarray, labels: np.ndarray, classes: np.ndarray, image: np.ndarray,
                 meta: np.ndarray | None, digests: list[str] | None = None, store: Path | None = None) -> None:
        self.patches, self.labels, self.classes, self.image, self.meta = patches, labels, classes, image, meta
        self.digests, self.store = digests or [], store

    def __len__(self) -> int:
        return len(self.labels)

    def patch(self, i: int, dx: int | None = None, dy: int | None = None) -> np.ndarray:
        return self.patches[i]

    @staticmethod
    def store_for(cache_dir: Path, recipe: ViewRecipe | None, top_k: int, grid: str, seed: int,
                  limits: Limits = Limits()) -> Path:
        """The folder of one recipe's per-image files."""
        key = sha256_json({"recipe": None if recipe is None else asdict(recipe), "top_k": top_k, "grid": grid,
                           "seed": seed, "limits": asdict(limits) | {"formats": list(limits.formats)},
                           "version": 1})[:16]
        return cache_dir / f"{'views' if recipe is not None else 'scan'}-{key}"

    @classmethod
    def build(cls, items: list[LabelledImage], class_of: list[int], cache_dir: Path, *, recipe: ViewRecipe | None,
              top_k: int, grid: str, seed: int, workers: int, limits: Limits = Limits()) -> ViewCache:
        """Views of ``items`` (``recipe``) or their scan patches (``recipe=None``); images not in the cache yet are
        decoded in worker processes. An image that does not decode is skipped with a warning (and remembered)."""
        store = cls.store_for(cache_dir, recipe, top_k, grid, seed, limits)
        store.mkdir(parents=True, exist_ok=True)
        digests = [it.digest() for it in items]
        missing = [i for i, d in enumerate(digests)
                   if not (store / f"{d}.npy").is_file() and not (store / f"{d}.err").is_file()]
        tasks = ((i, _ViewTask(i, str(items[i].path), digests[i], recipe, top_k, grid, seed, limits), None)
                 for i in missing)
        with SupervisedPool(workers if missing else 0, _build_one, _failed) as pool:
            for _, (index, patches, meta, error) in pool.imap(tasks, max(2, 4 * workers)):
                d = digests[index]
                if patches is None:
                    atomic_write_bytes(store / f"{d}.err", str(error).encode())
                    continue
                _save(store / f"{d}.npy", patches)
                if meta is not None:
                    _save(store / f"{d}.meta.npy", meta)
        chunks, metas, labels, classes, image = [], [], [], [], []
        for i, d in enumerate(digests):
            if (store / f"{d}.err").is_file():
                logger.warning("skipping %s: %s", items[i].relpath, (store / f"{d}.err").read_text())
                continue
            patches = np.load(store / f"{d}.npy")
            chunks.append(patches)
            if recipe is not None:
                metas.append(np.load(store / f"{d}.meta.npy"))
            labels += [items[i].label] * len(patches)
            classes += [class_of[i]] * len(patches)
            image += [i] * len(patches)
        empty = np.zeros((0, PATCH, PATCH, 3), np.uint8)
        return cls(np.concatenate(chunks) if chunks else empty, np.array(labels, dtype=np.int64),
                   np.array(classes, dtype=np.int64), np.array(image, dtype=np.int64),
                   (np.concatenate(metas) if metas else np.zeros((0, len(VIEW_META)))) if recipe is not None else None,
                   digests, store)


def _save(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary name, so a killed build never leaves a partial file under the final name."""
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)
