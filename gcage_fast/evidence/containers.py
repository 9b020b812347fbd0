"""The block structure of the containers that carry metadata: JPEG marker segments, PNG chunks, RIFF (WebP)
chunks. One walk per format, shared by the metadata readers and the C2PA pre-check; each returns the blocks it
found and how it ended, and never reads past the data or more than ``max_blocks`` blocks. Pure Python.

A block is ``(kind, start, end)``: the JPEG marker byte (an int) or the chunk type (bytes), and the span of its
payload in ``data``. How a walk ends:

- ``done``: the structure ended where it should (JPEG: the first SOS or EOI, at ``where``; PNG: IEND, ``where``
  just after it; RIFF: the end of the RIFF size), or the data ended exactly between two blocks;
- ``truncated``: a block's declared length runs past the data, or bytes too few for a block header are left;
- ``malformed``: a JPEG segment does not start with a marker, or its length is below 2;
- ``limit``: ``max_blocks`` blocks were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Walk", "MAX_BLOCKS", "jpeg_segments", "png_chunks", "riff_chunks"]

MAX_BLOCKS = 200_000  # blocks walked at most (a file of a million empty chunks stays cheap)
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RSTn: markers without a length


@dataclass
class Walk:
    """The blocks of one container and how the walk ended (module docstring)."""

    blocks: list[tuple[int | bytes, int, int]] = field(default_factory=list)
    status: str = "done"
    where: int = 0  # where the walk stopped


def jpeg_segments(data: bytes, max_blocks: int = MAX_BLOCKS) -> Walk:
    """The marker segments of a JPEG, from after SOI to the first SOS or EOI (the metadata lives there)."""
    walk, i, n = Walk(), 2, len(data)
    while len(walk.blocks) < max_blocks:
        if i + 2 > n:
            walk.status, walk.where = ("done" if i >= n else "truncated"), i
            return walk
        if data[i] != 0xFF:
            walk.status, walk.where = "malformed", i
            return walk
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI, SOS: no metadata segment after this point
            walk.where = i
            return walk
        if i + 4 > n:
            walk.status, walk.where = "truncated", i
            return walk
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            walk.status, walk.where = "malformed", i
            return walk
        if i + 2 + length > n:
            walk.status, walk.where = "truncated", i
            return walk
        walk.blocks.append((marker, i + 4, i + 2 + length))
        i += 2 + length
    walk.status, walk.where = "limit", i
    return walk


def png_chunks(data: bytes, max_blocks: int = MAX_BLOCKS) -> Walk:
    """The chunks of a PNG, after the signature, up to and including IEND (an IEND without its CRC counts)."""
    walk, i, n = Walk(), 8, len(data)
    while len(walk.blocks) < max_blocks:
        if i + 8 > n:
            walk.status, walk.where = ("done" if i >= n else "truncated"), i
            return walk
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        end = i + 8 + length
        if end + 4 > n and not (kind == b"IEND" and end <= n):
            walk.status, walk.where = "truncated", i
            return walk
        walk.blocks.append((kind, i + 8, end))
        i = min(end + 4, n)
        if kind == b"IEND":
            walk.where = i
            return walk
    walk.status, walk.where = "limit", i
    return walk


def riff_chunks(data: bytes, max_blocks: int = MAX_BLOCKS) -> Walk:
    """The chunks of a RIFF file (WebP) inside its declared RIFF size (or the data, when that is shorter)."""
    walk, i = Walk(), 12
    n = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    while len(walk.blocks) < max_blocks:
        if i + 8 > n:  # fewer bytes than a chunk header: padding, or the end
            walk.where = i
            return walk
        length = int.from_bytes(data[i + 4:i + 8], "little")
        if i + 8 + length > len(data):
            walk.status, walk.where = "truncated", i
            return walk
        walk.blocks.append((data[i:i + 4], i + 8, i + 8 + length))
        i += 8 + length + (length & 1)
    walk.status, walk.where = "limit", i
    return walk
