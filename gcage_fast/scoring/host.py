"""The host scorer: base graph -> fused step (NumPy) -> head graph -> per-image scores, for patches that the decode
workers selected (every CPU scan). Patches of several images are scored together; each image's result is the
aggregate of its own patches (:mod:`gcage_fast.scoring.aggregate`).
"""

from __future__ import annotations

import numpy as np

from gcage_fast.engine.base import infer_chunked
from gcage_fast.kernels.cpu import fuse_cam_from_patches
from gcage_fast.kernels.reference import PATCH, gather_patches
from gcage_fast.scoring.aggregate import aggregate_scores, base_patch_p_fake
from gcage_fast.scoring.base import EngineScorer, ImageScore, Prepared, score_one_by_one_on_oom

__all__ = ["HostScorer"]


class HostScorer(EngineScorer):
    """Scores images whose patches the decode workers selected, with the fused step in NumPy on the host
    (arguments: :class:`~gcage_fast.scoring.base.EngineScorer`)."""

    def score(self, items: list[Prepared]) -> list[ImageScore | None]:
        """Scores for ``items`` (all with ``status == "ok"``), in the same order.

        When the engine runs out of memory even at batch size 1, the images are scored one by one and an image
        that still does not fit gets None (its row becomes ``engine.out_of_memory``).
        """
        return score_one_by_one_on_oom(self._score, items)

    def _score(self, items: list[Prepared]) -> list[ImageScore]:
        counts = [len(it.patches) for it in items]
        strip = np.concatenate([it.patches for it in items]).reshape(-1, PATCH, 3)
        n = sum(counts)
        boxes = np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), np.arange(n) * PATCH], axis=1)
        x = gather_patches([strip], boxes)
        out = infer_chunked(self.base, x, self.batch_size)
        probs, cams = out["probs"], out["cam"]
        fused = fuse_cam_from_patches(x, cams)
        if self.head is not None:
            patch_p = infer_chunked(self.head, fused, self.batch_size)["p_fake"].astype(np.float32)
        else:
            patch_p = base_patch_p_fake(self.spec, probs)
        heat = fused[:, 3] if self.keep_heat else None
        return aggregate_scores(self.spec, self.threshold, counts, probs, patch_p, cams, heat)
