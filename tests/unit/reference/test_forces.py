"""The mapped force of a molecule is the sum of its atomic forces (THEORY.md §1): check that
OpenMM's reported forces obey Newton's third law and that constraint forces cancel per molecule."""

from __future__ import annotations

import pytest

import numpy as np
import openmm as mm

from tests.helpers import water_context
from thermocg import units
from thermocg.reference import engine


def test_total_force_vanishes(water64):
    """In every frame OpenMM wrote (the committed reference frames, 40 of them)."""
    for f in water64[0].forces:
        total = f.sum(axis=0)
        # PME conserves momentum only to its grid accuracy: the net force is a tiny
        # fraction of the force scale (sqrt(N) * rms atomic force)
        scale = np.sqrt(len(f)) * np.sqrt(np.mean(np.sum(f * f, axis=1)))
        assert np.linalg.norm(total) < 1e-3 * scale, (total, scale)


@pytest.mark.slow  # ~9 s, an OpenMM box equilibrated on 2 cores; CI runs it
def test_constraint_forces_cancel_within_each_molecule():
    """One leapfrog step: per atom m dv/dt differs from f by the constraint force, per molecule
    M dV_com/dt equals the sum of the atomic forces (the constraint forces are internal)."""
    top, system, ctx = water_context(64, 6.0, steps=200)
    # the centre-of-mass motion remover shifts every velocity each step; take it out here
    for k in reversed(range(system.getNumForces())):
        if isinstance(system.getForce(k), mm.CMMotionRemover):
            system.removeForce(k)
    dt = 0.0005  # ps
    verlet = mm.VerletIntegrator(dt)
    verlet.setConstraintTolerance(1e-10)
    c = mm.Context(system, verlet, mm.Platform.getPlatformByName("Reference"))
    s0 = engine.snapshot(ctx)
    engine.set_state(c, s0.positions, s0.velocities, s0.box)
    c.applyConstraints(1e-10)
    c.applyVelocityConstraints(1e-10)
    a = engine.snapshot(c)
    verlet.step(1)
    b = engine.snapshot(c)
    m = engine.masses(system)
    mol = engine.molecule_index(top)
    # m dv/dt in kcal/(mol Å): amu Å/ps^2 -> kcal/(mol Å) is the same factor as amu Å^2/ps^2 -> kcal/mol
    accel_force = m[:, None] * (b.velocities - a.velocities) / dt * units.MVV_TO_KCAL
    constraint = accel_force - a.forces
    per_atom = np.linalg.norm(constraint, axis=1)
    assert np.median(per_atom) > 10.0  # constraint forces are large on each atom ...
    per_molecule = np.stack([np.bincount(mol, constraint[:, k]) for k in range(3)], axis=1)
    mapped = np.stack([np.bincount(mol, a.forces[:, k]) for k in range(3)], axis=1)
    # ... and cancel in each molecule's sum (to the constraint solver's tolerance)
    assert np.max(np.linalg.norm(per_molecule, axis=1)) < 1e-3 * np.median(per_atom)
    assert np.max(np.abs(per_molecule)) < 1e-3 * np.sqrt(np.mean(mapped**2))
