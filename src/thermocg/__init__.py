"""thermocg: temperature-transferable machine-learned coarse-grained force fields.

Learns CG force fields from thermal response forces (Sahrmann et al., "Learning
Thermal Response Forces", arXiv 2602.23198). The pipeline's stages (reference,
targets, train, simulate, evaluate, report) are listed in one table,
:mod:`thermocg.pipeline`; what each hands to the next is a typed record
(:mod:`thermocg.io.records`). ``thermocg.load_model`` loads a saved force field
without importing OpenMM or any stage.
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
        from thermocg.models.saved import load_model
        return load_model
    raise AttributeError(f"module 'thermocg' has no attribute {name!r}")
