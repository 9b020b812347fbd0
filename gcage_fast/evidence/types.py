"""The evidence records every reader returns and the row carries (pure Python: the decode workers import it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Evidence", "C2paInfo", "KINDS", "CLAIMS", "STRENGTHS", "AI_CLAIMS"]

KINDS = ("c2pa", "iptc", "metadata", "watermark")
CLAIMS = ("ai_generated", "ai_edited", "capture", "unknown")
#: signed: a C2PA manifest that validates against the trust anchors; declared: written into the file by its maker,
#: unsigned (or signed by a signer outside the anchors); detected: found in the pixels (watermarks).
STRENGTHS = ("signed", "declared", "detected")
AI_CLAIMS = ("ai_generated", "ai_edited")


@dataclass(frozen=True)
class Evidence:
    """One provenance signal found in a file."""

    kind: str  # one of KINDS
    claim: str  # one of CLAIMS
    generator: str | None  # e.g. "Stable Diffusion (AUTOMATIC1111)", "Google Imagen", or None when unknown
    detail: str  # what was found and where, short and printable (e.g. "XMP Iptc4xmpExt:DigitalSourceType=...")
    strength: str  # one of STRENGTHS

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.claim not in CLAIMS or self.strength not in STRENGTHS:
            raise ValueError(f"invalid evidence {self!r}")

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class C2paInfo:
    """What the C2PA manifest store of a file says (the active manifest), as validated offline."""

    present: bool = False
    #: trusted (valid and chained to a trust anchor) | valid (valid, signer outside the anchors) | invalid
    state: str | None = None
    failure_codes: list[str] = field(default_factory=list)  # validation status codes of failures
    signer: str | None = None  # subject common name / organisation of the signing certificate
    issuer: str | None = None  # issuer of the signing certificate
    claim_generator: str | None = None
    digital_source_types: list[str] = field(default_factory=list)  # IPTC terms (short form) of the actions
    actions: list[str] = field(default_factory=list)  # c2pa.created, c2pa.edited, ...
    ingredients: int | None = None
    signing_time: str | None = None  # ISO 8601 as the manifest states it

    def as_row(self) -> dict[str, Any]:
        return asdict(self)
