"""The coarse-grained map: all-atom frames -> one bead per molecule (THEORY.md §1).

``LinearMap`` holds ``R_I = sum_i c_Ii r_i`` for a partition of the atoms into
beads (centre of mass by default) and maps forces as ``f_I = sum_{i in I} f_i``,
the sum of the atomic forces of the bead's atoms. That force map is valid for a
non-overlapping map whose beads contain whole constrained groups (rigid water:
whole molecules), because constraint forces are then internal to a bead and
cancel; the constructor refuses maps where it is not.
"""

from thermocg.mapping.linear import CGFrames, LinearMap, map_reference

__all__ = ["CGFrames", "LinearMap", "map_reference"]
