"""The import's unit check (issue 33): in NVE, each molecule's centre of mass accelerates as
F_COM/M. Oracle: OpenMM's own NVE run of the committed 64 waters (1 fs Verlet, rigid SPC/E),
frames every 10 fs with their forces, written as a user's extended XYZ file. Read in the unit it
was written in, the slope is ~1; read in the two other energy units, or with the frames declared
twice as far apart, it is refused naming the cause; a file without forces is not checked."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from thermocg.errors import DataFormatError
from thermocg.reference.imported import (UNITS_SLOPE_BAND, Reader, check_units, com_acceleration_slope,
                                         energy_factor, read_frames)
from tests.helpers import WATER64

EVERY_FS = 10


@pytest.fixture(scope="module")
def nve():
    """Positions (unwrapped), forces (kcal/mol/Å), masses, molecule index, species and box of 41
    frames 10 fs apart, from the committed frame 0 and its velocities."""
    import openmm as mm
    import openmm.unit as u

    from thermocg.frames import read_reference
    from thermocg.reference import engine

    ref = read_reference(WATER64)
    top, _ = engine.build_water_box(64, 0.997, "spce")
    system = engine.create_system(top, "spce", 6.0, 1e-5)
    assert np.allclose(engine.masses(system), ref.masses)
    integrator = mm.VerletIntegrator(1.0 * u.femtosecond)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    engine.set_state(context, ref.positions[0], ref.velocities[0], ref.box[0])
    context.applyConstraints(1e-8)
    x, f = [], []
    for _ in range(41):
        s = engine.snapshot(context)
        x.append(s.positions)
        f.append(s.forces)
        integrator.step(EVERY_FS)
    return np.array(x), np.array(f), ref.masses, ref.molecule_index, ref.species, ref.box[0]


def _write(path, nve, unit, forces=True):
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    x, f, masses, mol, species, box = nve
    images = []
    for k in range(len(x)):
        atoms = ase.Atoms(numbers=species, positions=x[k], cell=np.diag(box), pbc=True, masses=masses)
        atoms.new_array("mol-id", mol + 1)
        if forces:
            atoms.calc = SinglePointCalculator(atoms, forces=f[k] / energy_factor(unit))
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


def test_right_units_give_a_slope_near_one(nve):
    x, f, masses, mol, _, _ = nve
    slope = com_acceleration_slope(x, f, masses, mol, EVERY_FS)
    plain = com_acceleration_slope(x, f, masses, mol, EVERY_FS, weights=(0.0, 1.0, 0.0))
    assert 0.9 < slope < 1.1 and UNITS_SLOPE_BAND[0] < slope < UNITS_SLOPE_BAND[1], slope
    # Numerov's weights follow the force's change within h better than F(t) alone
    assert abs(slope - 1.0) < abs(plain - 1.0), (slope, plain)


@pytest.mark.parametrize("written", ["kcal/mol", "kJ/mol", "eV"])
def test_a_wrong_unit_or_spacing_is_refused(nve, tmp_path, written):
    path = _write(tmp_path / "nve.extxyz", nve, written)
    for declared in ("kcal/mol", "kJ/mol", "eV"):
        frames = read_frames(path, 0, Reader(energy_unit=declared), require_energies=False)
        if declared == written:
            slope = check_units(frames, EVERY_FS, path, declared)
            assert 0.9 < slope < 1.1
            with pytest.raises(DataFormatError, match=r"frame_interval_fs \(now 20; the positions fit about (9\.9|10\.0)"):
                check_units(frames, 2 * EVERY_FS, path, declared)  # frames declared twice as far apart
        else:
            with pytest.raises(DataFormatError, match=f"the data fit energy_unit = '{written}'"):
                check_units(frames, EVERY_FS, path, declared)


def test_segments_that_cannot_tell_are_said_once(nve, tmp_path, caplog):
    path = _write(tmp_path / "nve.extxyz", nve, "kcal/mol", forces=False)
    frames = read_frames(path, 0, Reader(energy_unit="kcal/mol"), require_energies=False)
    with caplog.at_level(logging.INFO, logger="thermocg.reference.imported"):
        assert check_units(frames, EVERY_FS, path, "kcal/mol") is None
    assert "units not checked: the NVE segment has no forces" in caplog.text
    wide = read_frames(_write(tmp_path / "wide.extxyz", nve, "kcal/mol"), 0, Reader(energy_unit="kcal/mol"),
                       require_energies=False)
    assert check_units(wide, 50.0, path, "kcal/mol") is None
