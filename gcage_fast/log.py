"""The package logger. Library code logs; only the CLI decides where messages go."""

from __future__ import annotations

import logging

logger = logging.getLogger("gcage_fast")
logger.addHandler(logging.NullHandler())

__all__ = ["logger"]
