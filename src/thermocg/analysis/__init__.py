"""Analysis objects (freud / MDAnalysis style): settings in ``__init__``,
``compute(...) -> self``, results as read-only properties, ``plot(ax=None)``."""

from thermocg.analysis.structure import RDF

__all__ = ["RDF"]
