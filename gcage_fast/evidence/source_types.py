"""IPTC DigitalSourceType terms (the vocabulary C2PA actions and IPTC/XMP metadata use) and the claim each makes.

Source: the IPTC NewsCodes vocabulary http://cv.iptc.org/newscodes/digitalsourcetype/ (C2PA's
``digitalSourceType`` of an action takes the same URIs). A term not listed here is kept in the row with the claim
``unknown``.
"""

from __future__ import annotations

__all__ = ["IPTC_PREFIX", "CLAIM_OF_SOURCE_TYPE", "short_term", "claim_of"]

IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

#: term -> claim. Only the trained-model terms are AI claims; the capture terms never decide a verdict on their
#: own (docs/PROVENANCE.md); the rest (software-made, composites, screen captures, edits) stay ``unknown``.
CLAIM_OF_SOURCE_TYPE = {
    "trainedAlgorithmicMedia": "ai_generated",
    "compositeWithTrainedAlgorithmicMedia": "ai_edited",
    "digitalCapture": "capture",
    "computationalCapture": "capture",
    "negativeFilm": "capture",
    "positiveFilm": "capture",
    "print": "capture",
    "algorithmicMedia": "unknown",  # made by an algorithm without training data (e.g. procedural graphics)
    "algorithmicallyEnhanced": "unknown",
    "dataDrivenMedia": "unknown",
    "digitalArt": "unknown",
    "virtualRecording": "unknown",
    "screenCapture": "unknown",
    "composite": "unknown",
    "compositeCapture": "unknown",
    "compositeSynthetic": "unknown",
    "humanEdits": "unknown",
    "minorHumanEdits": "unknown",
}


def short_term(value: str) -> str:
    """``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` (or the https form, or the bare
    term) -> ``trainedAlgorithmicMedia``."""
    value = value.strip()
    return value.rstrip("/").rsplit("/", 1)[-1] if "/" in value else value


def claim_of(value: str) -> str:
    """The claim a DigitalSourceType value makes (``unknown`` for a term outside the vocabulary)."""
    return CLAIM_OF_SOURCE_TYPE.get(short_term(value), "unknown")
