"""CAM targets: which scalar Y of the base detector a heatmap explains.

- ``fake`` (default): Y = P(synthetic) = sum of the probabilities of every class except the authentic one.
- ``pred``: Y = probability of the predicted class (pytorch-grad-cam's default on a softmax model).
- ``class:NAME``: Y = probability of class NAME.
- ``logit:NAME`` / ``logit:pred``: Y = the pre-softmax score of class NAME / of the predicted class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gcage_fast.errors import ConfigError

__all__ = ["CamTarget", "parse_target", "target_delta", "target_value"]


@dataclass(frozen=True)
class CamTarget:
    """``kind`` is one of fake, pred, class, logit, logit_pred; ``index`` is the class index where one applies."""

    kind: str
    index: int
    text: str


def parse_target(text: str, class_names: tuple[str, ...] | list[str], authentic_index: int = 0) -> CamTarget:
    """Parse a target string against the model's class names."""
    names = list(class_names)
    t = text.strip()
    if t == "fake":
        return CamTarget("fake", authentic_index, t)
    if t == "pred":
        return CamTarget("pred", -1, t)
    if t == "logit:pred":
        return CamTarget("logit_pred", -1, t)
    for prefix, kind in (("class:", "class"), ("logit:", "logit")):
        if t.startswith(prefix):
            name = t[len(prefix):]
            if name not in names:
                raise ConfigError(f"unknown class {name!r} in CAM target {text!r}; classes: {', '.join(names)}")
            return CamTarget(kind, names.index(name), t)
    raise ConfigError(
        f"invalid CAM target {text!r}; use fake, pred, class:NAME, logit:NAME or logit:pred"
    )


def _one_hot(index: torch.Tensor, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    return (torch.arange(num_classes, device=like.device).unsqueeze(0) == index.unsqueeze(1)).to(like.dtype)


def _class_index(target: CamTarget, probs: torch.Tensor) -> torch.Tensor:
    if target.kind in ("pred", "logit_pred"):
        return probs.argmax(dim=1)
    return torch.full((probs.shape[0],), target.index, dtype=torch.long, device=probs.device)


def target_delta(target: CamTarget, probs: torch.Tensor) -> torch.Tensor:
    """dY/dlogits (N, C), in closed form from the softmax Jacobian: d p_c / d z = p_c (e_c - p)."""
    onehot = _one_hot(_class_index(target, probs), probs.shape[1], probs)
    if target.kind in ("logit", "logit_pred"):
        return onehot
    p_c = (probs * onehot).sum(dim=1, keepdim=True)
    delta = p_c * (onehot - probs)
    # P(synthetic) = 1 - P(authentic): the negative of the authentic class's derivative.
    return -delta if target.kind == "fake" else delta


def target_value(target: CamTarget, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Y per sample (N,), as autograd sees it (used by the hook-based reference)."""
    idx = _class_index(target, probs)
    if target.kind in ("logit", "logit_pred"):
        return logits.gather(1, idx.unsqueeze(1)).squeeze(1)
    p = probs.gather(1, idx.unsqueeze(1)).squeeze(1)
    return 1.0 - p if target.kind == "fake" else p
