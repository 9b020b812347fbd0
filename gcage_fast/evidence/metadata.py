"""Provenance declared in a file's metadata: IPTC/XMP DigitalSourceType and the generators the rule table knows.

Walks the metadata containers of the bytes already in memory (no second read, no file, no network):
JPEG APP1 EXIF / XMP / extended XMP and COM segments (up to SOS); PNG tEXt / zTXt / iTXt / eXIf (up to IEND; zTXt
and compressed iTXt inflated with a hard output bound); WebP RIFF ``EXIF`` / ``XMP `` chunks; GIF comment and XMP
application extensions; TIFF's own IFD and XMLPacket tag. EXIF IFDs are parsed by Pillow, XMP by defusedxml
(gcage_fast.evidence.xmp). Every block is bounded by ``max_bytes``; anything wrong with the file becomes a flag:

``metadata.truncated``  a chunk/segment whose declared length runs past the end of the data (the walk stops there)
``metadata.too_large``  a text chunk, comment or EXIF block over ``max_bytes`` (or inflating past it): skipped
``metadata.malformed``  a compressed text chunk that does not inflate, or a container header that is not one
``metadata.error``      an unexpected failure inside the reader (caught: the reader never raises)
``exif.unreadable``     an EXIF block Pillow cannot parse
``xmp.too_large`` / ``xmp.malformed`` / ``xmp.forbidden``  see gcage_fast.evidence.xmp

Never raises for anything about the file.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable, Iterator

from gcage_fast.evidence import source_types
from gcage_fast.evidence.containers import MAX_BLOCKS, jpeg_segments, png_chunks, riff_chunks
from gcage_fast.evidence.generators import match_generators
from gcage_fast.evidence.types import Evidence
from gcage_fast.evidence.xmp import parse_xmp

__all__ = ["MAX_METADATA_BYTES", "FLAGS", "read_metadata", "text_fields"]

MAX_METADATA_BYTES = 4 * 2**20  # default bound on one metadata block (XMP packet, text chunk, comment, EXIF)
TRUNCATED, TOO_LARGE = "metadata.truncated", "metadata.too_large"
MALFORMED, ERROR = "metadata.malformed", "metadata.error"
EXIF_UNREADABLE = "exif.unreadable"
FLAGS = (TRUNCATED, TOO_LARGE, MALFORMED, ERROR, EXIF_UNREADABLE, "xmp.too_large", "xmp.malformed", "xmp.forbidden")

MAX_FIELDS = 10_000  # (field, value) pairs kept from one file, all containers together
MAX_TIFF_BYTES = 256 * 2**20  # a TIFF larger than this is not handed to Pillow's IFD parser
DETAIL_CHARS = 80

XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_JPEG_EXT = b"http://ns.adobe.com/xmp/extension/\x00"
XMP_PNG_KEYWORD = "XML:com.adobe.xmp"

#: EXIF tags read (IFD0 and the Exif sub-IFD) -> field name
EXIF_TAGS = {
    0x010E: "ImageDescription",
    0x010F: "Make",
    0x0110: "Model",
    0x0131: "Software",
    0x013B: "Artist",
    0x9286: "UserComment",
    0x9C9C: "XPComment",
    0x9C9D: "XPAuthor",
}
EXIF_IFD = 0x8769
TIFF_XMP_TAG = 700

Fields = list[tuple[str, str]]


class _Sink:
    """What one walk collects: (field, value) pairs and flags."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.fields: Fields = []
        self.flags: list[str] = []

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    def add(self, field: str, value: str) -> None:
        value = value.replace("\x00", "").strip()
        if value and len(self.fields) < MAX_FIELDS:
            self.fields.append((field, value))

    def xmp(self, raw: bytes) -> None:
        fields, flags = parse_xmp(raw, self.max_bytes)
        self.fields.extend(fields[: max(0, MAX_FIELDS - len(self.fields))])
        for f in flags:
            self.flag(f)

    def exif(self, raw: bytes) -> None:
        if len(raw) > self.max_bytes:
            self.flag(TOO_LARGE)
            return
        _read_exif(raw, self)


# --------------------------------------------------------------------------------------------------------- EXIF


def _decode_user_comment(raw: bytes, little_endian: bool) -> str:
    """EXIF UserComment: an 8-byte charset header (ASCII / UNICODE / JIS / undefined) then the text."""
    head, body = raw[:8], raw[8:]
    if head.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", errors="replace")
        even_zeros = body[0:200:2].count(0)
        odd_zeros = body[1:200:2].count(0)
        big = even_zeros > odd_zeros if even_zeros != odd_zeros else not little_endian
        return body.decode("utf-16-be" if big else "utf-16-le", errors="replace")
    if head.startswith(b"ASCII") or head == b"\x00" * 8:
        return body.decode("utf-8", errors="replace")
    if head.startswith(b"JIS"):
        return body.decode("shift_jis", errors="replace")
    return raw.decode("utf-8", errors="replace")


def _exif_value(tag: int, value: object, little_endian: bool) -> str:
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        value = bytes(v & 0xFF for v in value)
    if tag == 0x9286 and isinstance(value, str):  # stored with the ASCII type: Pillow decoded it as latin-1
        value = value.encode("latin-1", errors="replace")
    if tag in (0x9C9C, 0x9C9D) and isinstance(value, bytes):
        return value.decode("utf-16-le", errors="replace")
    if tag == 0x9286 and isinstance(value, bytes):
        return _decode_user_comment(value, little_endian)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _read_exif(raw: bytes, sink: _Sink) -> None:
    try:
        from PIL import Image

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exif = Image.Exif()
            exif.load(raw)
            little = raw[6:8] == b"II" if raw.startswith(b"Exif\x00\x00") else raw[:2] == b"II"
            ifds = [dict(exif.items())]
            try:
                ifds.append(dict(exif.get_ifd(EXIF_IFD).items()))
            except Exception:  # noqa: BLE001 - a broken sub-IFD leaves IFD0 usable
                sink.flag(EXIF_UNREADABLE)
            for ifd in ifds:
                for tag, name in EXIF_TAGS.items():
                    if tag in ifd:
                        sink.add(f"exif:{name}", _exif_value(tag, ifd[tag], little)[: sink.max_bytes])
            xmp = ifds[0].get(TIFF_XMP_TAG)
            if isinstance(xmp, (bytes, str)):
                sink.xmp(xmp.encode("utf-8", "replace") if isinstance(xmp, str) else xmp)
            elif isinstance(xmp, tuple) and all(isinstance(v, int) for v in xmp):
                sink.xmp(bytes(v & 0xFF for v in xmp))
    except Exception:  # noqa: BLE001 - Pillow raises many types on hostile IFDs
        sink.flag(EXIF_UNREADABLE)


# --------------------------------------------------------------------------------------------------------- JPEG


_WALK_FLAGS = {"truncated": TRUNCATED, "malformed": MALFORMED}


def _walk_jpeg(data: bytes, sink: _Sink) -> None:
    walk = jpeg_segments(data, MAX_BLOCKS)
    extended: dict[bytes, dict[int, bytes]] = {}
    for marker, start, end in walk.blocks:
        _jpeg_segment(marker, data[start:end], sink, extended)
    if walk.status in _WALK_FLAGS:
        sink.flag(_WALK_FLAGS[walk.status])
    _extended_xmp(extended, sink)


def _jpeg_segment(marker: int, body: bytes, sink: _Sink, extended: dict[bytes, dict[int, bytes]]) -> None:
    if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
        sink.exif(body)
    elif marker == 0xE1 and body.startswith(XMP_JPEG):
        sink.xmp(body[len(XMP_JPEG) :])
    elif marker == 0xE1 and body.startswith(XMP_JPEG_EXT) and len(body) >= len(XMP_JPEG_EXT) + 40:
        head = len(XMP_JPEG_EXT)
        guid = body[head : head + 32]
        total, offset = struct.unpack_from(">II", body, head + 32)
        if total > sink.max_bytes:
            sink.flag("xmp.too_large")
            return
        parts = extended.setdefault(guid, {})
        if len(extended) <= 8 and sum(len(p) for p in parts.values()) <= sink.max_bytes:
            parts[offset] = body[head + 40 :]
    elif marker == 0xFE:
        sink.add("jpeg:comment", body.decode("utf-8", errors="replace"))


def _extended_xmp(extended: dict[bytes, dict[int, bytes]], sink: _Sink) -> None:
    for parts in extended.values():
        sink.xmp(b"".join(parts[k] for k in sorted(parts)))


# ---------------------------------------------------------------------------------------------------------- PNG


def _inflate(buf: bytes, sink: _Sink) -> bytes | None:
    """zlib data inflated to at most max_bytes; None (flagged) when it is larger or corrupt."""
    try:
        d = zlib.decompressobj()
        out = d.decompress(buf, sink.max_bytes)
        if d.unconsumed_tail:
            sink.flag(TOO_LARGE)
            return None
        return out
    except zlib.error:
        sink.flag(MALFORMED)
        return None


def _png_text(ctype: bytes, body: bytes, sink: _Sink) -> None:
    keyword, sep, rest = body.partition(b"\x00")
    if not sep:
        sink.flag(MALFORMED)
        return
    key = keyword[:79].decode("latin-1")
    if ctype == b"tEXt":
        sink.add(f"png:{key}", rest.decode("latin-1"))
    elif ctype == b"zTXt":
        text = _inflate(rest[1:], sink)
        if text is not None:
            sink.add(f"png:{key}", text.decode("latin-1"))
    else:  # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
        if len(rest) < 2:
            sink.flag(MALFORMED)
            return
        compressed = rest[0] == 1
        parts = rest[2:].split(b"\x00", 2)
        if len(parts) < 3:
            sink.flag(MALFORMED)
            return
        text = _inflate(parts[2], sink) if compressed else parts[2]
        if text is None:
            return
        if key == XMP_PNG_KEYWORD:
            sink.xmp(text)
        else:
            sink.add(f"png:{key}", text.decode("utf-8", errors="replace"))


def _walk_png(data: bytes, sink: _Sink) -> None:
    walk = png_chunks(data, MAX_BLOCKS)
    for ctype, start, end in walk.blocks:
        if ctype not in (b"tEXt", b"zTXt", b"iTXt", b"eXIf"):
            continue
        if end - start > sink.max_bytes:
            xmp = data[start:start + 18] == XMP_PNG_KEYWORD.encode() + b"\x00"
            sink.flag("xmp.too_large" if xmp else TOO_LARGE)
        elif ctype == b"eXIf":
            sink.exif(data[start:end])
        else:
            _png_text(ctype, data[start:end], sink)
    if walk.status in _WALK_FLAGS:
        sink.flag(_WALK_FLAGS[walk.status])


# --------------------------------------------------------------------------------------------------------- WebP


def _walk_webp(data: bytes, sink: _Sink) -> None:
    walk = riff_chunks(data, MAX_BLOCKS)
    for fourcc, start, end in walk.blocks:
        if fourcc not in (b"EXIF", b"XMP "):
            continue
        if end - start > sink.max_bytes:
            sink.flag(TOO_LARGE if fourcc == b"EXIF" else "xmp.too_large")
        elif fourcc == b"EXIF":
            sink.exif(data[start:end])
        else:
            sink.xmp(data[start:end])
    if walk.status in _WALK_FLAGS:
        sink.flag(_WALK_FLAGS[walk.status])


# ---------------------------------------------------------------------------------------------------------- GIF


def _gif_sub_blocks(data: bytes, i: int) -> tuple[int, int]:
    """(end of the sub-block chain after its terminator, or -1 when truncated; bytes in it)."""
    n, total = len(data), 0
    while i < n:
        size = data[i]
        if size == 0:
            return i + 1, total
        i += 1 + size
        total += size
    return -1, total


def _gif_comment(data: bytes, start: int, end: int, sink: _Sink) -> None:
    out, i = bytearray(), start
    while i < end - 1 and len(out) <= sink.max_bytes:
        size = data[i]
        out += data[i + 1 : i + 1 + size]
        i += 1 + size
    if len(out) > sink.max_bytes:
        sink.flag(TOO_LARGE)
    else:
        sink.add("gif:comment", bytes(out).decode("utf-8", errors="replace"))


def _walk_gif(data: bytes, sink: _Sink) -> None:
    n = len(data)
    if n < 13:
        sink.flag(TRUNCATED)
        return
    i = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    blocks = 0
    while i < n and blocks < MAX_BLOCKS:
        blocks += 1
        kind = data[i]
        if kind == 0x3B:
            return
        if kind == 0x21 and i + 2 <= n:
            label, start = data[i + 1], i + 2
            app = data[start + 1 : start + 12] if label == 0xFF and start < n and data[start] == 11 else b""
            body = start + 12 if app else start
            end, size = _gif_sub_blocks(data, body)
            if end < 0:
                sink.flag(TRUNCATED)
                return
            if label == 0xFE:
                _gif_comment(data, start, end, sink)
            elif app == b"XMP DataXMP":
                if end - body > sink.max_bytes:
                    sink.flag("xmp.too_large")
                else:
                    sink.xmp(data[body:end])  # XMP in GIF is raw bytes; the sub-block sizes are part of the text
            i = end
        elif kind == 0x2C and i + 10 <= n:
            flags = data[i + 9]
            i += 10 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0) + 1  # + LZW minimum code size
            end, _ = _gif_sub_blocks(data, i)
            if end < 0:
                sink.flag(TRUNCATED)
                return
            i = end
        else:
            sink.flag(TRUNCATED if i + 10 > n else MALFORMED)
            return
    if blocks < MAX_BLOCKS:  # ran off the end before the trailer
        sink.flag(TRUNCATED)


# --------------------------------------------------------------------------------------------------------- TIFF


def _walk_tiff(data: bytes, sink: _Sink) -> None:
    if len(data) > MAX_TIFF_BYTES:
        sink.flag(TOO_LARGE)
        return
    _read_exif(data, sink)


_WALKERS: dict[str, Callable[[bytes, _Sink], None]] = {
    "JPEG": _walk_jpeg,
    "PNG": _walk_png,
    "WEBP": _walk_webp,
    "GIF": _walk_gif,
    "TIFF": _walk_tiff,
}


def _collect(data: bytes, fmt: str | None, max_bytes: int) -> tuple[Fields, list[str]]:
    sink = _Sink(max(0, int(max_bytes)))
    if fmt is None:
        from gcage_fast.formats import sniff_format  # the scanner's own content sniffing

        fmt = sniff_format(data)
    fmt = (fmt or "").upper()
    walker = _WALKERS.get(fmt)
    if walker is None or len(data) < 12:
        return [], []
    try:
        walker(data, sink)
    except Exception:  # noqa: BLE001 - the reader never raises for a file; the flag says something broke
        sink.flag(ERROR)
    return sink.fields, sink.flags


def text_fields(data: bytes, fmt: str | None, max_bytes: int = MAX_METADATA_BYTES) -> list[tuple[str, str]]:
    """Every (field, value) pair the walk found, for explain/debug output. Never raises."""
    try:
        return _collect(bytes(data), fmt, max_bytes)[0]
    except Exception:  # noqa: BLE001
        return []


# ------------------------------------------------------------------------------------------------------ evidence


def _short(text: str, limit: int = DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_source_type(field: str) -> bool:
    return field.rpartition(":")[2].rpartition("}")[2] == "DigitalSourceType"


def _iptc_evidence(fields: Fields) -> Iterator[Evidence]:
    tool = next((v for f, v in fields if f == "xmp:CreatorTool"), None)
    seen: set[str] = set()
    for field, value in fields:
        if not _is_source_type(field):
            continue
        term = source_types.short_term(value)
        if term in seen:
            continue
        seen.add(term)
        name = field.rpartition("}")[2] if field.startswith("{") else field
        yield Evidence(
            kind="iptc",
            claim=source_types.claim_of(value),
            generator=_short(tool, 100) if tool else None,
            detail=f"XMP {name}={_short(term)}",
            strength="declared",
        )


def _generator_evidence(fields: Fields) -> Iterator[Evidence]:
    seen: set[tuple[str, str]] = set()
    for field, value in fields:
        for rule, text in match_generators(field, value):
            if (rule.generator, field) in seen:
                continue
            seen.add((rule.generator, field))
            yield Evidence(
                kind="metadata",
                claim=rule.claim,
                generator=rule.generator,
                detail=f"{_short(field, 60)}: {_short(text)}",
                strength="declared",
            )


def read_metadata(
    data: bytes, fmt: str | None, max_bytes: int = MAX_METADATA_BYTES
) -> tuple[list[Evidence], list[str]]:
    """Evidence of kinds 'iptc' and 'metadata' found in the file's metadata, and flags. Never raises.

    Args:
        data: the whole file as read once by the caller.
        fmt: the content-sniffed format ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP") or None to sniff here.
        max_bytes: bound on one metadata block; larger blocks are skipped with a flag.
    """
    try:
        fields, flags = _collect(bytes(data), fmt, max_bytes)
        evidence = list(_iptc_evidence(fields)) + list(_generator_evidence(fields))
        return evidence, flags
    except Exception:  # noqa: BLE001
        return [], [ERROR]
