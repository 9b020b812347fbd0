"""Per-file outcomes of read + decode + patch selection: every bad file is a precise row, never an exception."""

import io
import os

import numpy as np
import pytest
from PIL import Image

import genimages as gen
from gcage_fast.config import Limits
from gcage_fast.ingest.decode import DecodeFailure, decode_rgb
from gcage_fast.ingest.prepare import PrepareTask, prepare


def run(path, top_k=5, **kw):
    return prepare(PrepareTask(0, os.fsencode(str(path)), top_k, **kw))


@pytest.mark.parametrize("make,status,code", [
    (lambda p: gen.zero_byte(p / "a.jpg"), "error", "decode.empty"),
    (lambda p: gen.not_an_image(p / "a.jpg"), "error", "decode.unidentified"),
    (lambda p: gen.truncated(p / "a.jpg", "JPEG", 1), "error", "decode.truncated"),
    (lambda p: gen.truncated(p / "a.png", "PNG", 2), "error", "decode.truncated"),
    (lambda p: gen.truncated(p / "a.webp", "WEBP", 3), "error", "decode.truncated"),
    (lambda p: gen.float_tiff(p / "a.tif", 4), "error", "decode.unsupported_mode"),
    (lambda p: gen.pdf_named_jpg(p / "a.jpg"), "skipped", "decode.format_not_allowed"),
    (lambda p: p / "does-not-exist.jpg", "error", "fs.vanished"),
    (lambda p: p, "skipped", "fs.not_regular"),
])
def test_bad_files_become_rows(tmp_path, make, status, code):
    out = run(make(tmp_path))
    assert (out.status, out.error_code) == (status, code), out.error_detail
    assert out.patches is None and out.boxes is None


def test_truncated_keeps_hash_and_size(tmp_path):
    p = gen.truncated(tmp_path / "t.jpg", "JPEG", 5)
    out = run(p)
    assert out.error_code == "decode.truncated"
    assert out.size_bytes == p.stat().st_size and len(out.sha256) == 64
    assert "truncated" in out.error_detail


def test_limits(tmp_path):
    p = gen.save_image(tmp_path / "big.png", 1000, 800, 1, "PNG")
    assert run(p, limits=Limits(max_pixels=500_000)).error_code == "limit.pixels"
    assert run(p, limits=Limits(max_bytes=1000)).error_code == "limit.bytes"
    assert run(p, limits=Limits(formats=("JPEG",))).error_code == "decode.format_not_allowed"


def test_small_image_policy(tmp_path):
    p = gen.save_image(tmp_path / "s.jpg", 150, 100, 1)
    padded = run(p)
    assert padded.status == "ok" and padded.padded is True and padded.patches.shape == (1, 224, 224, 3)
    assert (padded.width, padded.height) == (150, 100)
    skipped = run(p, small_images="skip")
    assert (skipped.status, skipped.error_code) == ("skipped", "limit.too_small")
    assert skipped.width == 150 and skipped.sha256 == padded.sha256


@pytest.mark.parametrize("fmt,mode", [("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "LA"), ("WEBP", "RGB"),
                                      ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("JPEG", "CMYK"),
                                      ("JPEG", "L")])
def test_modes_decode_to_rgb(tmp_path, fmt, mode):
    p = gen.save_image(tmp_path / f"x.{fmt.lower()}", 500, 300, 7, fmt, mode)
    out = run(p)
    assert out.status == "ok", out.error_detail
    assert out.mode == mode and out.format == fmt
    assert out.patches.dtype == np.uint8 and out.patches.shape == (2, 224, 224, 3)
    expected = np.asarray(Image.open(p).convert("RGB"))
    x, y = out.boxes[0]
    np.testing.assert_array_equal(out.patches[0], expected[y:y + 224, x:x + 224])


def test_sixteen_bit_gray_keeps_its_range(tmp_path):
    p = gen.gray16_png(tmp_path / "g.png", 300, 300, 3)
    out = run(p)
    assert out.status == "ok" and out.mode == "I;16"
    hi = (np.asarray(Image.open(p)).astype(np.uint32) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(out.patches[0][..., 0], hi[:224, :224])
    assert out.patches.max() > 200  # Pillow's own conversion would have clipped everything to 255


@pytest.mark.parametrize("orientation,swapped", [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation_applied(tmp_path, orientation, swapped):
    p = gen.exif_jpeg(tmp_path / "o.jpg", 500, 260, 2, orientation)
    out = run(p)
    assert out.status == "ok"
    assert (out.width, out.height) == ((260, 500) if swapped else (500, 260))


def test_animated_gif_first_frame(tmp_path):
    out = run(gen.animated_gif(tmp_path / "a.gif", 1, frames=3))
    assert out.status == "ok" and out.n_frames == 3 and out.frames_scanned == 1


@pytest.mark.parametrize("size", [(97, 61), (640, 480), (1001, 333)])
@pytest.mark.parametrize("save", [
    {"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"subsampling": 2, "progressive": True},
    {"subsampling": 2, "optimize": True, "quality": 60}, {"subsampling": 1, "restart_marker_rows": 1},
])
def test_fast_jpeg_path_is_pixel_identical_to_pillow(size, save, monkeypatch):
    """RGB JPEGs are decoded by simplejpeg when it is installed; it must give Pillow's pixels exactly."""
    pytest.importorskip("simplejpeg")
    from gcage_fast.ingest import decode

    buf = io.BytesIO()
    Image.fromarray(gen.photo_like(*size, seed=size[0])).save(buf, "JPEG", quality=save.pop("quality", 90), **save)
    data = buf.getvalue()
    assert decode._fast_jpeg(data, "JPEG", "RGB", *size) is not None  # the fast path is taken
    fast = decode_rgb(data, Limits())
    monkeypatch.setattr(decode, "_simplejpeg", None)
    slow = decode_rgb(data, Limits())
    assert np.array_equal(fast.rgb, slow.rgb)
    assert (fast.format, fast.mode, fast.flags, fast.orientation) == (slow.format, slow.mode, slow.flags,
                                                                        slow.orientation)


def test_fast_jpeg_path_defers_to_pillow_on_any_complaint(monkeypatch):
    pytest.importorskip("simplejpeg")
    from gcage_fast.ingest import decode

    buf = io.BytesIO()
    Image.fromarray(gen.photo_like(300, 200, seed=3)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    cut = data[: len(data) * 2 // 3]  # truncated: libjpeg-turbo only warns; strict mode refuses
    assert decode._fast_jpeg(cut, "JPEG", "RGB", 300, 200) is None
    with pytest.raises(DecodeFailure) as fast:
        decode_rgb(cut, Limits())
    monkeypatch.setattr(decode, "_simplejpeg", None)
    with pytest.raises(DecodeFailure) as slow:
        decode_rgb(cut, Limits())
    assert fast.value.code == slow.value.code
