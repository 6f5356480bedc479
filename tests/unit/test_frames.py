"""The frames container refuses what would divide by zero later: a box edge <= 0 is named
with its frame (it used to pass and come back as a box mismatch between two equal sizes)."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.errors import DataFormatError
from thermocg.frames import ReferenceFrames


def _frames(box):
    f, n = 2, 3
    return ReferenceFrames(positions=np.zeros((f, n, 3)), velocities=np.zeros((f, n, 3)), forces=np.zeros((f, n, 3)),
                           box=box, potential_energy=np.zeros(f), molecule_energy=np.zeros((f, 1)),
                           molecule_index=np.zeros(n, dtype=int), masses=np.ones(n), species=np.ones(n, dtype=int),
                           temperature_K=300.0, step=np.arange(f), source=None)


def test_a_zero_box_edge_is_named_with_its_frame():
    _frames(np.full((2, 3), 10.0))
    box = np.full((2, 3), 10.0)
    box[1] = 0.0
    with pytest.raises(DataFormatError, match=r"box edges must be positive, found \[0.0, 0.0, 0.0\] Å in frame 1"):
        _frames(box)


def test_bead_types_are_checked_and_travel_to_the_beads():
    """Each molecule's bead type must name one of the type names; the centre-of-mass map gives each
    bead its molecule's type; a file without types (before mixtures) is one type."""
    from thermocg.mapping import map_reference

    f, n = 2, 4
    kw = dict(positions=np.zeros((f, n, 3)), velocities=None, forces=np.zeros((f, n, 3)), box=np.full((f, 3), 10.0),
              potential_energy=np.zeros(f), molecule_energy=np.zeros((f, 2)), molecule_index=np.array([0, 0, 1, 1]),
              masses=np.ones(n), species=np.ones(n, dtype=int), temperature_K=300.0, step=np.arange(f))
    assert ReferenceFrames(**kw).molecule_type.tolist() == [0, 0]
    frames = ReferenceFrames(**kw, molecule_type=np.array([1, 0]), bead_types=("HOH", "MOH"))
    cg = map_reference(frames)
    assert cg.bead_type.tolist() == [1, 0] and cg.bead_types == ("HOH", "MOH") and cg.n_types == 2
    with pytest.raises(DataFormatError, match=r"molecule_type holds types \[0, 2\], but there are 2 type names"):
        ReferenceFrames(**kw, molecule_type=np.array([2, 0]), bead_types=("HOH", "MOH"))
    with pytest.raises(DataFormatError, match=r"molecule_type has shape \(3,\), expected \(2,\)"):
        ReferenceFrames(**kw, molecule_type=np.array([0, 1, 0]), bead_types=("HOH", "MOH"))
