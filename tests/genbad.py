"""Seeded generators of hostile and odd inputs (RELIABILITY.md §1). Nothing binary is committed."""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

import genimages as gen


def _png(width: int, height: int, bit_depth: int, color_type: int, idat: bytes, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + gen.png_chunk(b"IHDR", ihdr) + extra + gen.png_chunk(b"IDAT", idat)
            + gen.png_chunk(b"IEND", b""))


def pixel_bomb(path: Path, side: int = 20000) -> Path:
    """A tiny PNG whose header claims side×side 1-bit pixels (48 kB for 20000²)."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return gen.write(path, _png(side, side, 1, 0, idat))


def text_chunk_bomb(path: Path) -> Path:
    """A valid 8×8 PNG with a zTXt chunk that inflates to 4 MiB."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    body = b"k\x00\x00" + zlib.compress(b"A" * (4 << 20), 9)
    data = buf.getvalue()
    at = data.index(b"IEND") - 4
    return gen.write(path, data[:at] + gen.png_chunk(b"zTXt", body) + data[at:])


def magic_file(path: Path, magic: bytes) -> Path:
    return gen.write(path, magic + bytes(np.random.default_rng(len(magic)).integers(0, 256, 200, dtype=np.uint8)))


def random_bytes(path: Path, seed: int, n: int = 4096) -> Path:
    return gen.write(path, np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


def jpeg_cut_before_eoi(path: Path, seed: int) -> Path:
    data = gen.encode(gen.photo_like(300, 240, seed), "JPEG")
    return gen.write(path, data[:-3])


def png_flipped_idat(path: Path, seed: int) -> Path:
    data = bytearray(gen.encode(gen.photo_like(300, 240, seed), "PNG"))
    at = data.index(b"IDAT") + 200
    data[at] ^= 0xFF
    return gen.write(path, bytes(data))


def appended_zip(path: Path, seed: int) -> Path:
    """A JPEG with a zip archive appended after its EOI (a polyglot)."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hidden.txt", "payload")
    return gen.write(path, gen.encode(gen.photo_like(300, 260, seed), "JPEG") + buf.getvalue())


def png_as_jpg(path: Path, seed: int) -> Path:
    return gen.write(path, gen.encode(gen.photo_like(260, 240, seed), "PNG"))


def tiff_as_png(path: Path, seed: int) -> Path:
    return gen.write(path, gen.encode(gen.photo_like(260, 240, seed), "TIFF"))


def sized_png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return gen.write(path, gen.encode(arr, "PNG"))


def zero_width_png(path: Path) -> Path:
    return gen.write(path, _png(0, 5, 8, 2, zlib.compress(b"")))


def exif_raw(path: Path, seed: int, orientation_bytes: bytes) -> Path:
    """A JPEG whose EXIF orientation entry holds an arbitrary (possibly invalid) value."""
    img = Image.fromarray(gen.photo_like(320, 240, seed))
    tiff = (b"MM\x00*\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01" + orientation_bytes
            + b"\x00\x00" + b"\x00\x00\x00\x00")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=b"Exif\x00\x00" + tiff)
    return gen.write(path, buf.getvalue())


def doubled_exif_header(path: Path, seed: int) -> Path:
    img = Image.fromarray(gen.photo_like(320, 240, seed))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=b"Exif\x00\x00Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00")
    return gen.write(path, buf.getvalue())


def palette_trns(path: Path, seed: int) -> Path:
    img = Image.fromarray(gen.photo_like(300, 240, seed)).quantize(colors=16)
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0)
    return gen.write(path, buf.getvalue())


def transparent_rgba(path: Path, seed: int) -> Path:
    arr = np.dstack([gen.photo_like(300, 240, seed), np.zeros((240, 300), np.uint8)])
    return gen.write(path, gen.encode(arr, "PNG"))


def one_bit(path: Path, seed: int) -> Path:
    img = Image.fromarray(gen.photo_like(300, 240, seed)).convert("1")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return gen.write(path, buf.getvalue())


def many_frame_gif(path: Path, frames: int = 2000) -> Path:
    """A tiny GIF with many frames (alternating, so the encoder cannot merge them): 74 kB for 2000."""
    a = Image.new("P", (2, 2), 0)
    a.putpalette([0, 0, 0, 255, 255, 255])
    b = a.copy()
    b.putpixel((0, 0), 1)
    buf = io.BytesIO()
    a.save(buf, "GIF", save_all=True, append_images=[b if i % 2 else a for i in range(1, frames)], duration=10)
    return gen.write(path, buf.getvalue())


def png_with_hostile_text(path: Path, seed: int) -> Path:
    info = PngImagePlugin.PngInfo()
    for i, text in enumerate(["\x1b]0;pwned\x07", "=cmd|' /C calc'!A0", "'; DROP TABLE scans;--"]):
        info.add_text(f"Comment{i}", text)
    buf = io.BytesIO()
    Image.fromarray(gen.photo_like(260, 240, seed)).save(buf, "PNG", pnginfo=info)
    return gen.write(path, buf.getvalue())


def unix_socket(path: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the socket file stays
    return path


def weird_names(root: Path, seed: int) -> list[bytes]:
    """Files with non-UTF-8 bytes and control characters in their names."""
    names = [b"caf\xe9.jpg", b"new\nline.jpg", b"\x1b[2Jclear.jpg", b"tab\tname.jpg"]
    data = gen.encode(gen.photo_like(240, 240, seed), "JPEG")
    out = []
    for n in names:
        p = os.fsencode(root) + b"/" + n
        with open(p, "wb") as fh:
            fh.write(data)
        out.append(p)
    return out
