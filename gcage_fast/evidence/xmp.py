"""Safe parsing of one XMP packet into (field, value) pairs.

The packet is parsed with defusedxml: DTDs, entity declarations and external references are refused (so a
billion-laughs or external-entity packet costs nothing and reads no file), a packet over the size bound is not parsed
at all, and malformed XML is reported as a flag. Fields are named by their conventional prefix
(``xmp:CreatorTool``, ``dc:description``, ``Iptc4xmpExt:DigitalSourceType``); a namespace outside the table keeps
its URI (``{uri}local``). Never raises for anything about the packet; never touches the network or a file.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

__all__ = [
    "FLAG_TOO_LARGE",
    "FLAG_MALFORMED",
    "FLAG_FORBIDDEN",
    "PREFIXES",
    "MAX_FIELDS",
    "parse_xmp",
    "extract_packet",
]

FLAG_TOO_LARGE = "xmp.too_large"  # packet over max_bytes: not parsed
FLAG_MALFORMED = "xmp.malformed"  # not well-formed XML (or not decodable)
FLAG_FORBIDDEN = "xmp.forbidden"  # a DTD, entity declaration or external reference: refused, not parsed

#: at most this many fields from one packet (a packet of a million empty elements stays cheap downstream)
MAX_FIELDS = 10_000

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_SKIPPED_NS = (RDF_NS, "adobe:ns:meta/", "http://www.w3.org/XML/1998/namespace")

#: namespace URI -> the prefix XMP writers conventionally use (the exif namespace of XMP is ``xmp-exif`` here so it
#: cannot be mistaken for a field of the EXIF IFD, which the readers name ``exif:...``)
PREFIXES = {
    "http://ns.adobe.com/xap/1.0/": "xmp",
    "http://ns.adobe.com/xap/1.0/mm/": "xmpMM",
    "http://ns.adobe.com/xap/1.0/rights/": "xmpRights",
    "http://purl.org/dc/elements/1.1/": "dc",
    "http://ns.adobe.com/photoshop/1.0/": "photoshop",
    "http://ns.adobe.com/tiff/1.0/": "tiff",
    "http://ns.adobe.com/exif/1.0/": "xmp-exif",
    "http://ns.adobe.com/exif/1.0/aux/": "aux",
    "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/": "Iptc4xmpCore",
    "http://iptc.org/std/Iptc4xmpExt/2008-02-29/": "Iptc4xmpExt",
    "http://ns.useplus.org/ldf/xmp/1.0/": "plus",
    "http://ns.adobe.com/xmp/note/": "xmpNote",
}


def _name(tag: str) -> str:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        prefix = PREFIXES.get(uri)
        return f"{prefix}:{local}" if prefix else f"{{{uri[:200]}}}{local}"
    return tag


def _skipped(tag: str) -> bool:
    return tag.startswith("{") and tag[1:].partition("}")[0] in _SKIPPED_NS


def extract_packet(raw: bytes) -> bytes:
    """The XML of a packet: from its first markup to the ``<?xpacket end`` marker (or the last ``>``), without the
    NUL or space padding writers leave around it; empty when there is no markup."""
    start = raw.find(b"<")  # the xpacket PI, an XML declaration, a DOCTYPE (refused later) or the root element
    if start < 0:
        return b""
    end = raw.find(b"<?xpacket end", start)
    if end >= 0:
        close = raw.find(b"?>", end)
        stop = close + 2 if close >= 0 else len(raw)
    else:
        close = raw.rfind(b">")
        stop = close + 1 if close > start else len(raw)
    return raw[start:stop]


def _decode(packet: bytes) -> str:
    if packet[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return packet.decode("utf-16", errors="strict")
    return packet.decode("utf-8", errors="strict").lstrip("\ufeff")


def _walk(root: Element) -> list[tuple[str, str]]:
    """(field, value) for every attribute and every text-bearing element; an ``rdf:li`` item belongs to the
    nearest property element above it."""
    fields: list[tuple[str, str]] = []
    stack: list[tuple[Element, str | None]] = [(root, None)]
    while stack and len(fields) < MAX_FIELDS:
        el, prop = stack.pop()
        tag = el.tag if isinstance(el.tag, str) else ""
        here = prop if _skipped(tag) else _name(tag)
        for key, value in el.attrib.items():
            if not _skipped(key) and value.strip():
                fields.append((_name(key), value.strip()))
        text = (el.text or "").strip()
        if text and here is not None and (not _skipped(tag) or tag == f"{{{RDF_NS}}}li"):
            fields.append((here, text))
        stack.extend((child, here) for child in reversed(list(el)))
    return fields[:MAX_FIELDS]


def parse_xmp(raw: bytes, max_bytes: int) -> tuple[list[tuple[str, str]], list[str]]:
    """Fields of one XMP packet and flags (``xmp.too_large``, ``xmp.malformed``, ``xmp.forbidden``).

    Args:
        raw: the packet bytes as stored (xpacket wrapper and padding allowed).
        max_bytes: a packet longer than this is not parsed (flag ``xmp.too_large``).
    """
    if len(raw) > max_bytes:
        return [], [FLAG_TOO_LARGE]
    packet = extract_packet(bytes(raw))
    if not packet:
        return [], [FLAG_MALFORMED]
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    try:
        root = fromstring(_decode(packet), forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        return [], [FLAG_FORBIDDEN]
    except (ParseError, UnicodeError, ValueError, RecursionError):
        return [], [FLAG_MALFORMED]
    return _walk(root), []
