"""Explain one image from a frozen configuration: the library form of ``gcage-fast explain``.

    from gcage_fast import ExplainConfig, ExplainOptions, explain_image

    expl = explain_image(ExplainConfig(image="photo.jpg", output="why.png",
                                       options=ExplainOptions(methods=("gradcam", "scorecam"))))
    expl.score.verdict, expl.score.p_fake

The model is loaded, its engines opened and closed, the picture (and the JSON record) written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gcage_fast.config import Limits
from gcage_fast.errors import ConfigError
from gcage_fast.explain.explainer import ExplainOptions, Explainer, Explanation

__all__ = ["ExplainConfig", "explain_image"]


@dataclass(frozen=True)
class ExplainConfig:
    """Everything ``gcage-fast explain`` needs. ``output`` None explains without drawing a picture."""

    image: str
    output: str | None = None  # PNG: the image with its patches and heatmaps, and a legend
    json_path: str | None = None  # the whole explanation as JSON
    model: str | None = None  # a model name or directory; None = the bundled default
    backend: str = "auto"  # auto | ort | torch
    threads: int | None = None
    options: ExplainOptions = field(default_factory=ExplainOptions)
    all_cams: bool = False  # draw a grid of every method in ``options.methods`` for one patch
    grid_patch: int | None = None  # the patch of that grid (None: patch 0)
    alpha: float = 0.45  # heatmap opacity
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> None:
        if self.backend not in ("auto", "ort", "torch"):
            raise ConfigError(f"unknown backend {self.backend!r}; choose auto, ort or torch")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError("--alpha must be between 0 and 1")
        self.options.validate()
        self.limits.validate()


def explain_image(config: ExplainConfig) -> Explanation:
    """Explain ``config.image``; writes ``config.output`` (PNG) and ``config.json_path`` when given.

    Raises:
        GcageError: a bad option, a missing model, an image that cannot be decoded, an unwritable output.
    """
    from gcage_fast.explain.visualize import render_explanation, render_method_grid
    from gcage_fast.fsutil import atomic_write_json
    from gcage_fast.models.registry import load_model
    from gcage_fast.output.heatmaps import write_png_atomic

    config.validate()
    loaded = load_model(config.model)
    with Explainer(loaded, config.options, config.backend, config.threads, config.limits) as ex:
        expl = ex.explain_file(config.image)
    if config.output is not None:
        if config.all_cams:
            picture = render_method_grid(expl, config.grid_patch or 0, config.alpha)
        else:
            picture = render_explanation(expl, config.options.methods[0], config.alpha)
        write_png_atomic(picture, Path(config.output), "explain")
    if config.json_path:
        atomic_write_json(config.json_path, expl.to_dict())
    return expl
