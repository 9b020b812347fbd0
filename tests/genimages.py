"""Seeded generators of test images and broken files (nothing binary is committed)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo_like(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth colour field + stripes + sensor-like noise: JPEG-realistic content with varied patch contrast."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(2, height // 48), max(2, width // 48), 3), dtype=np.uint8)
    out = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    amp = rng.uniform(5, 40)
    out += (np.sin(np.arange(width) / rng.uniform(3, 30)) * amp).astype(np.int16)[None, :, None]
    out += (np.cos(np.arange(height) / rng.uniform(3, 30)) * amp).astype(np.int16)[:, None, None]
    sigma = int(rng.integers(1, 13))
    out += rng.integers(-sigma, sigma + 1, size=out.shape, dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode(arr: np.ndarray, fmt: str, mode: str = "RGB", **kw) -> bytes:
    img = Image.fromarray(arr)
    if mode == "P":
        img = img.quantize(colors=64, method=Image.Quantize.FASTOCTREE)
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    if fmt == "JPEG":
        kw.setdefault("quality", 90)
    elif fmt == "PNG":
        kw.setdefault("compress_level", 1)
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def save_image(path: Path, width: int, height: int, seed: int, fmt: str = "JPEG", mode: str = "RGB") -> Path:
    return write(path, encode(photo_like(width, height, seed), fmt, mode))


# ---------------------------------------------------------------------------------------- broken files
def zero_byte(path: Path) -> Path:
    return write(path, b"")


def not_an_image(path: Path) -> Path:
    return write(path, b"<html><body>404 Not Found</body></html>\n")


def truncated(path: Path, fmt: str, seed: int, keep: float = 0.5) -> Path:
    data = encode(photo_like(400, 300, seed), fmt)
    return write(path, data[: int(len(data) * keep)])


def float_tiff(path: Path, seed: int) -> Path:
    """A valid TIFF in mode F (32-bit float): a mode the scanner refuses."""
    arr = np.random.default_rng(seed).random((240, 260), dtype=np.float32)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="F").save(buf, "TIFF")
    return write(path, buf.getvalue())


def pdf_named_jpg(path: Path) -> Path:
    return write(path, b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n")


def gray16_png(path: Path, width: int, height: int, seed: int) -> Path:
    arr = (photo_like(width, height, seed)[..., 0].astype(np.uint16) * 257)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return write(path, buf.getvalue())


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def exif_jpeg(path: Path, width: int, height: int, seed: int, orientation: int) -> Path:
    img = Image.fromarray(photo_like(width, height, seed))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return write(path, buf.getvalue())


def animated_gif(path: Path, seed: int, frames: int = 3) -> Path:
    imgs = [Image.fromarray(photo_like(250, 240, seed + i)).quantize(colors=32) for i in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "GIF", save_all=True, append_images=imgs[1:], duration=50)
    return write(path, buf.getvalue())


def unreadable(path: Path, seed: int) -> Path:
    p = save_image(path, 300, 300, seed)
    os.chmod(p, 0)
    return p


# ---------------------------------------------------------------------------------------- corpora
def make_corpus(root: Path, n_images: int = 210, seed: int = 0, broken: bool = True) -> dict[str, tuple[str, str | None]]:
    """A directory of ``n_images`` valid images (100x100 .. 2000x1500; JPEG/PNG/WebP; RGB/L/RGBA/P) in nested
    folders, plus one of each broken kind. Returns {path: (expected status, expected error_code)}."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    expected: dict[str, tuple[str, str | None]] = {}
    kinds = [("JPEG", "RGB", "jpg")] * 6 + [("JPEG", "L", "jpg"), ("PNG", "RGB", "png"), ("PNG", "RGBA", "png"),
                                             ("PNG", "P", "png"), ("PNG", "L", "png"), ("WEBP", "RGB", "webp")]
    for i in range(n_images):
        fmt, mode, ext = kinds[i % len(kinds)]
        if i == 0:
            w, h = 100, 100
        elif i == 1:
            w, h = 2000, 1500
        else:
            w, h = int(rng.integers(100, 2001)), int(rng.integers(100, 1501))
            if fmt != "JPEG":  # keep lossless encodes quick
                w, h = min(w, 700), min(h, 560)
        p = save_image(root / f"set{i % 5}" / f"img_{i:04d}.{ext}", w, h, seed * 10_000 + i, fmt, mode)
        expected[str(p)] = ("ok", None)
    if broken:
        bad = root / "broken"
        for p, code in [
            (zero_byte(bad / "empty.jpg"), "decode.empty"),
            (not_an_image(bad / "page.jpg"), "decode.unidentified"),
            (truncated(bad / "cut.jpg", "JPEG", seed + 1), "decode.truncated"),
            (truncated(bad / "cut.png", "PNG", seed + 2), "decode.truncated"),
            (float_tiff(bad / "float.tif", seed + 3), "decode.unsupported_mode"),
        ]:
            expected[str(p)] = ("error", code)
    return expected


def fake_like(width: int, height: int, seed: int) -> np.ndarray:
    """photo_like content plus a faint 2-pixel checkerboard, the classic up-sampling artefact of generators."""
    base = photo_like(width, height, seed).astype(np.int16)
    yy, xx = np.indices((height, width))
    base += (((yy // 2 + xx // 2) % 2) * 12 - 6)[..., None].astype(np.int16)
    return np.clip(base, 0, 255).astype(np.uint8)


def make_labelled_set(root: Path, n_per_class: int = 30, seed: int = 0, size: int = 240) -> Path:
    """A small ``ai/<generator>/`` + ``real/`` set that a detector can learn (fakes carry a checkerboard)."""
    root = Path(root)
    for i in range(n_per_class):
        write(root / "ai" / "checkers" / f"f{i:03d}.png", encode(fake_like(size, size, seed * 1000 + i), "PNG"))
        write(root / "real" / f"r{i:03d}.png", encode(photo_like(size, size, seed * 1000 + 500 + i), "PNG"))
    return root
