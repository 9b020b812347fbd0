"""How evidence and the model's score make the row's verdict (pure Python; docs/PROVENANCE.md states the policy).

``evidence-first`` (the default): an AI claim (ai_generated or ai_edited) from a C2PA manifest that validates
(trusted, or valid with a signer outside the trust anchors), from IPTC/XMP or a declared generator in the metadata,
or from a detected watermark makes the verdict ``fake``, and ``verdict_source`` names the strongest kind that said so
(c2pa, then watermark, then metadata). A capture claim never makes a verdict by itself: metadata can be stripped or
forged, so a "camera" label on an AI image must not clear it; it is shown in ``evidence`` and the model decides.
An invalid manifest is only a flag (``c2pa.invalid``) and never evidence.

``model-only``: the model's verdict whatever the evidence; the evidence is still recorded.

The model's verdict (:func:`gcage_fast.scoring.aggregate.model_verdict`) is ``fake`` (p_fake >= threshold),
``uncertain`` (in a model's optional band below the threshold) or ``real``; evidence that decides overrides any of
them to ``fake``, and without such evidence the model's verdict stands, ``uncertain`` included.
"""

from __future__ import annotations

from collections.abc import Iterable

from gcage_fast.config import VERDICT_POLICIES
from gcage_fast.evidence.types import AI_CLAIMS, Evidence

__all__ = ["VERDICT_POLICIES", "DEFAULT_POLICY", "VERDICT_SOURCES", "source_of_kind", "fuse"]

DEFAULT_POLICY = VERDICT_POLICIES[0]
#: What a row's ``verdict_source`` can say; iptc and metadata evidence are both "metadata".
VERDICT_SOURCES = ("model", "c2pa", "watermark", "metadata")
_SOURCE_OF_KIND = {"c2pa": "c2pa", "watermark": "watermark", "iptc": "metadata", "metadata": "metadata"}


def source_of_kind(kind: str) -> str:
    """The ``verdict_source`` an evidence kind decides as."""
    return _SOURCE_OF_KIND[kind]


def fuse(evidence: Iterable[Evidence], model_verdict: str, policy: str = DEFAULT_POLICY) -> tuple[str, str]:
    """``(verdict, verdict_source)`` of a scored row; ``model_verdict`` is ``fake``, ``uncertain`` or ``real``."""
    if policy not in VERDICT_POLICIES:
        raise ValueError(f"unknown verdict policy {policy!r}")
    if policy == "evidence-first":
        deciding = {source_of_kind(e.kind) for e in evidence if e.claim in AI_CLAIMS}
        for source in VERDICT_SOURCES[1:]:
            if source in deciding:
                return "fake", source
    return model_verdict, "model"
