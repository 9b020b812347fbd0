"""The container walks the metadata readers and the C2PA pre-check share: blocks found and how each walk ends."""

from __future__ import annotations

import struct

from gcage_fast.evidence.containers import jpeg_segments, png_chunks, riff_chunks

SOI, SOS, EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


def seg(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + b"\0\0\0\0"


def riff(*chunks: bytes, size: int | None = None) -> bytes:
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def fourcc(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def test_jpeg():
    data = SOI + seg(0xE1, b"abc") + b"\xff\xd0" + b"\xff\xff" + seg(0xFE, b"hi") + SOS + b"scan"
    walk = jpeg_segments(data)
    assert [(m, data[s:e]) for m, s, e in walk.blocks] == [(0xE1, b"abc"), (0xFE, b"hi")]
    assert (walk.status, data[walk.where:walk.where + 2]) == ("done", SOS)
    assert jpeg_segments(SOI + seg(0xE1, b"abc") + EOI).status == "done"
    assert jpeg_segments(SOI + seg(0xE1, b"abc")).status == "done"  # the data ends between segments
    assert jpeg_segments(SOI + seg(0xE1, b"abcdef")[:-2]).status == "truncated"
    assert jpeg_segments(SOI + b"\xff\xe1\x00").status == "truncated"
    assert jpeg_segments(SOI + b"junk").status == "malformed"
    assert jpeg_segments(SOI + b"\xff\xe1\x00\x01xx").status == "malformed"
    assert jpeg_segments(SOI + seg(0xFE, b"") * 5 + SOS, max_blocks=3).status == "limit"


def test_png():
    sig = b"\x89PNG\r\n\x1a\n"
    data = sig + chunk(b"tEXt", b"k\0v") + chunk(b"IEND", b"") + b"trailing"
    walk = png_chunks(data)
    assert [(k, data[s:e]) for k, s, e in walk.blocks] == [(b"tEXt", b"k\0v"), (b"IEND", b"")]
    assert (walk.status, data[walk.where:]) == ("done", b"trailing")
    assert png_chunks(sig + chunk(b"tEXt", b"x") + chunk(b"IEND", b"")[:-4]).status == "done"  # IEND without CRC
    assert png_chunks(sig + chunk(b"tEXt", b"x")).status == "done"
    assert png_chunks(sig + chunk(b"tEXt", b"xyz")[:-5]).status == "truncated"
    assert png_chunks(sig + chunk(b"tEXt", b"x") + b"abc").status == "truncated"
    assert png_chunks(sig + chunk(b"tEXt", b"") * 5, max_blocks=2).status == "limit"


def test_riff():
    data = riff(fourcc(b"VP8 ", b"abc"), fourcc(b"XMP ", b"<x/>")) + b"after"
    walk = riff_chunks(data)
    assert [(k, data[s:e]) for k, s, e in walk.blocks] == [(b"VP8 ", b"abc"), (b"XMP ", b"<x/>")]
    assert (walk.status, data[walk.where:]) == ("done", b"after")  # bytes after the RIFF size are not walked
    assert riff_chunks(riff(fourcc(b"EXIF", b"abcdef"))[:-3]).status == "truncated"
    assert riff_chunks(riff(fourcc(b"VP8 ", b""), fourcc(b"XMP ", b"x"), size=200)).status == "done"
    assert riff_chunks(riff(*[fourcc(b"JUNK", b"")] * 5), max_blocks=2).status == "limit"
