"""CAM: the forward-only family computed inside the base graph, the hook/backward reference, and the methods that
only explanations compute. :mod:`gcage_fast.cam.registry` names them all.

Importing this package does not import torch (the configuration reads the registry); the targets load on use.
"""

from gcage_fast.cam.registry import IN_GRAPH_METHODS as METHODS

__all__ = ["METHODS", "CamTarget", "parse_target"]


def __getattr__(name: str):  # lazy: CamTarget and parse_target import torch
    if name in ("CamTarget", "parse_target"):
        from gcage_fast.cam import targets

        return getattr(targets, name)
    raise AttributeError(name)
