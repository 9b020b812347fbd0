"""safetensors I/O for modules whose state_dict lists shared tensors under several names.

SuSy's ``stages.*`` and ``bottlenecks.*`` are the same tensors as ``resnet_model.*`` and ``f11 … f44``; safetensors
refuses to store shared tensors twice. We store each tensor once under its first name and restore the aliases on
load, then load with ``strict=True`` so a missing or unexpected key is still an error.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["alias_map", "canonical_state_dict", "save_weights", "load_weights"]


def alias_map(module: nn.Module) -> dict[str, str]:
    """``{alias_key: canonical_key}`` for every state_dict entry that shares storage with an earlier key."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        ident = id(tensor)
        if ident in first:
            aliases[key] = first[ident]
        else:
            first[ident] = key
    return aliases


def canonical_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict without alias keys, as contiguous CPU tensors."""
    aliases = alias_map(module)
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k not in aliases}


def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the module's canonical state_dict as safetensors."""
    from safetensors.torch import save_file

    save_file(canonical_state_dict(module), str(path), metadata=metadata or {})


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a safetensors file written by :func:`save_weights` strictly (aliases restored)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path), device="cpu")
    for alias, canonical in alias_map(module).items():
        if canonical in tensors and alias not in tensors:
            tensors[alias] = tensors[canonical]
    module.load_state_dict(tensors, strict=True)
