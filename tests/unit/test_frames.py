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
