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


class TrainingError(ThermocgError):
    """A training diverged (a non-finite loss) or did not improve on its starting point."""
