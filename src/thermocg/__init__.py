"""thermocg: temperature-transferable machine-learned coarse-grained force fields.

Learns CG force fields from thermal response forces (Sahrmann et al., "Learning
Thermal Response Forces", arXiv 2602.23198). Pipeline stages are subpackages:
``thermocg.reference`` (all-atom OpenMM reference data), and, as they land,
mapping, targets, training, simulation, evaluation and report.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "load_model", "read_reference"]


def __getattr__(name):  # lazy: keep ``import thermocg`` (and the CLI) fast
    if name == "load_config":
        from thermocg.config import load_config
        return load_config
    if name == "read_reference":
        from thermocg.frames import read_reference
        return read_reference
    if name == "load_model":
        from thermocg.models.stage import load_model
        return load_model
    raise AttributeError(f"module 'thermocg' has no attribute {name!r}")
