"""The dwtDct watermark detector: images watermarked here with imwatermark's own encoder are found with the right
generator, clean photographs and flat images are not, the vectorised decoder matches the package bit for bit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gcage_fast.errors import ConfigError, MissingDependencyError
from gcage_fast.evidence import watermark as wm
from gcage_fast.evidence.watermark import check_watermark_support, detect_watermarks

imwatermark = pytest.importorskip("imwatermark")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
V1 = "Stable Diffusion v1/v2"
XL = "Stable Diffusion XL"


def natural(h: int, w: int, seed: int) -> np.ndarray:
    """A seeded natural-looking RGB image: smooth gradients, soft shapes and mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.empty((h, w, 3))
    for c in range(3):
        a, b, f = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(2, 6)
        img[:, :, c] = 128 + 60 * np.sin(f * np.pi * (a * x / w + b * y / h) + rng.uniform(0, 6))
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.03, 0.2) * min(h, w)
        mask = np.clip(1 - np.hypot(y - cy, x - cx) / r, 0, 1) ** 0.5
        img += mask[:, :, None] * rng.uniform(-80, 80, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, message: str, swap: bool = False) -> np.ndarray:
    """``rgb`` watermarked as the reference scripts do (RGB -> BGR, encode, back); ``swap``: RGB passed straight
    to the encoder, as several diffusers releases do."""
    enc = imwatermark.WatermarkEncoder()
    if message == "v1":
        enc.set_watermark("bytes", b"StableDiffusionV1")
    else:
        enc.set_watermark("bits", [int(b) for b in bin(wm.SDXL_MESSAGE)[2:]])
    if swap:
        return enc.encode(rgb.copy(), "dwtDct")
    return np.ascontiguousarray(enc.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")[:, :, ::-1])


def roundtrip(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """``rgb`` saved and loaded as PNG, JPEG (quality 95, Pillow's default 4:2:0 chroma) or JPEG444 (4:4:4)."""
    buf = io.BytesIO()
    if fmt == "PNG":
        Image.fromarray(rgb).save(buf, "PNG")
    else:
        Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=0 if fmt == "JPEG444" else 2)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB"))


def matches(rgb: np.ndarray) -> tuple[int, int]:
    """(v1 matching bits of 136, SDXL matching bits of 48), the best of both channel orders."""
    v1, xl = wm._MESSAGES["sd"]
    best = [0, 0]
    for img in (np.ascontiguousarray(rgb[:, :, ::-1]), rgb):
        bits = wm.block_bits(img)
        best[0] = max(best[0], int(np.count_nonzero(wm.vote(bits, 136) == v1.bits)))
        best[1] = max(best[1], int(np.count_nonzero(wm.vote(bits, 48) == xl.bits)))
    return best[0], best[1]


SIZES = [(512, 512), (768, 768), (601, 853)]
#: The cases the watermark does not survive (measured): JPEG 95 with 4:2:0 chroma halves the U channel's resolution
#: and v1's 136 bits get fewer votes each than SDXL's 48; this one decodes 95/136 (threshold 97).
MISSED = {("v1", (512, 512), "JPEG")}


def watermarked(message: str, size: tuple[int, int], fmt: str) -> np.ndarray:
    return roundtrip(encode(natural(*size, seed=size[0] + 2), message), fmt)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG444", "JPEG"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("message,generator", [("v1", V1), ("xl", XL)])
def test_watermarked_images_are_detected(message, generator, size, fmt):
    evidence, flags = detect_watermarks(watermarked(message, size, fmt))
    assert flags == []
    if (message, size, fmt) in MISSED:
        assert evidence == []
        return
    assert [(e.kind, e.claim, e.generator, e.strength) for e in evidence] == [
        ("watermark", "ai_generated", generator, "detected")]
    if message == "xl":
        assert evidence[0].detail.startswith("dwtDct SDXL message: ")
        assert evidence[0].detail.endswith(" bits match (very likely)")
    else:
        assert evidence[0].detail.startswith("dwtDct 'StableDiffusionV1': ")
        assert evidence[0].detail.endswith("/136 bits match")


def test_v1_image_is_not_read_as_sdxl():
    """Cross-talk: 48 and 136 share the factor 8, so a v1 image's 48-bit vote is a fold of the v1 message; after
    JPEG this one reads 35/48 (the "likely" bucket), and the per-block agreement still names v1."""
    rgb = watermarked("v1", (768, 768), "JPEG")
    assert matches(rgb) == (107, 35)
    assert [(e.generator, e.detail) for e in detect_watermarks(rgb)[0]] == [
        (V1, "dwtDct 'StableDiffusionV1': 107/136 bits match")]


@pytest.mark.parametrize("message,generator", [("v1", V1), ("xl", XL)])
def test_channel_swapped_encoding_is_detected(message, generator):
    evidence, flags = detect_watermarks(roundtrip(encode(natural(512, 640, seed=7), message, swap=True), "PNG"))
    assert [e.generator for e in evidence] == [generator]
    assert evidence[0].detail.endswith(" (channels swapped)")
    assert flags == []


def test_large_image_is_decoded_on_its_top_rows():
    rgb = encode(natural(2304, 2048, seed=11), "xl")
    assert rgb.shape[0] * rgb.shape[1] > wm.MAX_DECODE_PIXELS
    assert wm._bounded(rgb).shape == (2048, 2048, 3)
    evidence, flags = detect_watermarks(rgb)
    assert (evidence, flags) == detect_watermarks(rgb[:2048])
    assert [e.generator for e in evidence] == [XL]


@pytest.mark.parametrize("size", [(257, 301), (512, 512), (1000, 750), (300, 300)], ids=str)
@pytest.mark.parametrize("kind", ["noise", "v1", "xl"])
def test_vectorised_decoder_matches_the_package(size, kind):
    rng = np.random.default_rng(size[0] * size[1])
    if kind == "noise":
        bgr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    else:
        bgr = np.ascontiguousarray(roundtrip(encode(natural(*size, seed=5), kind), "JPEG")[:, :, ::-1])
    bits = wm.block_bits(bgr)
    for length in (48, 136):
        ref = np.asarray(imwatermark.WatermarkDecoder("bits", length).decode(bgr, "dwtDct"), dtype=bool)
        np.testing.assert_array_equal(wm.vote(bits, length), ref)


def test_constant_decodes_cannot_pass():
    v1, xl = wm._MESSAGES["sd"]
    for message in (v1, xl):
        zeros = int(np.count_nonzero(~message.bits))
        assert max(zeros, message.bits.size - zeros) < message.threshold
        assert message.partial is None or max(zeros, message.bits.size - zeros) < message.partial
    assert (int(np.count_nonzero(~v1.bits)), int(np.count_nonzero(~xl.bits))) == (68, 21)


@pytest.mark.parametrize("value", [0, 255, 128])
def test_flat_images_give_nothing(value):
    assert detect_watermarks(np.full((512, 512, 3), value, dtype=np.uint8)) == ([], [])


@pytest.mark.parametrize("seed", range(4))
def test_noise_gives_no_evidence(seed):
    noise = np.random.default_rng(seed).integers(0, 256, (512, 768, 3), dtype=np.uint8)
    evidence, flags = detect_watermarks(noise)
    assert evidence == []
    assert set(flags) <= {"watermark.partial"}


def test_clean_natural_image_gives_nothing():
    assert detect_watermarks(natural(512, 512, seed=3))[0] == []


def _real_photos() -> list[Path]:
    broad = sorted((DATA / "broad" / "real").glob("*/*"))
    faces = sorted((DATA / "faces" / "real").glob("*/*"))
    # every 12th broad photograph (all four sources) and every 60th face photograph
    return broad[::12] + faces[::60]


@pytest.mark.skipif(not (DATA / "broad" / "real").is_dir(), reason="needs ../shared/data")
def test_real_photographs_give_no_detection():
    photos = _real_photos()
    assert len(photos) >= 20
    checked, top = 0, (0, 0)
    for path in photos:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        evidence, flags = detect_watermarks(rgb)
        assert evidence == [], path
        if "watermark.too_small" in flags:
            continue
        checked += 1
        m = matches(rgb)
        top = (max(top[0], m[0]), max(top[1], m[1]))
    assert checked >= 20
    assert top[0] < 97 and top[1] < 34


# Files of the broad set that carry the SDXL watermark (found by the survey): kolors' repository ships SDXL
# comparison outputs made with diffusers, which encoded the RGB array as if it were BGR.
SDXL_FILES = {
    "ai/sdxl/kolors_controlnet_outputs_Canny_woman_1_sdxl.jpg": "dwtDct SDXL message: 38/48 bits match (very likely) "
                                                               "(channels swapped)",
    "ai/sdxl/kolors_controlnet_outputs_Pose_woman_3_sdxl.jpg": "dwtDct SDXL message: 48/48 bits match (very likely) "
                                                              "(channels swapped)",
}


@pytest.mark.parametrize("relpath", sorted(SDXL_FILES))
def test_sdxl_files_of_the_broad_set_are_detected(relpath):
    path = DATA / "broad" / relpath
    if not path.is_file():
        pytest.skip("needs ../shared/data/broad")
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    evidence, flags = detect_watermarks(rgb)
    assert [(e.generator, e.detail) for e in evidence] == [(XL, SDXL_FILES[relpath])]
    assert flags == []


@pytest.mark.parametrize("shape", [(255, 256, 3), (200, 200, 3), (4, 20000, 3), (20000, 4, 3)])
def test_small_or_thin_images_are_flagged(shape):
    assert detect_watermarks(np.zeros(shape, dtype=np.uint8)) == ([], ["watermark.too_small"])


def test_decoder_failure_is_a_flag(monkeypatch):
    def boom(_bgr):
        raise RuntimeError("broken decoder")

    monkeypatch.setattr(wm, "block_bits", boom)
    assert detect_watermarks(natural(300, 300, seed=1)) == ([], ["watermark.error"])


@pytest.mark.parametrize("pixels", [np.zeros((300, 300, 3), dtype=np.float32), np.zeros((300, 300, 2), np.uint8),
                                    "not an array"], ids=["float", "two-channel", "str"])
def test_unusable_pixels_are_a_flag(pixels):
    assert detect_watermarks(pixels) == ([], ["watermark.error"])


def test_grey_and_rgba_pixels_are_read():
    rgba = np.dstack([encode(natural(512, 512, seed=9), "xl"), np.full((512, 512), 255, np.uint8)])
    assert [e.generator for e in detect_watermarks(rgba)[0]] == [XL]
    assert detect_watermarks(np.full((300, 300), 7, dtype=np.uint8)) == ([], [])


def test_schemes():
    assert wm.WATERMARK_SCHEMES == ("sd",)
    assert detect_watermarks(natural(300, 300, seed=1), ()) == ([], [])
    with pytest.raises(ConfigError, match="unknown watermark scheme 'tree-ring'; choose from sd"):
        detect_watermarks(natural(300, 300, seed=1), ("tree-ring",))


def test_support_check(monkeypatch):
    check_watermark_support()
    monkeypatch.setitem(__import__("sys").modules, "imwatermark", None)
    with pytest.raises(MissingDependencyError) as err:
        check_watermark_support()
    assert str(err.value) == ("invisible-watermark (imwatermark, with opencv-python) is not installed (needed for "
                              "--watermarks); install it with: pip install 'gcage-fast[watermark]'")


def test_import_is_cheap():
    import subprocess
    import sys

    code = ("import sys, gcage_fast.evidence.watermark; "
            "print(sorted(m for m in ('cv2', 'imwatermark', 'pywt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("relpath", [
    "real/unsplash-face-photo/real_380.jpg",  # a real photograph: 34/48 in the channel-swapped order
    "ai/stylegan2-thispersondoesnotexist/fake_220.jpg",  # a StyleGAN face: 34/48 in the encoder's order
])
def test_the_likely_bucket_is_a_flag_not_evidence(relpath):
    """34/48 is the public detector's "likely" bucket; a detected watermark decides a verdict, so evidence needs
    "very likely" (>= 36) in either order, and these readings are only watermark.partial."""
    path = DATA / "faces" / relpath
    if not path.is_file():
        pytest.skip("needs ../shared/data/faces")
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    assert matches(rgb)[1] == 34
    assert detect_watermarks(rgb) == ([], ["watermark.partial"])
