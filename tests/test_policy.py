"""The verdict policy: which evidence decides, in which order, and what never does."""

from __future__ import annotations

import pytest

from gcage_fast.evidence.policy import fuse
from gcage_fast.evidence.types import Evidence


def ev(kind: str, claim: str, strength: str = "declared") -> Evidence:
    return Evidence(kind, claim, None, f"{kind} {claim}", strength)


@pytest.mark.parametrize("evidence,expected", [
    ([], ("real", "model")),
    ([ev("c2pa", "capture", "signed")], ("real", "model")),  # a capture claim never decides
    ([ev("iptc", "capture"), ev("metadata", "unknown")], ("real", "model")),
    ([ev("iptc", "ai_generated")], ("fake", "metadata")),
    ([ev("metadata", "ai_edited")], ("fake", "metadata")),
    ([ev("watermark", "ai_generated", "detected"), ev("metadata", "ai_generated")], ("fake", "watermark")),
    ([ev("metadata", "ai_generated"), ev("watermark", "ai_generated", "detected"),
      ev("c2pa", "ai_generated", "signed")], ("fake", "c2pa")),
    ([ev("c2pa", "capture", "signed"), ev("metadata", "ai_generated")], ("fake", "metadata")),
])
def test_evidence_first(evidence, expected):
    assert fuse(evidence, "real") == expected
    assert fuse(evidence, "real", "evidence-first") == expected


def test_the_model_keeps_its_own_fake_verdict():
    assert fuse([ev("c2pa", "capture", "signed")], "fake") == ("fake", "model")


def test_model_only_ignores_evidence():
    assert fuse([ev("c2pa", "ai_generated", "signed")], "real", "model-only") == ("real", "model")


def test_an_uncertain_model_verdict_stands_unless_evidence_decides():
    assert fuse([], "uncertain") == ("uncertain", "model")
    assert fuse([ev("c2pa", "capture", "signed")], "uncertain") == ("uncertain", "model")
    assert fuse([ev("metadata", "ai_generated")], "uncertain") == ("fake", "metadata")
    assert fuse([ev("watermark", "ai_generated", "detected")], "uncertain", "model-only") == ("uncertain", "model")


def test_unknown_policy_and_bad_evidence_are_refused():
    with pytest.raises(ValueError, match="unknown verdict policy 'trust-me'"):
        fuse([], "real", "trust-me")
    with pytest.raises(ValueError, match="invalid evidence"):
        Evidence("rumour", "ai_generated", None, "", "declared")
