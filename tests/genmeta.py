"""Seeded generators of small image files carrying metadata (EXIF, XMP, PNG text, comments) for the metadata
evidence tests. Pixels come from Pillow; the metadata containers are assembled byte by byte so tests can also make
broken ones (truncated lengths, bombs, hostile XMP)."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image

XMP_NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "exif": "http://ns.adobe.com/exif/1.0/",
}
IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
EXIF_TAG = {"ImageDescription": 0x010E, "Make": 0x010F, "Model": 0x0110, "Software": 0x0131, "Artist": 0x013B}


def image(seed: int = 0, size: tuple[int, int] = (16, 12)) -> Image.Image:
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))


def encoded(fmt: str, seed: int = 0, size: tuple[int, int] = (16, 12), **params: object) -> bytes:
    buf = io.BytesIO()
    image(seed, size).save(buf, fmt, **params)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ metadata blocks


def xmp_packet(attrs: dict[str, str] | None = None, elems: dict[str, str] | None = None, wrap: bool = True) -> bytes:
    """An XMP packet; keys are 'prefix:Name' with prefixes from XMP_NS; dc:description/dc:creator become rdf:Alt/Seq."""
    decl = " ".join(f'xmlns:{p}="{u}"' for p, u in XMP_NS.items() if p not in ("x", "rdf"))
    attr_text = " ".join(f'{k}="{v}"' for k, v in (attrs or {}).items())
    body = []
    for key, value in (elems or {}).items():
        if key == "dc:description":
            body.append(f'<{key}><rdf:Alt><rdf:li xml:lang="x-default">{value}</rdf:li></rdf:Alt></{key}>')
        elif key == "dc:creator":
            body.append(f"<{key}><rdf:Seq><rdf:li>{value}</rdf:li></rdf:Seq></{key}>")
        else:
            body.append(f"<{key}>{value}</{key}>")
    xml = (
        f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="{XMP_NS["rdf"]}">'
        f'<rdf:Description rdf:about="" {decl} {attr_text}>{"".join(body)}</rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    if wrap:
        xml = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>' + xml + " " * 64 + '<?xpacket end="w"?>'
    return xml.encode("utf-8")


def dst_packet(term: str, tool: str | None = None, as_attr: bool = True) -> bytes:
    value = term if term.startswith("http") else IPTC + term
    props = {"Iptc4xmpExt:DigitalSourceType": value}
    extra = {"xmp:CreatorTool": tool} if tool else {}
    if as_attr:
        return xmp_packet(attrs={**props, **extra})
    return xmp_packet(elems={**props, **extra})


def exif_bytes(ifd0: dict[str, str] | None = None, user_comment: bytes | None = None,
               xp_comment: str | None = None) -> bytes:
    """EXIF (with the Exif\\0\\0 header) holding IFD0 ASCII tags, an Exif sub-IFD UserComment, an XPComment."""
    exif = Image.Exif()
    for name, value in (ifd0 or {}).items():
        exif[EXIF_TAG[name]] = value
    if xp_comment is not None:
        exif[0x9C9C] = xp_comment.encode("utf-16-le") + b"\x00\x00"
    if user_comment is not None:
        exif.get_ifd(0x8769)[0x9286] = user_comment
    return exif.tobytes()


def user_comment(text: str, charset: str = "UNICODE", big_endian: bool = True) -> bytes:
    if charset == "UNICODE":
        return b"UNICODE\x00" + text.encode("utf-16-be" if big_endian else "utf-16-le")
    return b"ASCII\x00\x00\x00" + text.encode("ascii")


# ---------------------------------------------------------------------------------------------------------- JPEG


def jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(segments: list[bytes] = (), seed: int = 0, size: tuple[int, int] = (16, 12)) -> bytes:
    """A baseline JPEG with the given raw segments inserted right after SOI."""
    base = encoded("JPEG", seed, size, quality=80)
    return base[:2] + b"".join(segments) + base[2:]


def jpeg_xmp(packet: bytes) -> bytes:
    return jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet)


def jpeg_extended_xmp(packet: bytes, chunk: int = 60000, guid: bytes = b"0123456789ABCDEF" * 2) -> list[bytes]:
    head = b"http://ns.adobe.com/xmp/extension/\x00"
    return [
        jpeg_segment(0xE1, head + guid + struct.pack(">II", len(packet), off) + packet[off : off + chunk])
        for off in range(0, len(packet), chunk)
    ]


def jpeg_exif(raw_exif: bytes) -> bytes:
    return jpeg_segment(0xE1, raw_exif)


def jpeg_comment(text: str) -> bytes:
    return jpeg_segment(0xFE, text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------- PNG


def png_chunk(ctype: bytes, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return struct.pack(">I", n) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def text_chunk(key: str, value: str) -> bytes:
    return png_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1"))


def ztxt_chunk(key: str, value: bytes) -> bytes:
    return png_chunk(b"zTXt", key.encode("latin-1") + b"\x00\x00" + zlib.compress(value, 9))


def itxt_chunk(key: str, value: bytes, compressed: bool = False) -> bytes:
    payload = zlib.compress(value, 9) if compressed else value
    return png_chunk(b"iTXt", key.encode("latin-1") + b"\x00" + bytes([int(compressed), 0]) + b"\x00\x00" + payload)


def png(chunks: list[bytes] = (), seed: int = 0, size: tuple[int, int] = (16, 12)) -> bytes:
    """A PNG with the given raw chunks inserted right after IHDR."""
    base = encoded("PNG", seed, size)
    return base[:33] + b"".join(chunks) + base[33:]


# ---------------------------------------------------------------------------------------------------------- WebP


def riff_chunk(fourcc: bytes, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return fourcc + struct.pack("<I", n) + body + (b"\x00" if len(body) & 1 else b"")


def webp(chunks: list[bytes] = (), seed: int = 0, size: tuple[int, int] = (16, 12)) -> bytes:
    """A lossy WebP (VP8X + VP8) with the given RIFF chunks appended, the RIFF size fixed up."""
    base = encoded("WEBP", seed, size, quality=80, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00")
    body = base[12:] + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def webp_xmp(packet: bytes) -> bytes:
    return riff_chunk(b"XMP ", packet)


def webp_exif(raw_exif: bytes) -> bytes:
    return riff_chunk(b"EXIF", raw_exif)


# ----------------------------------------------------------------------------------------------------------- GIF


def gif(comment: str | None = None, xmp: bytes | None = None, seed: int = 0) -> bytes:
    base = encoded("GIF", seed, comment=comment.encode("utf-8") if comment else b"")
    if xmp is None:
        return base
    trailer = bytes([1]) + bytes(range(255, -1, -1)) + b"\x00"  # the XMP "magic trailer" of the GIF embedding
    ext = b"\x21\xff\x0bXMP DataXMP" + xmp + trailer
    return base[:-1] + ext + base[-1:]


# -------------------------------------------------------------------------------------------------------- hostile


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE x:xmpmeta [<!ENTITY a "trainedAlgorithmicMedia">'
    + b"".join(b'<!ENTITY %s "%s">' % (bytes([98 + i]), (b"&" + bytes([97 + i]) + b";") * 10) for i in range(9))
    + b']><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
    b"<Iptc4xmpExt:DigitalSourceType>&j;</Iptc4xmpExt:DigitalSourceType></rdf:Description></rdf:RDF></x:xmpmeta>"
)


def external_entity_packet(path: str) -> bytes:
    return (
        f'<?xml version="1.0"?><!DOCTYPE x:xmpmeta [<!ENTITY ext SYSTEM "file://{path}">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        "<Iptc4xmpExt:DigitalSourceType>&ext;</Iptc4xmpExt:DigitalSourceType></rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def big_xmp(n_bytes: int) -> bytes:
    """A well-formed XMP packet of about n_bytes, declaring trainedAlgorithmicMedia (so parsing it would show)."""
    head = dst_packet("trainedAlgorithmicMedia")
    pad = b"<!--" + b"x" * max(0, n_bytes - len(head) - 7) + b"-->"
    return head.replace(b"</rdf:RDF>", pad + b"</rdf:RDF>")


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random corruption: flipped bytes, a cut, an insertion, a duplicated or zeroed span."""
    b = bytearray(data)
    op = rng.randrange(5)
    if op == 0:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 1:
        del b[rng.randrange(1, len(b)) :]
    elif op == 2:
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif op == 3:
        a = rng.randrange(len(b))
        b[a:a] = b[a : a + rng.randint(1, 256)]
    else:
        a = rng.randrange(len(b))
        b[a : a + rng.randint(1, 32)] = b"\xff" * 4 if rng.random() < 0.5 else b"\x00" * 8
    return bytes(b)
