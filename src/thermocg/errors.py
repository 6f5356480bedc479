"""The exception family of thermocg.

A user-facing error carries a message that names the file, the field or frame,
what was expected and what was found. The CLI prints ``str(err)`` on one line
(a traceback only with ``--debug``).
"""

from __future__ import annotations


class ThermocgError(Exception):
    """Base class of every error thermocg raises on purpose."""


class ConfigError(ThermocgError):
    """The configuration file is missing, unreadable or invalid."""


class DataFormatError(ThermocgError):
    """An input or existing output file is unreadable, incomplete or incompatible."""


class SimulationError(ThermocgError):
    """A simulation went wrong (NaN energies, exploding forces, failed checks)."""


class UnstableSystem(SimulationError):
    """One system of a batch failed the MD's safety checks (NaN, a runaway force, beads too close):
    ``system`` is its index in the batch, ``step`` the step it was caught at, ``phase`` "nvt" or
    "nve" once known, ``reason`` the check's own words."""

    def __init__(self, message: str, system: int = -1, step: int = -1, phase: str | None = None,
                 reason: str | None = None):  # defaults: rebuilt from a message
        super().__init__(message)
        self.system, self.step, self.phase = system, step, phase
        self.reason = message if reason is None else reason

    def __reduce__(self):  # picklable with its fields (a worker process sends it back whole)
        return type(self), (str(self), self.system, self.step, self.phase, self.reason)


class TrainingError(ThermocgError):
    """A training diverged (a non-finite loss) or did not improve on its starting point."""
