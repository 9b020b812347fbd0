"""Robustness transforms applied to decoded images before patch selection (``gcage-fast eval --perturb``).

Spec: a comma list of ``jpeg:Q`` (re-encode at JPEG quality Q), ``blur:SIGMA`` (Gaussian blur, sigma in pixels),
``noise:STD`` (additive Gaussian noise, std in 0..255 units, seeded by the file's content), ``resize:SCALE``
(bilinear rescale), ``crop:SIZE`` (centre crop to SIZE×SIZE) and ``grayscale`` (luma replicated to three
channels: T-FF's colour ablation). ``none`` is the unperturbed image. NumPy and Pillow only. The spec itself is
configuration (:func:`gcage_fast.config.parse_perturbations`); this module applies it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from gcage_fast.config import Perturbation, parse_perturbations
from gcage_fast.errors import ConfigError

__all__ = ["Perturbation", "parse_perturbations", "apply_perturbation"]

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
