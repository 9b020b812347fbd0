"""Image formats recognised from content (magic numbers), never from a file name. Pure Python.

The decoder (gcage_fast.ingest.decode) uses the name for its error rows and the evidence readers
(gcage_fast.evidence) to choose the container walker.
"""

from __future__ import annotations

__all__ = ["sniff_format"]

# Magic numbers of formats we recognise but do not decode (for a precise "skipped" row instead of "not an image").
_MAGIC = (
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "PSD"),
    (0, b"SIMPLE  =", "FITS"),
    (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG2000"),
    (0, b"\xff\x4f\xff\x51", "JPEG2000"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (4, b"ftypheic", "HEIF"),
    (4, b"ftypheix", "HEIF"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """Best-effort name of the format from magic bytes (``RIFF....WEBP`` included), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for offset, magic, name in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return name
    return None
