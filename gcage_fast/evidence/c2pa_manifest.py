"""C2PA provenance: the active manifest of a file's embedded manifest store, validated offline with c2pa-python.

:func:`read_c2pa` returns what the active manifest says (:class:`C2paInfo`), one :class:`Evidence` per distinct
claim of its actions' IPTC digitalSourceTypes, and flags. A cheap byte-level pre-check skips the SDK for files
that carry no C2PA marker for their format (nearly all files), so scanning costs almost nothing there.

It never fetches anything (no remote manifest, OCSP, time-stamp or trust list: the SDK's network features are
off and its allowed network hosts are empty), never reads a file other than the configured trust-anchor PEM, and
never raises for anything about the file's bytes: problems become the flags ``c2pa.malformed``, ``c2pa.invalid``,
``c2pa.untrusted`` and ``c2pa.remote_manifest``. c2pa-python is imported lazily, on the first file with a marker.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcage_fast.errors import ConfigError, MissingDependencyError
from gcage_fast.evidence.containers import jpeg_segments, png_chunks, riff_chunks
from gcage_fast.evidence.source_types import claim_of, short_term
from gcage_fast.evidence.types import C2paInfo, Evidence
from gcage_fast.text import printable

if TYPE_CHECKING:
    from c2pa import Context

__all__ = ["DEFAULT_TRUST_ANCHORS", "FLAG_MALFORMED", "FLAG_INVALID", "FLAG_UNTRUSTED", "FLAG_REMOTE",
           "MIME_TYPES", "read_c2pa", "check_trust_anchors", "has_c2pa_marker"]

#: The official C2PA Trust List, shipped in the package (trust/SOURCE.md says where and when it was taken).
DEFAULT_TRUST_ANCHORS = str(Path(__file__).with_name("trust") / "C2PA-TRUST-LIST.pem")

FLAG_MALFORMED = "c2pa.malformed"  # the manifest store cannot be parsed (or the SDK failed on it)
FLAG_INVALID = "c2pa.invalid"  # the manifest parses but does not validate (tampered, bad signature, ...)
FLAG_UNTRUSTED = "c2pa.untrusted"  # valid, but signed by a certificate outside the trust anchors
FLAG_REMOTE = "c2pa.remote_manifest"  # the file only references a remote manifest (never fetched)

#: scanner format name -> MIME type the SDK reads (formats outside this map have no C2PA binding we read)
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
              "TIFF": "image/tiff"}

#: Byte markers without which the SDK cannot find an embedded manifest store in the format. Each is a structural
#: necessity, not a heuristic: JPEG's store lives in APP11 segments (marker FF EB, which entropy-coded data cannot
#: contain); PNG's in a ``caBX`` chunk; WebP's in a ``C2PA`` RIFF chunk; GIF's in a ``C2PA_GIF`` application
#: extension; TIFF's in tag 0xCD41 (either byte order). A marker found by chance only costs one SDK call.
_MARKERS = {"JPEG": re.compile(rb"\xff\xeb"), "PNG": re.compile(rb"caBX"), "WEBP": re.compile(rb"C2PA"),
            "GIF": re.compile(rb"C2PA_GIF"), "TIFF": re.compile(rb"\x41\xcd|\xcd\x41")}
#: XMP ``dcterms:provenance`` (attribute or element) names a remote manifest.
_REMOTE_MARKER = b"dcterms:provenance"
_REMOTE = re.compile(re.escape(_REMOTE_MARKER))
_MAX_WALK = 1 << 16  # container walks give up (and fall back to a byte search) after this many segments/chunks

_MAX_TEXT = 200  # every string we keep is printable and at most this long
_MAX_ITEMS = 32  # at most this many actions / source types kept
_MAX_LINEAGE = 8  # parentOf ingredients followed back from the active manifest
_MAX_PEM_BYTES = 16 * 2**20
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")
_WATERMARK_WORDS = ("synthid", "watermark")


def _text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    """``value`` as a printable string of at most ``limit`` characters, or None when empty / not a scalar."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = printable(str(value)[: limit * 2]).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _walked(data: bytes, fmt: str) -> tuple[bool, bool, int] | None:
    """(a C2PA block seen, a remote reference in a metadata block, where the walk stopped) from the container's
    blocks (gcage_fast.evidence.containers); None when the structure does not parse (the caller then searches the
    whole file). JPEG: the segments before the first SOS; the caller searches the rest (scans, trailing bytes)."""
    if fmt == "JPEG" and data.startswith(b"\xff\xd8"):
        walk, store, meta = jpeg_segments(data, _MAX_WALK), 0xEB, (0xE1,)
    elif fmt == "PNG" and data.startswith(b"\x89PNG\r\n\x1a\n"):
        walk, store, meta = png_chunks(data, _MAX_WALK), b"caBX", (b"iTXt", b"tEXt", b"zTXt")
    elif fmt == "WEBP" and data.startswith(b"RIFF"):
        walk, store, meta = riff_chunks(data, _MAX_WALK), b"C2PA", (b"XMP ",)
    else:
        return None
    if walk.status != "done":
        return None
    found = any(kind == store for kind, _, _ in walk.blocks)
    remote = any(kind in meta and _REMOTE_MARKER in data[start:end] for kind, start, end in walk.blocks)
    return found, remote, walk.where


def _precheck(data: bytes, fmt: str) -> tuple[bool, bool]:
    """(may hold an embedded manifest store, references a remote manifest); never (False, _) for a store the SDK
    would find. Walks the container's segments/chunks where that is cheap and sound, else searches the bytes."""
    marker = _MARKERS.get(fmt)
    if marker is None:
        return False, False
    walked = _walked(data, fmt)
    if walked is None:  # another layout or a broken chain: search everything
        return marker.search(data) is not None, _REMOTE.search(data) is not None
    found, remote, pos = walked
    # JPEG: APP11 segments between progressive scans or after EOI; PNG/WebP: bytes after the chunk chain
    return found or marker.search(data, pos) is not None, remote


def has_c2pa_marker(data: bytes, fmt: str | None) -> bool:
    """True when ``data`` may hold an embedded C2PA manifest store (never False for one the SDK would find)."""
    return _precheck(data, fmt or "")[0]


# ---------------------------------------------------------------------------------------------- trust anchors

def _load_pem(path: str) -> str:
    """The certificates of the PEM bundle at ``path`` as text, or ConfigError saying what is wrong."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"--c2pa-trust-anchors {path}: cannot read the file ({exc.strerror or exc})") from exc
    if len(raw) > _MAX_PEM_BYTES:
        raise ConfigError(f"--c2pa-trust-anchors {path}: the file is larger than {_MAX_PEM_BYTES // 2**20} MiB")
    blocks = _PEM_BLOCK.findall(raw)
    if not blocks:
        raise ConfigError(f"--c2pa-trust-anchors {path}: no PEM certificate found (expected one or more "
                          "'-----BEGIN CERTIFICATE-----' blocks)")
    for n, block in enumerate(blocks, 1):
        try:
            der = base64.b64decode(b"".join(block.split()), validate=True)
        except (binascii.Error, ValueError):
            der = b""
        if len(der) < 64 or der[0] != 0x30:
            raise ConfigError(f"--c2pa-trust-anchors {path}: certificate {n} is not a valid X.509 certificate")
    return raw.decode("ascii", errors="replace")


def _settings(anchors_pem: str | None) -> dict[str, Any]:
    """Reader settings: validate (against ``anchors_pem`` when given), never reach the network."""
    settings: dict[str, Any] = {
        "version": 1,
        "verify": {"verify_after_reading": True, "verify_trust": True, "verify_timestamp_trust": True,
                   "ocsp_fetch": False, "remote_manifest_fetch": False},
        "core": {"allowed_network_hosts": [], "allow_redirects": False},
        "builder": {"certificate_status_fetch": None},
    }
    if anchors_pem is not None:
        settings["trust"] = {"trust_anchors": anchors_pem}
    return settings


def _import_c2pa():
    try:
        import c2pa
    except ImportError as exc:
        raise MissingDependencyError("c2pa-python is not installed (a dependency of gcage-fast, needed to read C2PA "
                                     "manifests); install it with: pip install 'c2pa-python>=0.38,<0.39', or scan "
                                     "with --no-evidence") from exc
    return c2pa


def _context(trust_anchors: str | None) -> Context:
    """The SDK context for ``trust_anchors`` (a PEM path, or None for no anchors): built once per process and path
    (a forked child cannot use its parent's native context, so the process id is part of the key)."""
    return _context_of(trust_anchors, os.getpid())


@functools.lru_cache(maxsize=8)
def _context_of(trust_anchors: str | None, pid: int) -> Context:
    c2pa = _import_c2pa()
    pem = _load_pem(trust_anchors) if trust_anchors is not None else None
    try:
        return c2pa.Context.from_dict(_settings(pem))
    except c2pa.C2paError as exc:
        raise ConfigError(f"--c2pa-trust-anchors {trust_anchors}: the C2PA SDK rejects the certificates "
                          f"({_text(exc, 120)})") from exc


def check_trust_anchors(path: str) -> None:
    """Raise ConfigError (with a message naming ``path`` and the problem) unless ``path`` is a usable PEM bundle
    (MissingDependencyError when c2pa-python, which must accept the bundle too, is not installed)."""
    _load_pem(path)
    _context(path)


# ---------------------------------------------------------------------------------------------- manifest fields

def _claim_generator(manifest: dict) -> str | None:
    infos = manifest.get("claim_generator_info")
    if isinstance(infos, list) and infos and isinstance(infos[0], dict):
        name, version = _text(infos[0].get("name"), 120), _text(infos[0].get("version"), 60)
        if name:
            return f"{name}/{version}" if version else name
    return _text(manifest.get("claim_generator"))


def _actions(manifest: dict) -> list[dict]:
    """Every action of the manifest's c2pa.actions / c2pa.actions.v2 assertions (labels may carry ``__N``)."""
    found: list[dict] = []
    for assertion in manifest.get("assertions") or []:
        if not isinstance(assertion, dict):
            continue
        label = str(assertion.get("label", "")).split("__", 1)[0]
        data = assertion.get("data")
        if label in ("c2pa.actions", "c2pa.actions.v2") and isinstance(data, dict):
            found.extend(a for a in data.get("actions") or [] if isinstance(a, dict))
    return found


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))[:_MAX_ITEMS]


def _failure_codes(store: dict) -> list[str]:
    results = store.get("validation_results") if isinstance(store.get("validation_results"), dict) else {}
    active = results.get("activeManifest") if isinstance(results.get("activeManifest"), dict) else {}
    entries = list(active.get("failure") or []) + list(store.get("validation_status") or [])
    return _distinct([_text(e.get("code"), 80) or "" for e in entries if isinstance(e, dict)])


def _lineage_actions(manifests: dict, manifest: dict) -> list[dict]:
    """The actions of ``manifest``'s ``parentOf`` ancestors in the same store, nearest first, each tagged with the
    signer of its manifest (``_signer``). ChatGPT's manifest, for one, carries no actions: the DALL·E manifest
    that says ``trainedAlgorithmicMedia`` is its parent ingredient's. The store validates them all together."""
    found: list[dict] = []
    seen: set[str] = set()
    current = manifest
    for _ in range(_MAX_LINEAGE):
        parents = [i for i in current.get("ingredients") or [] if isinstance(i, dict)
                   and i.get("relationship") == "parentOf" and isinstance(i.get("active_manifest"), str)]
        if not parents or parents[0]["active_manifest"] in seen:
            break
        label = parents[0]["active_manifest"]
        seen.add(label)
        current = manifests.get(label)
        if not isinstance(current, dict):
            break
        sig = current.get("signature_info") if isinstance(current.get("signature_info"), dict) else {}
        signer = _text(sig.get("common_name")) or _text(sig.get("issuer"))
        found.extend({**a, "_signer": signer, "_inherited": True} for a in _actions(current))
    return found


def _info(store: dict) -> tuple[C2paInfo, list[dict]]:
    """C2paInfo of the active manifest of a parsed store (Reader.json()) and its actions, then those of its
    ``parentOf`` ancestors (the history of this image)."""
    manifests = store.get("manifests") if isinstance(store.get("manifests"), dict) else {}
    manifest = manifests.get(store.get("active_manifest"))
    manifest = manifest if isinstance(manifest, dict) else {}
    sig = manifest.get("signature_info") if isinstance(manifest.get("signature_info"), dict) else {}
    actions = _actions(manifest) + _lineage_actions(manifests, manifest)
    state = str(store.get("validation_state") or "").lower()
    failures = _failure_codes(store)
    if state not in ("trusted", "valid", "invalid"):
        state = "invalid" if failures or not manifest else "valid"
    if not manifest and "claim.missing" not in failures:
        failures.append("claim.missing")
    info = C2paInfo(
        present=True, state=state, failure_codes=failures,
        signer=_text(sig.get("common_name")) or _text(sig.get("issuer")),
        issuer=_text(sig.get("issuer")),
        claim_generator=_claim_generator(manifest),
        digital_source_types=_distinct([_text(short_term(a["digitalSourceType"]), 80) or "" for a in actions
                                        if isinstance(a.get("digitalSourceType"), str)]),
        actions=_distinct([_text(a.get("action"), 80) or "" for a in actions]),
        ingredients=len(manifest["ingredients"]) if isinstance(manifest.get("ingredients"), list) else 0,
        signing_time=_text(sig.get("time"), 64),
    )
    return info, actions


def _watermark_note(actions: list[dict]) -> str | None:
    """The description of an action that declares a watermark (e.g. "Applied imperceptible SynthID watermark")."""
    for action in actions:
        name = str(action.get("action", ""))
        desc = _text(action.get("description"), 80)
        if desc and any(w in desc.lower() for w in _WATERMARK_WORDS):
            return desc
        if name.startswith("c2pa.watermarked"):
            return _text(name, 80)
    return None


def _evidence(info: C2paInfo, actions: list[dict]) -> list[Evidence]:
    """One Evidence per distinct claim of the actions' digitalSourceTypes (none unless trusted or valid)."""
    if info.state not in ("trusted", "valid"):
        return []
    strength = "signed" if info.state == "trusted" else "declared"
    generator = (info.claim_generator or info.signer or "")[:80] or None
    note = _watermark_note(actions)
    out: dict[str, Evidence] = {}
    for action in actions:
        source = action.get("digitalSourceType")
        if not isinstance(source, str):
            continue
        claim = claim_of(source)
        if claim in out:
            continue
        detail = f"{_text(action.get('action'), 40) or 'action'} digitalSourceType={short_term(source)[:60]}"
        if action.get("_inherited"):
            detail = "parent ingredient: " + detail + (f", signed by {action['_signer'][:60]}"
                                                       if action.get("_signer") else "")
        elif info.signer:
            detail += f", signed by {info.signer[:60]}"
        if note:
            detail += f"; {note}"
        out[claim] = Evidence(kind="c2pa", claim=claim, generator=generator, detail=_text(detail) or "",
                              strength=strength)
    return list(out.values())


def _flags(info: C2paInfo) -> list[str]:
    if info.state == "invalid":
        return [FLAG_INVALID]
    if info.state == "valid":
        return [FLAG_UNTRUSTED]
    return []


def _error_kind(exc: BaseException) -> str:
    """The SDK's short error class ("Signature", "Remote", "JumbfParse", ...), from the typed exception or the
    "Kind: message" prefix the native library writes."""
    kind = type(exc).__name__.lstrip("_").removeprefix("C2pa")
    if kind in ("", "Error", "Other"):
        prefix = re.match(r"([A-Za-z][A-Za-z0-9]{0,39})[: ]", str(exc))
        kind = prefix.group(1) if prefix else (kind or "Error")
    return kind


def _malformed(exc: BaseException) -> tuple[C2paInfo, list[Evidence], list[str]]:
    kind = _error_kind(exc)
    info = C2paInfo(present=True, state="invalid", failure_codes=[f"sdk.{kind}"[:80]])
    return info, [], [FLAG_MALFORMED]


# ---------------------------------------------------------------------------------------------- entry point

def read_c2pa(data: bytes, fmt: str | None, trust_anchors: str | None = DEFAULT_TRUST_ANCHORS
              ) -> tuple[C2paInfo | None, list[Evidence], list[str]]:
    """(info or None when the file has no manifest, evidence, flags). Never raises for the file's content.

    ``fmt`` is the content-sniffed format name ("JPEG", "PNG", ...; None when unknown); ``trust_anchors`` a PEM
    bundle path, or None for no anchors (every valid manifest is then ``valid``, never ``trusted``). A broken PEM
    raises ConfigError (a configuration error, not the file's); a missing c2pa-python MissingDependencyError.
    """
    mime = MIME_TYPES.get(fmt or "")
    if mime is None:
        return None, [], []
    embedded, remote = _precheck(data, fmt or "")
    if not embedded and not remote:
        return None, [], []
    context = _context(trust_anchors)
    c2pa = _import_c2pa()
    try:
        with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
            store = json.loads(reader.json())
        info, actions = _info(store if isinstance(store, dict) else {})
        return info, _evidence(info, actions), _flags(info)
    except c2pa.C2paError.ManifestNotFound:
        return None, [], []
    except Exception as exc:  # noqa: BLE001 - any SDK failure on hostile bytes is the file's problem, not ours
        if _error_kind(exc) in ("RemoteManifest", "Remote"):
            return None, [], [FLAG_REMOTE]
        return _malformed(exc)
