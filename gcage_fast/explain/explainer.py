"""Explanations of one image: the verdict, its patches and one heatmap per patch and CAM method.

The image goes through the scan's own steps (decode, SuSy patch selection, the base and head engines, the fused
step), with the base graph exported with its activations. The forward-only family comes from that one pass;
EigenCAM from the activations; ScoreCAM and LIME send their perturbed patches through the same base engine in
large batches; AblationCAM is one batched pass of the MLP (see :mod:`gcage_fast.cam.perturbation`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from gcage_fast.cam.perturbation import forward_family
from gcage_fast.cam.quality import QualityOptions, cam_quality
from gcage_fast.cam.registry import ALL_METHODS, METHODS, PatchInputs
from gcage_fast.cam.targets import CamTarget, parse_target
from gcage_fast.config import Limits
from gcage_fast.scoring.base import ImageScore
from gcage_fast.scoring.host import HostScorer
from gcage_fast.engine.base import Runner, infer_chunked
from gcage_fast.errors import ConfigError, InputError, OutOfMemory
from gcage_fast.evidence.collect import DEFAULT_TRUST_ANCHORS, EvidenceOptions
from gcage_fast.evidence.policy import DEFAULT_POLICY, fuse
from gcage_fast.evidence.types import C2paInfo, Evidence
from gcage_fast.kernels.reference import PATCH, minmax_normalize, upsample_cams
from gcage_fast.models.registry import LoadedModel
from gcage_fast.ingest.prepare import Prepared, PrepareTask, prepare

__all__ = ["ExplainOptions", "PatchExplanation", "Explanation", "Explainer", "parse_methods"]


def parse_methods(text: str) -> tuple[str, ...]:
    """``gradcam,scorecam`` or ``all`` -> a tuple of known method names (order kept, duplicates dropped)."""
    names = ALL_METHODS if text.strip() == "all" else tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in ALL_METHODS]
    if unknown or not names:
        raise ConfigError(f"unknown CAM method {', '.join(unknown) or repr(text)}; choose from "
                          f"{', '.join(ALL_METHODS)} or all")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ExplainOptions:
    methods: tuple[str, ...] = ("gradcam",)
    target: str | None = None  # CAM target; default: the model's
    layer: str | None = None  # CAM layer; default: the model's
    top_k: int | None = None  # patches; default: the model's
    patches: tuple[int, ...] | None = None  # which of the selected patches get explained; None = all
    batch_size: int = 64
    lime_samples: int = 1000
    lime_segmentation: str = "grid"
    seed: int = 0
    quality: QualityOptions | None = None  # CAM quality metrics when set
    #: provenance readers run on the file (the scan's defaults); None reads no evidence
    evidence: EvidenceOptions | None = EvidenceOptions(trust_anchors=DEFAULT_TRUST_ANCHORS)
    verdict_policy: str = DEFAULT_POLICY

    def validate(self) -> None:
        parse_methods(",".join(self.methods))
        if self.batch_size < 1 or self.lime_samples < 2:
            raise ConfigError("--batch-size must be positive and --lime-samples at least 2")


@dataclass
class PatchExplanation:
    index: int  # rank among the selected patches (0 = highest contrast)
    box: tuple[int, int]  # (x, y) in the display image
    contrast: float
    base_probs: np.ndarray  # (C,)
    p_fake: float  # the head's P(fake) for this patch (the base detector's for a base-only model)
    base_p_fake: float  # 1 - P(authentic)
    heat: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (P, P) float32 in [0, 1]
    cam: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (h, w) raw map (not for LIME)
    seconds: dict[str, float] = field(default_factory=dict)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Explanation:
    source: str
    width: int
    height: int
    model: str
    backend: str
    threshold: float
    target: str
    layer: str
    class_names: tuple[str, ...]
    score: ImageScore
    patches: list[PatchExplanation]
    methods: tuple[str, ...]
    preview: np.ndarray  # (h, w, 3) uint8 display image, scaled by preview_scale
    preview_scale: float
    flags: list[str]
    evidence: list[Evidence] = field(default_factory=list)
    c2pa: C2paInfo | None = None
    verdict: str = ""  # the fused verdict (score.verdict is the model's own)
    verdict_source: str = "model"

    def to_dict(self) -> dict[str, Any]:
        """The numbers, JSON-ready (``gcage-fast explain --json``)."""
        names = self.class_names
        return {
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "backend": self.backend,
            "cam_target": self.target,
            "cam_layer": self.layer,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "verdict_source": self.verdict_source,
            "model_verdict": self.score.verdict,
            "p_fake": self.score.p_fake,
            "base_p_fake": self.score.base_p_fake,
            "attribution": self.score.attribution,
            "base_probs": {n: float(p) for n, p in zip(names, self.score.base_probs)},
            "flags": self.flags,
            "evidence": [e.as_row() for e in self.evidence],
            "c2pa": None if self.c2pa is None else self.c2pa.as_row(),
            "methods": list(self.methods),
            "patches": [{
                "index": p.index,
                "x": p.box[0],
                "y": p.box[1],
                "contrast": p.contrast,
                "p_fake": p.p_fake,
                "base_p_fake": p.base_p_fake,
                "base_probs": {n: float(v) for n, v in zip(names, p.base_probs)},
                "cam": {m: np.round(c.astype(np.float64), 6).tolist() for m, c in p.cam.items()},
                "seconds": {m: round(s, 3) for m, s in p.seconds.items()},
                "quality": p.quality,
            } for p in self.patches],
        }


class Explainer:
    """Explains images with one model on one backend (runners opened once, used for many images).

    Use as a context manager::

        with Explainer(model, ExplainOptions(methods=("gradcam", "scorecam"))) as ex:
            explanation = ex.explain_file("photo.jpg")
    """

    def __init__(self, model: LoadedModel, options: ExplainOptions = ExplainOptions(), backend: str = "auto",
                 threads: int | None = None, limits: Limits = Limits()) -> None:
        from gcage_fast.engine.factory import create_runners, resolve_backend
        from gcage_fast.export.to_onnx import ExportOptions

        options.validate()
        self.model = model
        self.options = options
        self.limits = limits
        spec = model.spec
        self.target_text = options.target or spec.cam.target
        self.layer = options.layer or spec.cam.layer
        self.target: CamTarget = parse_target(self.target_text, spec.class_names, spec.authentic_index)
        self.backend = resolve_backend(backend, "cpu")
        # The verdict uses the model's own CAM method (what the head was trained on), the explanations the
        # requested target and layer; Grad-CAM's weights are the uniform gradient the forward family needs.
        verdict_opts = ExportOptions.for_model(model, with_activations=False)
        explain_opts = ExportOptions.for_model(model, "gradcam", self.target_text, self.layer, with_activations=True)
        explain_pair = create_runners(model, explain_opts, self.backend, "cpu", threads)
        self._explain = explain_pair.base
        if verdict_opts == replace(explain_opts, with_activations=False):
            # The model's own CAM is Grad-CAM on the explained target and layer (the bundled model, for one): the
            # explanation graph computes the verdict too, so one export and one session serve both.
            self._verdict = explain_pair
        else:
            self._verdict = create_runners(model, verdict_opts, self.backend, "cpu", threads)
        self._open: list[Runner] = []

    def __enter__(self) -> Explainer:
        for r in dict.fromkeys(r for r in (self._verdict.base, self._verdict.head, self._explain) if r is not None):
            r.__enter__()
            self._open.append(r)
        return self

    def __exit__(self, *exc: object) -> None:
        while self._open:
            self._open.pop().__exit__(*exc)

    @property
    def backend_label(self) -> str:
        return self._explain.info.label

    def probs(self, batch: np.ndarray) -> np.ndarray:
        """Base detector probabilities of patches (N, 3, P, P) in [0, 1], in batches through the engine."""
        return infer_chunked(self._explain, np.ascontiguousarray(batch, dtype=np.float32),
                             self.options.batch_size)["probs"]

    def prepare_file(self, path: str | Path) -> Prepared:
        top_k = self.options.top_k or self.model.spec.top_k
        p = Path(path)
        prepared = prepare(PrepareTask(0, bytes(p), top_k, limits=self.limits, preview_max=1024,
                                       name=p.name.encode(), evidence=self.options.evidence))
        if prepared.status != "ok":
            raise InputError(f"{path}: cannot explain ({prepared.status} {prepared.error_code}: "
                             f"{prepared.error_detail})")
        return prepared

    def explain_file(self, path: str | Path) -> Explanation:
        return self.explain_prepared(self.prepare_file(path), str(path))

    def explain_prepared(self, prepared: Prepared, source: str) -> Explanation:
        spec = self.model.spec
        detector = HostScorer(spec, self._verdict.base, self._verdict.head, spec.threshold, self.options.batch_size)
        score = detector.score([prepared])[0]
        if score is None:
            raise OutOfMemory("the engine ran out of device memory on this image's patches at batch size 1")
        x = prepared.patches.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        out = infer_chunked(self._explain, x, self.options.batch_size)
        acts, grads, probs = out["activations"], out["cam_weights"], out["probs"]
        family = forward_family(acts, grads)
        chosen = self.options.patches if self.options.patches is not None else range(len(x))
        patches = []
        for i in chosen:
            if not 0 <= i < len(x):
                raise ConfigError(f"patch {i} does not exist: the image has {len(x)} selected patch(es)")
            pe = PatchExplanation(i, (int(prepared.boxes[i][0]), int(prepared.boxes[i][1])),
                                  float(prepared.contrast[i]), probs[i].astype(np.float64),
                                  float(score.patch_p_fake[i]), float(1.0 - probs[i, spec.authentic_index]))
            for method in self.options.methods:
                t0 = time.perf_counter()
                cam, heat = self._one(method, x[i], acts[i], probs[i], family, i)
                pe.seconds[method] = time.perf_counter() - t0
                pe.heat[method] = heat
                if cam is not None:
                    pe.cam[method] = cam
                if self.options.quality is not None:
                    pe.quality[method] = cam_quality(x[i], heat, self.target, self.probs, probs[i],
                                                     self.options.quality)
            patches.append(pe)
        verdict, verdict_source = fuse(prepared.evidence, score.verdict, self.options.verdict_policy)
        return Explanation(source, prepared.width, prepared.height, spec.model_id, self.backend_label,
                           spec.threshold, self.target_text, self.layer, tuple(spec.class_names), score, patches,
                           self.options.methods, prepared.preview, prepared.preview_scale, list(prepared.flags),
                           list(prepared.evidence), prepared.c2pa, verdict, verdict_source)

    def _one(self, method: str, patch: np.ndarray, acts: np.ndarray, probs: np.ndarray,
             family: dict[str, np.ndarray], i: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(raw h×w map or None, normalised P×P heatmap) of one method for one patch: the method's ``explain``
        function in gcage_fast.cam.registry, and the raw map upsampled and normalised when it gives no heatmap."""
        entry = METHODS.get(method)
        if entry is None:  # pragma: no cover - parse_methods rejects it
            raise ConfigError(f"unknown CAM method {method!r}")
        o = self.options
        cam, heat = entry.explain_fn()(PatchInputs(method, i, patch, acts, probs, family, self.target, self.probs,
                                                   self.model.base, o.batch_size, o.lime_samples,
                                                   o.lime_segmentation, o.seed))
        if heat is None:
            heat = minmax_normalize(upsample_cams(cam[None], PATCH))[0]
        return cam, heat
