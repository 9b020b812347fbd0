"""The scan: ``scan(ScanConfig(...))`` runs or resumes one into an output directory and returns a
:class:`ScanSummary`; ``progress`` is called with a :class:`ScanProgress` as it goes. The code is in
gcage_fast.scan.local.

This package is callable, as the function: Python binds ``gcage_fast.scan`` to this subpackage as soon as anything
imports it, and the same name is the public ``from gcage_fast import scan``, so either way ``scan(config)`` runs a
scan whatever was imported first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

from gcage_fast.scan.local import ScanProgress, ScanSummary, scan

if TYPE_CHECKING:
    from gcage_fast.config import ScanConfig

__all__ = ["scan", "ScanProgress", "ScanSummary"]


class _CallablePackage(ModuleType):
    def __call__(self, config: ScanConfig, progress: Callable[[ScanProgress], None] | None = None) -> ScanSummary:
        return scan(config, progress)

    __call__.__doc__ = scan.__doc__


sys.modules[__name__].__class__ = _CallablePackage
