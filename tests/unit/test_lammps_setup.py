"""The one LAMMPS set-up (thermocg.lammps_setup): loading LAMMPS in a process must not slow
thermocg's own MD in that process."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import require_lammps


@pytest.mark.lammps
def test_a_lammps_instance_leaves_torch_threads_alone():
    """A new LAMMPS sets OpenMP's thread count to 1 for the whole process (no OMP_NUM_THREADS),
    and torch shares that pool: without the fix torch went from 2 threads to 1 here."""
    require_lammps()
    from thermocg.lammps_setup import lammps

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        lammps().close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
