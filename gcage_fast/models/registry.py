"""Model directories: build, write, verify, load, and find them by name.

Names are looked up in the bundled models (``gcage_fast/models/bundled/<name>/``) and then in the directories of
``GCAGE_MODEL_PATH``. Anything else must be passed as a path to a model directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gcage_fast import env
from gcage_fast.errors import ModelError
from gcage_fast.hashing import sha256_file
from gcage_fast.models.architectures import ARCHITECTURES, BASE_ARCHS, architecture
from gcage_fast.models.head import GCageHead
from gcage_fast.models.spec import SPEC_FILE, BaseSpec, CamSpec, HeadSpec, ModelSpec, read_spec, write_spec
from gcage_fast.models.weights import load_weights, save_weights

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelEntry",
    "bundled_dir",
    "list_models",
    "resolve_model",
    "load_model",
    "build_base",
    "build_head",
    "create_base",
    "base_arch",
    "write_model_dir",
    "init_model",
]

#: Name of the model used when ``--model`` is not given (looked up like any other name).
DEFAULT_MODEL = "faces-gcage"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    spec: ModelSpec
    source: str  # "bundled" or the GCAGE_MODEL_PATH directory


@dataclass
class LoadedModel:
    """A verified model: its spec, directory and eval-mode torch modules (``head`` may be None)."""

    spec: ModelSpec
    path: Path
    base: nn.Module  # a base detector of one of gcage_fast.models.architectures
    head: GCageHead | None


def bundled_dir() -> Path:
    return Path(__file__).resolve().parent / "bundled"


def _scan_dir(root: Path, source: str) -> list[ModelEntry]:
    entries = []
    if not root.is_dir():
        return entries
    for sub in sorted(root.iterdir()):
        if (sub / SPEC_FILE).is_file():
            try:
                spec = read_spec(sub)
            except ModelError:
                continue
            entries.append(ModelEntry(sub.name, sub, spec, source))
    return entries


def list_models() -> list[ModelEntry]:
    """Every model reachable by name: bundled first, then GCAGE_MODEL_PATH in order."""
    entries = _scan_dir(bundled_dir(), "bundled")
    for d in env.model_search_path():
        entries += _scan_dir(d, str(d))
    return entries


def resolve_model(ref: str | None) -> Path:
    """Turn ``--model`` (None, a name, or a model directory) into a model directory."""
    if ref is None:
        ref = DEFAULT_MODEL
        for entry in list_models():
            if entry.name == ref:
                return entry.path
        raise ModelError(
            f"the default model '{DEFAULT_MODEL}' is not installed; pass --model NAME or --model DIR "
            "(list models with `gcage-fast models`, make one with `gcage-fast init-model`)"
        )
    path = Path(ref)
    if (path / SPEC_FILE).is_file():
        return path
    for entry in list_models():
        if entry.name == ref:
            return entry.path
    if path.exists():
        raise ModelError(f"{ref} is not a model directory (no {SPEC_FILE})")
    known = ", ".join(e.name for e in list_models()) or "none installed"
    raise ModelError(f"unknown model '{ref}' (known: {known}); pass a name or a model directory")


def build_base(spec: ModelSpec) -> nn.Module:
    """An untrained base detector of the spec's architecture."""
    return create_base(spec.base.arch, len(spec.class_names), spec.base.width, spec.base.hidden)


def create_base(arch: str, num_classes: int, width: int = 64, hidden: int = 256) -> nn.Module:
    """An untrained base detector of the architecture called ``arch`` (see :mod:`gcage_fast.models.architectures`).

    Raises:
        ModelError: an unknown architecture.
    """
    return architecture(arch).build(num_classes, width, hidden)


def base_arch(base: nn.Module) -> tuple[str, int, int]:
    """(arch, width, hidden) of a base detector module: its architecture's name and sizes (width 0 when fixed)."""
    for entry in ARCHITECTURES.values():
        if isinstance(base, entry.module_class()):
            return (entry.name, *entry.sizes(base.state_dict()))
    raise ModelError(f"{type(base).__name__} is not a base detector of a known architecture "
                     f"(known: {', '.join(BASE_ARCHS)})")


def build_head(spec: ModelSpec) -> GCageHead | None:
    return None if spec.head is None else GCageHead(widths=spec.head.widths)


def _verified(model_dir: Path, name: str, expected: str) -> Path:
    path = model_dir / name
    if not path.is_file():
        raise ModelError(f"model file missing: {path}")
    actual = sha256_file(path)
    if actual != expected:
        raise ModelError(
            f"model file {path} does not match its spec: sha256 {actual[:16]}… expected {expected[:16]}… "
            f"({path.stat().st_size} bytes); the file is corrupt or was replaced"
        )
    return path


def load_model(ref: str | Path | None) -> LoadedModel:
    """Resolve, verify (sha256 of every weight file before parsing it) and load a model in eval mode."""
    model_dir = resolve_model(None if ref is None else str(ref))
    spec = read_spec(model_dir)
    base = build_base(spec)
    try:
        load_weights(base, _verified(model_dir, spec.base.weights, spec.base.sha256))
        head = build_head(spec)
        if head is not None:
            assert spec.head is not None
            load_weights(head, _verified(model_dir, spec.head.weights, spec.head.sha256))
    except (RuntimeError, OSError, ValueError) as exc:  # shape/key mismatches, unreadable safetensors
        raise ModelError(f"cannot load weights of {model_dir}: {str(exc).splitlines()[0]}") from exc
    base.eval()
    if head is not None:
        head.eval()
    return LoadedModel(spec=spec, path=model_dir, base=base, head=head)


def write_model_dir(
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    class_names: tuple[str, ...] | list[str],
    base: nn.Module,
    head: GCageHead | None,
    threshold: float = 0.5,
    base_threshold: float | None = None,
    cam: CamSpec | None = None,
    description: str = "",
    top_k: int = 5,
) -> ModelSpec:
    """Write ``base.safetensors`` (+ ``head.safetensors``) and a spec with their sha256 into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(base, out / "base.safetensors")
    arch, width, hidden = base_arch(base)
    base_spec = BaseSpec("base.safetensors", sha256_file(out / "base.safetensors"), arch, width, hidden)
    head_spec = None
    if head is not None:
        save_weights(head, out / "head.safetensors")
        widths = tuple(block[0].out_channels for block in head.blocks)
        head_spec = HeadSpec("head.safetensors", sha256_file(out / "head.safetensors"), "gcage-head", widths)
    spec = ModelSpec(
        name=name,
        version=version,
        class_names=tuple(class_names),
        base=base_spec,
        head=head_spec,
        threshold=threshold,
        base_threshold=threshold if base_threshold is None else base_threshold,
        top_k=top_k,
        cam=cam or CamSpec(),
        description=description,
    )
    spec.validate(str(out))
    write_spec(out, spec)
    return spec


def init_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    width: int = 64,
    hidden: int = 256,
    class_names: tuple[str, ...] = ("authentic", "synthetic"),
    head_widths: tuple[int, ...] = (16, 32, 64, 128),
    with_head: bool = True,
    name: str | None = None,
    arch: str = "susy",
) -> ModelSpec:
    """A randomly initialised (untrained) model directory, for testing the pipeline. Deterministic per seed."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        base = create_base(arch, len(class_names), width, hidden)
        _randomise_bn(base, seed)
        head = GCageHead(widths=head_widths) if with_head else None
        if head is not None:
            _randomise_bn(head, seed + 1)
    finally:
        torch.random.set_rng_state(gen_state)
    return write_model_dir(
        out_dir,
        name=name or architecture(arch).random_name.format(arch=arch, width=width, seed=seed),
        version="0",
        class_names=class_names,
        base=base,
        head=head,
        description=f"UNTRAINED: random weights (seed {seed}); verdicts are meaningless, for pipeline tests only",
    )


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    """Give BatchNorm layers non-trivial statistics so eval mode is not the identity (better tests)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
