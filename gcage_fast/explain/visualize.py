"""Pictures of explanations: the image with its patches and heatmaps plus a legend, and a grid of CAM methods.

Only Pillow and NumPy; the colour map is jet (blue = low, red = high), the heatmap blended over the pixels with an
adjustable opacity.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gcage_fast.explain.explainer import Explanation
from gcage_fast.kernels.reference import PATCH
from gcage_fast.output.heatmaps import jet, render_overlay

__all__ = ["render_explanation", "render_method_grid", "colour_bar"]

_BG = (250, 250, 250)
_FG = (20, 20, 20)
_FAKE = (200, 30, 30)
_REAL = (30, 130, 60)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def colour_bar(width: int, height: int = 12) -> Image.Image:
    """The colour map from 0 (left) to 1 (right)."""
    ramp = np.linspace(0.0, 1.0, width)[None].repeat(height, axis=0)
    return Image.fromarray(jet(ramp))


def _legend(expl: Explanation, method: str, width: int) -> Image.Image:
    s = expl.score
    title, small = _font(18), _font(13)
    lines: list[tuple[str, ImageFont.ImageFont | ImageFont.FreeTypeFont, tuple[int, int, int]]] = [
        (f"verdict: {expl.verdict.upper()}" + ("" if expl.verdict_source == "model" else
                                               f"  (decided by {expl.verdict_source} evidence)"),
         title, _FAKE if expl.verdict == "fake" else _REAL),
        (f"p_fake {s.p_fake:.4f}  (threshold {expl.threshold:.3f})", small, _FG),
        (f"base detector: p_fake {s.base_p_fake:.4f}, attribution {s.attribution}", small, _FG),
        ("class probabilities: " + ", ".join(f"{n} {p:.3f}" for n, p in zip(expl.class_names, s.base_probs)),
         small, _FG),
        (f"heatmap: {method} on {expl.layer}, target {expl.target}; model {expl.model}; {expl.backend}", small,
         _FG),
        (f"image {expl.width}x{expl.height}; patches (x, y, contrast, head p_fake, base p_fake):", small, _FG),
    ]
    lines.extend((f"evidence: {e.kind} {e.claim} ({e.strength})" + (f", {e.generator}" if e.generator else "")
                  + f": {e.detail}"[:160], small, _FG) for e in expl.evidence)
    if not expl.evidence:
        lines.append(("evidence: none found (C2PA, IPTC/XMP, declared generators)", small, _FG))
    if expl.c2pa is not None and expl.c2pa.state == "invalid":
        lines.append((f"C2PA manifest INVALID: {', '.join(expl.c2pa.failure_codes)[:120]}", small, _FAKE))
    for p in expl.patches:
        lines.append((f"  #{p.index}: ({p.box[0]}, {p.box[1]})  contrast {p.contrast:.1f}  "
                      f"p_fake {p.p_fake:.4f}  base {p.base_p_fake:.4f}", small, _FG))
    height = 16 + sum(26 if f is title else 18 for _, f, _ in lines) + 34
    panel = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(panel)
    y = 8
    for text, font, colour in lines:
        draw.text((10, y), text, fill=colour, font=font)
        y += 26 if font is title else 18
    bar_w = min(256, width - 120)
    panel.paste(colour_bar(bar_w), (10, y + 8))
    draw.text((16 + bar_w, y + 6), "low -> high relevance", fill=_FG, font=small)
    return panel


def render_explanation(expl: Explanation, method: str, alpha: float = 0.45) -> Image.Image:
    """The display image with each explained patch outlined and its ``method`` heatmap overlaid, above a legend."""
    boxes = np.array([p.box for p in expl.patches], dtype=np.int64).reshape(-1, 2)
    heat = np.stack([p.heat[method] for p in expl.patches]) if expl.patches else np.zeros((0, PATCH, PATCH))
    picture = render_overlay(expl.preview, expl.preview_scale, boxes, heat, PATCH, alpha)
    width = max(picture.width, 640)
    legend = _legend(expl, method, width)
    out = Image.new("RGB", (width, picture.height + legend.height), _BG)
    out.paste(picture, (0, 0))
    out.paste(legend, (0, picture.height))
    return out


def render_method_grid(expl: Explanation, patch: int = 0, alpha: float = 0.45, tile: int = PATCH) -> Image.Image:
    """One explained patch: the patch itself, then one tile per method with its heatmap, labelled."""
    pe = next((p for p in expl.patches if p.index == patch), None)
    if pe is None:
        raise ValueError(f"patch {patch} was not explained")
    x, y = pe.box
    scale = expl.preview_scale
    crop = Image.fromarray(expl.preview).crop((round(x * scale), round(y * scale), round((x + PATCH) * scale),
                                               round((y + PATCH) * scale))).resize((tile, tile))
    tiles = [("patch", crop)]
    for method in expl.methods:
        heat = pe.heat[method]
        colour = Image.fromarray(jet(heat)).resize((tile, tile), Image.Resampling.BILINEAR)
        name = method if heat.max() > 0 else f"{method} (flat: no evidence)"
        tiles.append((name, Image.blend(crop, colour, alpha)))
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    label_h, pad = 22, 8
    header = 30
    out = Image.new("RGB", (cols * (tile + pad) + pad, header + rows * (tile + label_h + pad) + pad), _BG)
    draw = ImageDraw.Draw(out)
    draw.text((pad, 6), f"patch #{pe.index} at ({x}, {y}): head p_fake {pe.p_fake:.4f}; verdict "
              f"{expl.score.verdict} (p_fake {expl.score.p_fake:.4f})", fill=_FG, font=_font(15))
    for n, (name, im) in enumerate(tiles):
        cx = pad + (n % cols) * (tile + pad)
        cy = header + (n // cols) * (tile + label_h + pad)
        draw.text((cx, cy), name, fill=_FG, font=_font(14))
        out.paste(im, (cx, cy + label_h))
    return out
