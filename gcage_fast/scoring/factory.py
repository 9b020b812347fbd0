"""Which scorer a scan uses, and how it is built from the scan's configuration and opened runners."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gcage_fast.config import ScanConfig
from gcage_fast.scoring.base import Scorer

if TYPE_CHECKING:
    from gcage_fast.engine.factory import RunnerPair
    from gcage_fast.models.spec import ModelSpec

__all__ = ["make_scorer", "uses_device_path"]


def uses_device_path(config: ScanConfig) -> bool:
    """Patch selection, gather and the fused step run on the engine's device (:mod:`gcage_fast.scoring.device`)
    on ``--device cuda``, or when a kernel implementation is named explicitly (``--kernel-impl`` or
    ``$GCAGE_KERNEL_IMPL``, e.g. to check the Triton kernels under ``TRITON_INTERPRET=1`` on the CPU). A CPU scan
    with the default ``auto`` selects patches in the decode workers, as always."""
    from gcage_fast.kernels.dispatch import requested_impl

    return config.device == "cuda" or requested_impl(config.kernel_impl) != "auto"


def make_scorer(config: ScanConfig, spec: ModelSpec, pair: RunnerPair, threshold: float, top_k: int) -> Scorer:
    """The scorer for ``config``: :class:`HostScorer`, or :class:`DeviceScorer` when :func:`uses_device_path`."""
    keep_heat = config.heatmaps == "png"
    kwargs: dict[str, Any] = dict(batch_size=config.batch_size, keep_heat=keep_heat)
    if not uses_device_path(config):
        from gcage_fast.scoring.host import HostScorer

        return HostScorer(spec, pair.base, pair.head, threshold, **kwargs)
    from gcage_fast.scoring.device import DeviceScorer

    return DeviceScorer(spec, pair.base, pair.head, threshold, device=config.device, kernel_impl=config.kernel_impl,
                        top_k=top_k, **kwargs)
