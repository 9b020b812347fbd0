"""Invisible-watermark detector: the dwtDct messages the Stable Diffusion reference scripts embed.

What it reads. The Stable Diffusion v1/v2 reference scripts (CompVis/stable-diffusion ``scripts/txt2img.py``,
Stability-AI/stablediffusion) embed ``b"StableDiffusionV1"`` (136 bits) and SDXL (Stability-AI/generative-models,
diffusers' ``StableDiffusionXLWatermarker``) embeds the 48-bit ``WATERMARK_MESSAGE``, both with the
``invisible-watermark`` package's ``dwtDct`` method. That method writes one bit per 4x4 block of the Haar
approximation band of the U channel (cv2 BGR->YUV) by quantising the block's largest non-DC coefficient with step
36; bit ``k`` goes into every block whose raster index is ``k`` mod the message length, and the decoder takes a
majority vote per bit. Scheme ``"sd"`` checks both messages.

Decoder. :func:`block_bits` is a vectorised NumPy port of ``imwatermark.maxDct.EmbedMaxDct.decode`` (the same
cv2 colour conversion, ``pywt.dwt2(..., 'haar')`` reproduced bit for bit, the same first-maximum argmax, ``% 36 >
18`` test and ``mean * 255 > 127`` vote), so its bits equal the package's (tests/test_watermark.py checks parity on
odd sizes). The package loops over the blocks in Python (~85 ms per megapixel per message on the 2-core benchmark
machine, ~170 ms for the two messages); the per-block bits do not depend on the message length, so here they are
computed once per channel order and voted for both messages (benchmarks/results/cpu-2core-watermark.md). The
cost is linear in pixels; images over :data:`MAX_DECODE_PIXELS` are decoded on their top rows only (a multiple
of 8 rows, so the block numbering is unchanged and the votes are a subset of the full image's), which bounds
time and memory per image.

Channel orders. The reference scripts convert RGB to BGR before encoding, but several diffusers releases (and
code copied from them) pass the RGB array straight to the BGR encoder, which puts the message in the U channel of
the channel-swapped image; SDXL outputs in the broad data set carry it that way. Both orders are decoded; the
detail says "(channels swapped)" for the second.

Which message. 48 and 136 share the factor 8, so the 48-bit vote of a v1 image is a fold of the v1 message and
can land in SDXL's "likely" bucket (a JPEG-compressed v1 image of the tests reads 35/48). Each (message, order)
reading is therefore scored by its per-block agreement (the fraction of blocks whose bit equals the message's bit
for that block, ~0.5 for the wrong message or none, 0.54-0.8 for the embedded one); the best-agreeing reading
names the message and only its threshold is applied, so at most one evidence per scheme.

Thresholds.
- SDXL (48 bits): the public detector's buckets (generative-models ``scripts/demo/detect.py``, ``MATCH_VALUES``):
  28..33 "cannot determine", 34..35 "likely" (0.02 % false detections of real images in their test), 36..48 "very
  likely" (none in their test). Because a detected watermark decides the verdict (gcage_fast.evidence.policy),
  evidence needs the "very likely" bucket, >= 36, in either channel order; 28..35 is no evidence but the flag
  ``watermark.partial``. A uniformly random 48-bit string reaches 34 with probability 2.8e-3 and 36 with 1.7e-4
  (per order); on the shared data one real face photograph (300x300, ~28 votes per bit) reads 34/48 swapped, and
  a StyleGAN face and an SD 1.x image read 34/48: all three stay flags.
- SD v1/v2 (136 bits): the public script only decodes and compares the string; there is no published threshold.
  We use the fraction of SDXL's "likely" bucket, 34/48 = 0.708, so >= 97 of 136 bits (both orders). A uniformly
  random bit string reaches it with probability 3.5e-7 (vs 2.8e-3 for >= 34/48); the highest reading over the
  ~2,000 real and AI images of the shared data was 86/136.
- Flat and smooth areas decode to constant bits (every block votes 0), and many photographs decode to all-0 or
  all-1. The v1 message has 68 zero bits of 136 and the SDXL message 21 of 48, so an all-0 or all-1 decode
  matches at most 68/136 and 27/48: below both thresholds and below the SDXL partial bucket.

Flags: ``watermark.too_small`` (under 256x256 pixels, which the package refuses, or under 8 pixels on a side:
not one block), ``watermark.partial`` (an SDXL reading in the partial bucket and no evidence),
``watermark.error`` (unusable pixel array, or the decoder failed on it).

It never reads a file, opens a socket or raises for anything about the pixels; cv2 is imported lazily (the
``watermark`` extra, which also brings imwatermark, the tests' reference decoder).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from gcage_fast.config import WATERMARK_SCHEMES
from gcage_fast.errors import ConfigError, MissingDependencyError
from gcage_fast.evidence.types import Evidence

__all__ = ["WATERMARK_SCHEMES", "MIN_PIXELS", "MAX_DECODE_PIXELS", "check_watermark_support", "detect_watermarks",
           "block_bits", "vote"]

MIN_PIXELS = 256 * 256  # imwatermark refuses smaller images (rows * cols < 256 * 256)
#: Decode at most this many pixels (the top rows of larger images); 4 MiP gives ~65k blocks, ~480 votes per bit.
MAX_DECODE_PIXELS = 4 * 2**20
SCALE = 36  # dwtDct quantisation step of the U channel (EmbedMaxDct scales=[0, 36, 36]; only U is used)
BLOCK = 4
_HAAR = 0.7071067811865476  # pywt.Wavelet("haar").dec_lo[0]
_INSTALL = "pip install 'gcage-fast[watermark]'"

SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110
SD_V1_MESSAGE = b"StableDiffusionV1"


@dataclass(frozen=True)
class _Message:
    name: str  # as the detail names it
    bits: np.ndarray  # bool, the embedded bit string
    generator: str
    threshold: int  # matching bits for evidence
    swapped_threshold: int  # matching bits for evidence in the channel-swapped order
    partial: int | None  # matching bits from which watermark.partial is flagged (below threshold), or None


def _sdxl_bits() -> np.ndarray:
    return np.array([int(b) for b in bin(SDXL_MESSAGE)[2:]], dtype=bool)


def _v1_bits() -> np.ndarray:
    return np.unpackbits(np.frombuffer(SD_V1_MESSAGE, dtype=np.uint8)).astype(bool)


_MESSAGES = {
    "sd": (
        _Message("'StableDiffusionV1'", _v1_bits(), "Stable Diffusion v1/v2", 97, 97, None),
        _Message("SDXL message", _sdxl_bits(), "Stable Diffusion XL", 36, 36, 28),
    ),
}


def _sdxl_bucket(matches: int) -> str:
    return "very likely" if matches >= 36 else "likely"


def check_watermark_support() -> None:
    """Raise MissingDependencyError naming the extra when imwatermark or cv2 cannot be imported."""
    try:
        import cv2  # noqa: F401 - the colour conversion of the decoder
        import imwatermark  # noqa: F401 - the reference decoder (the parity test); it brings cv2
    except ImportError as exc:
        raise MissingDependencyError(
            f"invisible-watermark (imwatermark, with opencv-python) is not installed (needed for "
            f"--watermarks); install it with: {_INSTALL}") from exc


def _haar_approximation(channel: np.ndarray) -> np.ndarray:
    """The approximation band of ``pywt.dwt2(channel, 'haar')``, bit for bit: pywt filters axis 0 then axis 1,
    each output being h * x[2i] + h * x[2i + 1] in float64 (the parity test checks it against the package)."""
    f = channel.astype(np.float64)
    r = _HAAR * f[0::2] + _HAAR * f[1::2]
    return _HAAR * r[:, 0::2] + _HAAR * r[:, 1::2]


def block_bits(bgr: np.ndarray) -> np.ndarray:
    """Per-block dwtDct bits (bool, raster order over the 4x4 blocks of the U channel's Haar approximation) of a
    BGR uint8 (H, W, 3) image, exactly as imwatermark's EmbedMaxDct.decode_frame scores them."""
    import cv2

    # the package transforms yuv[:rows//4*4, :cols//4*4] and uses only whole 4x4 blocks of the half-size band,
    # i.e. the top-left (rows//8*8, cols//8*8) pixels
    nr, nc = bgr.shape[0] // (2 * BLOCK), bgr.shape[1] // (2 * BLOCK)
    if nr == 0 or nc == 0:
        return np.zeros(0, dtype=bool)
    yuv = cv2.cvtColor(np.ascontiguousarray(bgr[:nr * 2 * BLOCK, :nc * 2 * BLOCK]), cv2.COLOR_BGR2YUV)
    ca = _haar_approximation(yuv[:, :, 1])
    blocks = ca.reshape(nr, BLOCK, nc, BLOCK).swapaxes(1, 2).reshape(nr * nc, BLOCK ** 2)
    pos = np.argmax(np.abs(blocks[:, 1:]), axis=1) + 1  # first maximum, as np.argmax on the flattened block
    val = np.abs(blocks[np.arange(nr * nc), pos])
    return np.mod(val, SCALE) > 0.5 * SCALE


def vote(bits: np.ndarray, length: int) -> np.ndarray:
    """The decoded message of ``length`` bits: block ``n`` votes for bit ``n % length``; a bit is 1 when
    mean * 255 > 127 (a bit without a block decodes to 0, as the package's NaN mean does)."""
    idx = np.arange(bits.size) % length
    ones = np.bincount(idx, weights=bits.astype(np.float64), minlength=length)
    count = np.bincount(idx, minlength=length)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ones / count) * 255 > 127


def _bounded(rgb: np.ndarray) -> np.ndarray:
    """The top rows of ``rgb`` holding at most MAX_DECODE_PIXELS pixels (a multiple of 8 rows, at least 8)."""
    rows, cols = rgb.shape[:2]
    if rows * cols <= MAX_DECODE_PIXELS:
        return rgb
    keep = max(8, MAX_DECODE_PIXELS // cols // 8 * 8)
    return rgb[:keep]


def _as_rgb(pixels: object) -> np.ndarray | None:
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        return pixels[:, :, :3]
    return None


@dataclass(frozen=True)
class _Reading:
    message: _Message
    order: str  # "bgr" (as the reference scripts encode) or "rgb" (channels swapped)
    matches: int  # matching bits of the voted message
    agreement: float  # fraction of blocks whose bit equals the message's bit for that block


def _read(message: _Message, order: str, bits: np.ndarray) -> _Reading:
    length = message.bits.size
    expected = message.bits[np.arange(bits.size) % length]
    agreement = float(np.count_nonzero(bits == expected)) / max(bits.size, 1)
    return _Reading(message, order, int(np.count_nonzero(vote(bits, length) == message.bits)), agreement)


def _evidence(reading: _Reading) -> Evidence:
    message = reading.message
    detail = f"dwtDct {message.name}: {reading.matches}/{message.bits.size} bits match"
    if message.partial is not None:
        detail += f" ({_sdxl_bucket(reading.matches)})"
    if reading.order == "rgb":
        detail += " (channels swapped)"
    return Evidence(kind="watermark", claim="ai_generated", generator=message.generator, detail=detail,
                    strength="detected")


def _judge(messages: tuple[_Message, ...], decoded: dict[str, np.ndarray]) -> tuple[list[Evidence], bool]:
    """(evidence, partial) of one scheme: the reading that agrees best per block names the message; only that
    message's threshold is applied (see the module docstring on cross-talk)."""
    readings = [_read(m, order, bits) for m in messages for order, bits in decoded.items()]
    best = max(readings, key=lambda r: (r.agreement, r.order == "bgr"))
    threshold = best.message.threshold if best.order == "bgr" else best.message.swapped_threshold
    if best.matches >= threshold:
        return [_evidence(best)], False
    partial = any(r.message.partial is not None and r.matches >= r.message.partial for r in readings)
    return [], partial


def detect_watermarks(rgb: np.ndarray, schemes: tuple[str, ...] = ("sd",)) -> tuple[list[Evidence], list[str]]:
    """Watermarks of ``schemes`` found in ``rgb`` ((H, W, 3) uint8 RGB at the file's original size).

    Returns (evidence, flags). Never raises for the image; raises ConfigError for a scheme outside
    WATERMARK_SCHEMES (a configuration error, validated before any image is read).
    """
    unknown = [s for s in schemes if s not in _MESSAGES]
    if unknown:
        raise ConfigError(f"unknown watermark scheme {unknown[0]!r}; choose from {', '.join(WATERMARK_SCHEMES)}")
    if not schemes:
        return [], []
    pixels = _as_rgb(rgb)
    if pixels is None:
        return [], ["watermark.error"]
    rows, cols = pixels.shape[:2]
    if rows * cols < MIN_PIXELS or rows < 2 * BLOCK or cols < 2 * BLOCK:
        return [], ["watermark.too_small"]
    try:
        return _detect(_bounded(pixels), schemes)
    except Exception:  # noqa: BLE001 - anything the decoder does on these pixels is a flag, never a failure
        return [], ["watermark.error"]


def _detect(rgb: np.ndarray, schemes: tuple[str, ...]) -> tuple[list[Evidence], list[str]]:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    decoded = {"bgr": block_bits(bgr), "rgb": block_bits(np.ascontiguousarray(rgb))}
    evidence: list[Evidence] = []
    flags: list[str] = []
    for scheme in dict.fromkeys(schemes):
        found, partial = _judge(_MESSAGES[scheme], decoded)
        evidence.extend(found)
        if partial and "watermark.partial" not in flags:
            flags.append("watermark.partial")
    return evidence, flags
