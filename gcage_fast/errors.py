"""Exceptions raised by gcage_fast.

Per-image problems never raise: they become rows with ``status = error``. These exceptions are for problems of
the run itself (configuration, models, engines, output directory); the CLI turns each into a one-line
``Error: ...`` and exit code 1.
"""

from __future__ import annotations

__all__ = [
    "GcageError",
    "ConfigError",
    "InputError",
    "ModelError",
    "ExportError",
    "EngineError",
    "OutOfMemory",
    "DeviceFault",
    "OutputError",
    "MissingDependencyError",
    "Interrupted",
    "CircuitBreakerError",
]


class GcageError(Exception):
    """Base class of every error a user can act on. The message says what to do."""


class ConfigError(GcageError):
    """An option or combination of options is invalid."""


class InputError(GcageError):
    """A named input (file, directory, list) does not exist or cannot be enumerated."""


class ModelError(GcageError):
    """A model cannot be found, verified or loaded."""


class ExportError(GcageError):
    """ONNX export failed or its parity check exceeded the tolerance."""


class EngineError(GcageError):
    """A runner could not be created, or a requested provider/device is not active."""


class OutOfMemory(EngineError):
    """The engine ran out of device memory even at batch size 1 (the input gets an ``engine.out_of_memory``
    row; the run goes on)."""


class DeviceFault(EngineError):
    """A sticky device error (illegal address, launch failure, ECC error): the device context is unusable, so the
    run stops with a non-zero exit and ``--resume`` continues in a fresh process."""


class OutputError(GcageError):
    """The output directory cannot be written, or does not hold what the command expects."""


class MissingDependencyError(GcageError):
    """An optional package is needed and not installed; the message names the extra to install."""


class Interrupted(GcageError):
    """The scan was stopped by a signal; ``exit_code`` is 128 + the signal number. Resume with --resume."""

    def __init__(self, signum: int, committed: int | None = None, total: int | None = None,
                 lost: int | None = None) -> None:
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        self.committed, self.total, self.lost = committed, total, lost
        where = ""
        if committed is not None and total is not None:
            where = f": {committed} of {total} inputs are committed"
            if lost:
                where += f", {lost} scored since the last commit will be redone"
        super().__init__(f"interrupted by {signal.Signals(signum).name}{where}; run the same command with "
                         "--resume to continue")


class CircuitBreakerError(GcageError):
    """Too many consecutive failures that do not depend on the input: the environment is broken."""
