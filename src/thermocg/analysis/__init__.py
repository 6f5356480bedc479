"""Analysis objects (freud / MDAnalysis style): settings in ``__init__``,
``compute(...) -> self``, results as read-only properties, ``plot(ax=None)``."""

from thermocg.analysis.dynamics import MSD, yeh_hummer_correction
from thermocg.analysis.structure import ADF, RDF, first_peak, integrated_absolute_error, pair_excess_entropy

__all__ = ["ADF", "MSD", "RDF", "first_peak", "integrated_absolute_error", "pair_excess_entropy",
           "yeh_hummer_correction"]
