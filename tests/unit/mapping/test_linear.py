"""The CG map: centre of mass under periodic boundaries, the force map, refusal of bad maps."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.mapping import LinearMap, map_reference


def _molecules(rng, n_mol=20, box=10.0):
    """Random rigid-ish triatomics (O at centre, two H within 1 Å), unwrapped."""
    centres = rng.uniform(0, box, (n_mol, 3))
    x = np.repeat(centres, 3, axis=0) + np.concatenate(
        [np.zeros((n_mol, 1, 3)), rng.normal(0, 0.6, (n_mol, 2, 3))], axis=1).reshape(-1, 3)
    masses = np.tile([15.999, 1.008, 1.008], n_mol)
    return x, masses, np.repeat(np.arange(n_mol), 3), np.full(3, box)


def test_center_of_mass_equals_the_matrix_form_and_ignores_wrapping():
    rng = np.random.default_rng(0)
    x, m, mol, box = _molecules(rng)
    cmap = LinearMap.center_of_mass(mol, m)
    expect = cmap.matrix() @ x
    com = np.array([np.average(x[mol == j], axis=0, weights=m[mol == j]) for j in range(20)])
    np.testing.assert_allclose(expect, com, atol=1e-12)
    np.testing.assert_allclose(cmap.positions(x), com, atol=1e-12)
    wrapped = x - box * np.floor(x / box)  # molecules broken across the boundary
    got = cmap.positions(wrapped, box)
    d = got - com
    np.testing.assert_allclose(d - box * np.round(d / box), 0.0, atol=1e-12)
    assert np.any(np.abs(wrapped - x) > 1)  # some atoms really were moved by a box edge
    np.testing.assert_allclose(cmap.bead_masses, 18.015)


def test_translation_covariance_and_batches():
    rng = np.random.default_rng(1)
    x, m, mol, box = _molecules(rng)
    cmap = LinearMap.center_of_mass(mol, m)
    frames = np.stack([x, x + [1.0, -2.0, 0.5]])
    r = cmap.positions(frames, np.stack([box, box]))
    np.testing.assert_allclose(r[1] - r[0], np.broadcast_to([1.0, -2.0, 0.5], r[0].shape), atol=1e-12)


def test_force_map_recovers_the_gradient_of_a_cg_potential():
    """If u(r) = U(R(r)), the mapped force is exactly -dU/dR: here U = sum_I k/2 |R_I - a_I|^2,
    so f_i = -c_i k (R_I - a_I) and the bead's sum is -k (R_I - a_I)."""
    rng = np.random.default_rng(2)
    x, m, mol, box = _molecules(rng)
    cmap = LinearMap.center_of_mass(mol, m)
    k, anchors = 3.0, rng.uniform(0, 10, (20, 3))
    big_r = cmap.positions(x)
    f_atoms = -cmap.coefficients[:, None] * k * (big_r - anchors)[mol]
    np.testing.assert_allclose(cmap.forces(f_atoms), -k * (big_r - anchors), atol=1e-12)


def test_mapped_forces_of_reference_water_conserve_momentum(water64):
    f, _ = water64
    cg = map_reference(f)
    assert cg.positions.shape == (f.n_frames, 64, 3) and cg.bead_energy.shape == (f.n_frames, 64)
    np.testing.assert_allclose(cg.bead_energy.sum(1), f.molecule_energy.sum(1))
    total = cg.forces.sum(axis=1)
    scale = np.sqrt(64) * np.sqrt(np.mean(np.sum(cg.forces**2, axis=-1)))
    assert np.max(np.linalg.norm(total, axis=1)) < 1e-3 * scale
    # beads sit at the molecules' centres of mass: within 0.07 Å of the oxygen for SPC/E
    d = cg.positions - f.positions[:, ::3]
    assert np.max(np.linalg.norm(d, axis=-1)) < 0.07


@pytest.mark.parametrize("bead, weights, message", [
    ([0, 0, 2], [1, 1, 1], "have no atoms"),
    ([0, -1, 1], [1, 1, 1], "exactly one bead"),
    ([0, 0, 1], [1, 1, 0], "zero total weight"),
    ([0, 0, 1], [1, -1, 1], ">= 0"),
    ([0, 0, 1], [1, 1], "weights have shape"),
])
def test_bad_maps_are_refused(bead, weights, message):
    with pytest.raises(ValueError, match=message):
        LinearMap(np.array(bead), np.array(weights, float))
