"""Which scorer a scan uses, how it is built from the scan's configuration and opened runners, and how many
decoded images the device path may keep in flight (a byte budget, since each is a whole padded image)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gcage_fast.config import Limits, ScanConfig
from gcage_fast.kernels.reference import PATCH
from gcage_fast.scoring.base import Prepared, Scorer

if TYPE_CHECKING:
    from gcage_fast.engine.factory import RunnerPair
    from gcage_fast.models.spec import ModelSpec

__all__ = ["make_scorer", "uses_device_path", "DEVICE_INFLIGHT_BYTES", "inflight_window", "max_device_image_bytes",
           "prepared_nbytes"]

#: Bytes of decoded images the device path may hold at each of its two stages: the files in flight in the decode
#: pool (sized for the largest image the limits allow, :func:`inflight_window`) and the decoded images waiting for
#: the scorer (weighed one by one, ``Prefetch(max_bytes=...)``). 4 GiB is 22 images of 64 MP (the default
#: ``--max-pixels``) at each stage, at least one file per worker on a 16-core machine.
DEVICE_INFLIGHT_BYTES = 4 * 2**30


def uses_device_path(config: ScanConfig) -> bool:
    """Patch selection, gather and the fused step run on the engine's device (:mod:`gcage_fast.scoring.device`)
    on ``--device cuda``, or when a kernel implementation is named explicitly (``--kernel-impl`` or
    ``$GCAGE_KERNEL_IMPL``, e.g. to check the Triton kernels under ``TRITON_INTERPRET=1`` on the CPU). A CPU scan
    with the default ``auto`` selects patches in the decode workers, as always."""
    from gcage_fast.kernels.dispatch import requested_impl

    return config.device == "cuda" or requested_impl(config.kernel_impl) != "auto"


def make_scorer(config: ScanConfig, spec: ModelSpec, pair: RunnerPair, threshold: float, top_k: int) -> Scorer:
    """The scorer for ``config``: :class:`HostScorer`, or :class:`DeviceScorer` when :func:`uses_device_path`."""
    keep_heat = config.heatmaps != "none"
    kwargs: dict[str, Any] = dict(batch_size=config.batch_size, keep_heat=keep_heat)
    if not uses_device_path(config):
        from gcage_fast.scoring.host import HostScorer

        return HostScorer(spec, pair.base, pair.head, threshold, **kwargs)
    from gcage_fast.scoring.device import DeviceScorer

    return DeviceScorer(spec, pair.base, pair.head, threshold, device=config.device, kernel_impl=config.kernel_impl,
                        top_k=top_k, grid=config.grid, **kwargs)


def max_device_image_bytes(limits: Limits, patch: int = PATCH) -> int:
    """An upper bound on the bytes of one decoded image on the device path: uint8 H×W×3 after the edge padding
    to ``patch`` per side, for any size that ``limits`` lets through (``max_pixels``, ``max_aspect``). An image
    whose short side is below ``patch`` grows by padding, but its long side is at most ``max_aspect`` times the
    short one; any other image is at most ``max_pixels`` (``3 * max_pixels`` bytes with the defaults)."""
    pixels = limits.max_pixels if limits.max_pixels >= patch * patch else 0  # both sides >= patch: no padding
    for short in range(1, patch):
        long = min(int(limits.max_aspect * short), limits.max_pixels // short)
        if long < short:  # no image has this short side (nor a longer one)
            break
        pixels = max(pixels, patch * max(patch, long))
    return 3 * pixels


def inflight_window(workers: int, max_image_bytes: int, budget_bytes: int = DEVICE_INFLIGHT_BYTES) -> int:
    """Files the decode pool may hold in flight: the usual ``max(2, 4 * workers)``, lowered so that
    ``window * max_image_bytes <= budget_bytes``, and at least 1 (a single image larger than the budget still
    runs, alone)."""
    by_count = max(2, 4 * workers)
    by_bytes = budget_bytes // max(1, max_image_bytes)
    return max(1, min(by_count, by_bytes))


def prepared_nbytes(prep: Prepared) -> int:
    """Bytes of the pixel arrays a prepared input holds (the padded image, the patches, the preview), each array
    counted once: what ``Prefetch(size_of=...)`` weighs."""
    arrays = {id(a): a for a in (prep.image, prep.patches, prep.preview) if a is not None}
    return sum(int(a.nbytes) for a in arrays.values())
