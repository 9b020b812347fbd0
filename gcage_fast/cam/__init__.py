"""CAM: the forward-only family computed inside the base graph, and the hook/backward reference."""

from gcage_fast.cam.targets import CamTarget, parse_target
from gcage_fast.cam.weights import METHODS

__all__ = ["METHODS", "CamTarget", "parse_target"]
