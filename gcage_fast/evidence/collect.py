"""The evidence stage of a decode worker: every reader run on the bytes the worker already holds.

:func:`read_evidence` runs on the file's bytes before decoding (so a file that fails to decode still carries its
provenance); :func:`read_pixel_evidence` runs on the decoded pixels at the file's own size (watermarks, opt-in).
Neither reads a file, opens a socket or raises for anything about the input: problems become flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gcage_fast.config import ScanConfig
from gcage_fast.evidence.c2pa_manifest import DEFAULT_TRUST_ANCHORS  # cheap: c2pa itself loads on first use
from gcage_fast.evidence.types import C2paInfo, Evidence

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DEFAULT_TRUST_ANCHORS", "EvidenceOptions", "Found", "options_for", "read_evidence",
           "read_pixel_evidence"]



@dataclass(frozen=True)
class EvidenceOptions:
    """What the evidence stage reads (picklable: it travels with every prepare task)."""

    c2pa: bool = True
    trust_anchors: str | None = None  # PEM bundle; None = no anchors (ScanConfig resolves the shipped default)
    metadata: bool = True
    watermarks: tuple[str, ...] = ()  # schemes of gcage_fast.evidence.watermark; () = off
    max_metadata_bytes: int = 4 * 2**20


def options_for(config: ScanConfig) -> EvidenceOptions | None:
    """What a scan's decode workers read besides the pixels (None with ``evidence=False``)."""
    if not config.evidence:
        return None
    anchors = DEFAULT_TRUST_ANCHORS if config.c2pa_trust_anchors is None else config.c2pa_trust_anchors
    return EvidenceOptions(trust_anchors=anchors, watermarks=config.watermark_schemes)


@dataclass
class Found:
    """What the readers found in one file."""

    evidence: list[Evidence] = field(default_factory=list)
    c2pa: C2paInfo | None = None
    flags: list[str] = field(default_factory=list)

    def add(self, evidence: list[Evidence], flags: list[str]) -> None:
        self.evidence.extend(e for e in evidence if e not in self.evidence)
        self.flags.extend(f for f in flags if f not in self.flags)


def read_evidence(data: bytes, fmt: str | None, options: EvidenceOptions) -> Found:
    """C2PA and metadata evidence of ``data`` (``fmt``: the content-sniffed format, or None)."""
    found = Found()
    if options.c2pa:
        from gcage_fast.evidence.c2pa_manifest import read_c2pa

        found.c2pa, evidence, flags = read_c2pa(data, fmt, options.trust_anchors)
        found.add(evidence, flags)
    if options.metadata:
        from gcage_fast.evidence.metadata import read_metadata

        found.add(*read_metadata(data, fmt, options.max_metadata_bytes))
    return found


def read_pixel_evidence(rgb: np.ndarray, options: EvidenceOptions, found: Found) -> None:
    """Add what the pixels carry (the watermark schemes of ``options``) to ``found``."""
    if options.watermarks:
        from gcage_fast.evidence.watermark import detect_watermarks

        found.add(*detect_watermarks(rgb, options.watermarks))
