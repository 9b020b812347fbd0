"""Import the official SuSy weights (TorchScript ``SuSy.pt``) into our module and a safetensors model directory.

A TorchScript archive contains code, so loading one is an explicit opt-in. The state_dict is loaded with
``strict=True`` (every one of its 368 keys must match an attribute of :class:`SuSy`), and both modules must give
the same probabilities on random input before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gcage_fast.errors import ModelError
from gcage_fast.hashing import sha256_file
from gcage_fast.models.architectures import architecture
from gcage_fast.models.registry import write_model_dir
from gcage_fast.models.spec import ModelSpec
from gcage_fast.models.susy import SUSY_CLASSES

__all__ = ["ImportReport", "import_susy", "IMPORT_ATOL"]

IMPORT_ATOL = 1e-5


@dataclass
class ImportReport:
    spec: ModelSpec
    out_dir: Path
    source_sha256: str
    n_keys: int
    max_abs_diff: float


def _dim0(sd: dict[str, torch.Tensor], key: str, default: int) -> int:
    """First dimension of ``sd[key]``; the published size when the key is absent (the strict load reports it)."""
    return int(sd[key].shape[0]) if key in sd else default


def import_susy(pt_path: str | Path, out_dir: str | Path, *, trust_torchscript: bool = False,
                name: str = "susy", version: str = "1", class_names: tuple[str, ...] | None = None,
                seed: int = 0, atol: float = IMPORT_ATOL) -> ImportReport:
    """Load ``pt_path`` (TorchScript), check it against our SuSy, write a base-only model directory."""
    if not trust_torchscript:
        raise ModelError("SuSy.pt is a TorchScript archive, which contains code; pass --trust-torchscript "
                         "to load it (only for files from a source you trust)")
    path = Path(pt_path)
    if not path.is_file():
        raise ModelError(f"no such file: {path}")
    try:
        scripted = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - torch.jit.load raises RuntimeError and others
        raise ModelError(f"cannot load {path} as TorchScript: {str(exc).splitlines()[0]}") from exc
    sd = scripted.state_dict()
    arch = architecture("susy")
    width = _dim0(sd, arch.width_key, 64)
    hidden = _dim0(sd, arch.hidden_key, 256)
    n_classes = _dim0(sd, arch.classes_key, len(SUSY_CLASSES))
    if class_names is None:
        if n_classes != len(SUSY_CLASSES):
            raise ModelError(f"the model has {n_classes} classes; name them with --classes (authentic first)")
        class_names = SUSY_CLASSES
    if len(class_names) != n_classes:
        raise ModelError(f"--classes names {len(class_names)} classes but the model has {n_classes}")
    model = arch.build(n_classes, width, hidden).eval()
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            "the TorchScript state_dict does not match SuSy's attribute names: "
            f"missing {result.missing_keys[:3]}{'…' if len(result.missing_keys) > 3 else ''}, "
            f"unexpected {result.unexpected_keys[:3]}{'…' if len(result.unexpected_keys) > 3 else ''}"
        )
    model.load_state_dict(sd, strict=True)
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours, theirs = model(x), scripted(x)
    if theirs.shape != ours.shape:
        raise ModelError(f"{path} outputs shape {tuple(theirs.shape)}, expected {tuple(ours.shape)}")
    diff = float((ours - theirs).abs().max())
    if not diff <= atol:
        raise ModelError(f"imported weights give different probabilities (max abs diff {diff:.3g} > {atol}); "
                         "the file is not a SuSy model this version understands")
    source_sha = sha256_file(path)
    spec = write_model_dir(
        out_dir, name=name, version=version, class_names=class_names, base=model, head=None,
        description=f"SuSy imported from {path.name} (sha256 {source_sha}); base detector only, no G-CAGE head",
    )
    return ImportReport(spec, Path(out_dir), source_sha, len(sd), diff)
