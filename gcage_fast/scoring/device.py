"""Device-resident scoring: patch selection, gather and the fused step run where the engines run.

:class:`DeviceScorer` takes decoded uint8 H×W×3 images (already padded to at least P per side), uploads each
once (one flat buffer, pinned staging memory on CUDA) and runs, on the device:

1. ``patch_contrast`` over every grid patch of every image (one launch) and a per-image top-k (one stable sort);
   the grid is ``floor`` or ``cover`` (:mod:`gcage_fast.scoring.patches`; the kernels take any boxes);
2. ``gather_patches`` of the selected patches (one launch for all images) -> the base runner;
3. ``fuse_cam`` of the pixels and the base runner's CAMs (one launch) -> the head runner;

then copies back only the per-patch scores, the h×w CAMs and the selection, and aggregates per image exactly as
:class:`gcage_fast.scoring.host.HostScorer` (:func:`gcage_fast.scoring.aggregate.aggregate_scores`). The
kernels are chosen by :func:`gcage_fast.kernels.dispatch.resolve_kernels` (``kernel_impl`` or
``$GCAGE_KERNEL_IMPL``).

Runners follow :class:`gcage_fast.engine.base.Runner` (NumPy in, NumPy out): a batch is copied to the host for
them. A runner with ``accepts_torch = True`` gets the device tensor through its ``infer_torch``.

Every step of :meth:`DeviceScorer.run` is classified, not only the engine calls: an out-of-memory error in the
upload, a kernel, the top-k or a copy back becomes :class:`~gcage_fast.errors.OutOfMemory` (the images are then
scored one at a time, and one that does not fit alone gets an ``engine.out_of_memory`` row), a sticky device error
:class:`~gcage_fast.errors.DeviceFault` (:class:`gcage_fast.engine.base.DeviceErrors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gcage_fast.engine.base import DeviceErrors, Runner, run_chunked
from gcage_fast.kernels.batching import (PackedImages, grid_boxes, pack_images, patch_table, selected_boxes,
                                         topk_per_image)
from gcage_fast.kernels.dispatch import KernelSet, resolve_kernels
from gcage_fast.models.spec import ModelSpec
from gcage_fast.scoring.aggregate import aggregate_scores, base_patch_p_fake
from gcage_fast.scoring.base import EngineScorer, ImageScore, Prepared, score_one_by_one_on_oom
from gcage_fast.scoring.patches import DISTANCE, GRIDS, PATCH, Selection
from gcage_fast.scoring.patches import grid_boxes as host_grid_boxes

__all__ = ["DeviceScorer", "DeviceResult"]


@dataclass
class DeviceResult:
    """One image's patch selection (as :func:`gcage_fast.scoring.patches.select` gives it) and its scores."""

    selection: Selection
    score: ImageScore


class DeviceScorer(EngineScorer):
    """Scores decoded images with the patch work on ``device``; same results as :class:`HostScorer`.

    Args (besides those of :class:`~gcage_fast.scoring.base.EngineScorer`; ``keep_heat`` copies the heatmaps back
    to the host):
        device: where images, patches and the fused input live (``cpu``, ``cuda``, ``cuda:1``).
        kernel_impl: ``auto``, ``reference``, ``triton`` or ``cuda``; None reads ``$GCAGE_KERNEL_IMPL``.
        top_k: patches per image; None takes ``spec.top_k``.
        grid: ``floor`` (SuSy's grid) or ``cover`` (plus the border patches), as
            :func:`gcage_fast.scoring.patches.select` takes it.
    """

    def __init__(self, spec: ModelSpec, base: Runner, head: Runner | None, threshold: float, batch_size: int = 32,
                 keep_heat: bool = False, device: str | torch.device = "cpu", kernel_impl: str | None = None,
                 top_k: int | None = None, patch: int = PATCH, distance: int = DISTANCE, grid: str = "floor") -> None:
        super().__init__(spec, base, head, threshold, batch_size, keep_heat)
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; choose {' or '.join(GRIDS)}")
        self.grid = grid
        self.device = torch.device(device)
        self.top_k = spec.top_k if top_k is None else top_k
        self.patch = patch
        self.distance = distance
        self.kernel_request = kernel_impl
        self.kernels: KernelSet = resolve_kernels(kernel_impl, self.device)

    @property
    def kernel_impl(self) -> str:
        """The implementation that runs (``reference``, ``triton`` or ``cuda``), for run.json."""
        return self.kernels.name

    @property
    def kernel_detail(self) -> str:
        """Which code runs each kernel, e.g. ``triton (compiled)``."""
        return self.kernels.detail

    @property
    def kernel_info(self) -> dict[str, str]:
        """What run.json records about the patch kernels."""
        from gcage_fast.kernels.dispatch import requested_impl

        return {"impl": self.kernel_impl, "detail": self.kernel_detail,
                "requested": requested_impl(self.kernel_request)}

    def score(self, items: list[Prepared]) -> list[ImageScore | None]:
        """Scores for ``items`` (prepared with ``full_image``: the padded image, no patches), in the same order; the
        selection found on the device is written into each item (boxes, contrast, n_patches_total). An image that
        does not fit in device memory even alone gets None."""
        results = score_one_by_one_on_oom(self.run, [p.image for p in items])
        for prep, res in zip(items, results):
            if res is not None:
                prep.boxes, prep.contrast = res.selection.boxes, res.selection.contrast
                prep.n_patches_total = res.selection.n_total
        return [None if r is None else r.score for r in results]

    def run(self, images: Sequence[np.ndarray]) -> list[DeviceResult]:
        """Selection and scores for ``images`` (uint8 H×W×3, both sides >= P), in the same order.

        Raises OutOfMemory when any step runs out of memory (the engines' chunks already halved down to 1), and
        DeviceFault on a sticky device error."""
        if not images:
            return []
        with DeviceErrors(f"scoring {len(images)} image(s) on {self.device}"):
            return self._run(images)

    def _run(self, images: Sequence[np.ndarray]) -> list[DeviceResult]:
        p, k = self.patch, self.kernels
        packed = pack_images(images, self.device)
        if self.grid == "floor":
            grid, counts, num_ys = grid_boxes(packed, p)
        else:
            grid, counts = self._cover_boxes(packed)
        g_base, g_stride = patch_table(packed, grid)
        sums = k.patch_contrast(packed.flat, g_base, g_stride, p, self.distance)
        ks, keep = topk_per_image(sums, counts, self.top_k)
        if self.grid == "floor":
            boxes = selected_boxes(packed, ks, keep, num_ys, p)
        else:  # the selected rows of the grid table: image n's k sits at starts[n] + k
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            rows = torch.from_numpy(np.repeat(starts, keep)).to(ks.device) + ks
            boxes = grid[rows.to(grid.device)]
        base_t, stride_t = patch_table(packed, boxes)
        x = k.gather_patches(packed.flat, base_t, stride_t, p)
        out = self._infer(self.base, x)
        probs_t, cams_t = out["probs"], out["cam"]
        fused, cams_t = k.fuse_cam(packed.flat, base_t, stride_t, p, cams=cams_t)
        probs = probs_t.float().cpu().numpy()
        if self.head is not None:
            patch_p = self._infer(self.head, fused)["p_fake"].float().cpu().numpy().astype(np.float32)
        else:
            patch_p = base_patch_p_fake(self.spec, probs)
        cams = cams_t.cpu().numpy()
        heat = fused[:, 3].float().cpu().numpy() if self.keep_heat else None
        scores = aggregate_scores(self.spec, self.threshold, keep, probs, patch_p, cams, heat)
        return [DeviceResult(sel, s) for sel, s in zip(self._selections(ks, sums, boxes, keep, counts), scores)]

    def _cover_boxes(self, packed: PackedImages) -> tuple[torch.Tensor, list[int]]:
        """The ``cover`` grid of every image, in k order per image: boxes (M, 3) ``(image_index, x, y)`` on the
        device and patches per image (the floor grid's :func:`~gcage_fast.kernels.batching.grid_boxes` layout)."""
        rows, counts = [], []
        for n, (h, w) in enumerate(packed.shapes):
            if h < self.patch or w < self.patch:
                raise ValueError(f"image {n} of {w}x{h} is smaller than one {self.patch}x{self.patch} patch; "
                                 "pad it first")
            xy = host_grid_boxes(h, w, self.patch, "cover").astype(np.int64)
            rows.append(np.concatenate([np.full((len(xy), 1), n, dtype=np.int64), xy], axis=1))
            counts.append(len(xy))
        return torch.from_numpy(np.concatenate(rows)).to(packed.device), counts

    def _selections(self, ks: torch.Tensor, sums: torch.Tensor, boxes: torch.Tensor, keep: list[int],
                    counts: list[int]) -> list[Selection]:
        """Per-image :class:`Selection` from the device top-k (copied back: indices, boxes, contrast sums)."""
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        owner = np.repeat(np.arange(len(keep)), keep)
        ks_h = ks.cpu().numpy().astype(np.int64)
        xy = boxes[:, 1:].cpu().numpy().astype(np.int32)
        picked = sums[torch.from_numpy(starts[owner] + ks_h).to(sums.device)].cpu().numpy()
        norm = float(self.patch * (self.patch - self.distance))
        out, start = [], 0
        for n, kept in enumerate(keep):
            sl = slice(start, start + kept)
            start += kept
            out.append(Selection(ks_h[sl], xy[sl], picked[sl].astype(np.float64) / norm, counts[n]))
        return out

    def _infer(self, runner: Runner, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run ``x`` through ``runner`` in chunks of ``batch_size`` (halved on out-of-memory); outputs as tensors
        on ``self.device``."""
        takes_torch = bool(getattr(runner, "accepts_torch", False))

        def call(chunk: torch.Tensor) -> dict[str, torch.Tensor]:
            if takes_torch:
                result = runner.infer_torch({runner.input_name: chunk})  # type: ignore[attr-defined]
            else:
                result = runner.infer({runner.input_name: chunk.cpu().numpy()})
            return {name: torch.as_tensor(result[name]).to(self.device) for name in runner.output_names}

        return run_chunked(call, x, self.batch_size, torch.cat)
