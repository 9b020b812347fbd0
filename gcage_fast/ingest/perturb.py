"""Robustness transforms applied to decoded images before patch selection (``gcage-fast eval --perturb``).

Spec: a comma list of ``jpeg:Q`` (re-encode at JPEG quality Q), ``blur:SIGMA`` (Gaussian blur, sigma in pixels),
``noise:STD`` (additive Gaussian noise, std in 0..255 units, seeded by the file's content), ``resize:SCALE``
(bilinear rescale), ``crop:SIZE`` (centre crop to SIZE×SIZE) and ``grayscale`` (luma replicated to three
channels: T-FF's colour ablation). ``none`` is the unperturbed image. NumPy and Pillow only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from gcage_fast.errors import ConfigError

__all__ = ["Perturbation", "parse_perturbations", "apply_perturbation"]

_PARAM = {"jpeg": (int, 1, 100), "blur": (float, 0.0, 100.0), "noise": (float, 0.0, 255.0),
          "resize": (float, 0.01, 16.0), "crop": (int, 1, 100_000)}


@dataclass(frozen=True)
class Perturbation:
    name: str
    value: float | int | None = None

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value:g}"


def parse_perturbations(spec: str) -> list[Perturbation]:
    """``"jpeg:75,blur:1,grayscale"`` -> perturbations; raises ConfigError with the accepted forms."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, raw = part.partition(":")
        if name in ("none", "grayscale") and not raw:
            out.append(Perturbation(name))
            continue
        if name not in _PARAM or not raw:
            raise ConfigError(f"invalid perturbation {part!r}; use jpeg:Q, blur:SIGMA, noise:STD, resize:SCALE, "
                              "crop:SIZE, grayscale or none")
        typ, lo, hi = _PARAM[name]
        try:
            value = typ(raw)
        except ValueError:
            raise ConfigError(f"invalid value in perturbation {part!r}: expected {typ.__name__}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"perturbation {part!r}: value must be between {lo} and {hi}")
        out.append(Perturbation(name, value))
    if not out:
        raise ConfigError("no perturbation given")
    return out


def apply_perturbation(rgb: np.ndarray, p: Perturbation, seed: int = 0) -> np.ndarray:
    """Return the perturbed copy of an RGB uint8 image."""
    if p.name == "none":
        return rgb
    img = Image.fromarray(rgb)
    if p.name == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(p.value))
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB"))
    if p.name == "blur":
        return np.asarray(img.filter(ImageFilter.GaussianBlur(radius=float(p.value))))
    if p.name == "noise":
        rng = np.random.default_rng(seed)
        noisy = rgb.astype(np.float32) + rng.normal(0.0, float(p.value), size=rgb.shape).astype(np.float32)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if p.name == "resize":
        w, h = img.size
        size = (max(1, round(w * p.value)), max(1, round(h * p.value)))
        return np.asarray(img.resize(size, Image.Resampling.BILINEAR))
    if p.name == "crop":
        h, w = rgb.shape[:2]
        s = int(p.value)
        y, x = max(0, (h - s) // 2), max(0, (w - s) // 2)
        return np.ascontiguousarray(rgb[y:y + s, x:x + s])
    if p.name == "grayscale":
        return np.asarray(img.convert("L").convert("RGB"))
    raise ConfigError(f"unknown perturbation {p.name!r}")
