"""Per-molecule energies: sum = OpenMM's total, invariances, brute-force references (THEORY.md §3)."""

from __future__ import annotations

import itertools

import numpy as np
import openmm as mm
import pytest
from scipy.special import erfc

from tests.helpers import water_context
from thermocg import units
from thermocg.reference import engine
from thermocg.reference.decomposition import EnergyDecomposition, NonbondedParameters, dispersion_correction_energy


def _decompose(top, system, ctx):
    dec = engine.decomposition_for(system, ctx, engine.molecule_index(top))
    return dec, engine.snapshot(ctx)


# the extremes of temperature on the tests' box, and the study's own size and cutoff (a 125-water
# case at 7 Å added nothing between them but 13 s of the default suite)
@pytest.mark.parametrize("n_molecules, cutoff_A, temperature_K", [
    (64, 6.0, 250.0), pytest.param(64, 6.0, 600.0, marks=pytest.mark.slow),
    pytest.param(216, 9.0, 450.0, marks=pytest.mark.slow)])  # ~4 and ~10 s on 2 cores; CI runs them
def test_sum_equals_openmm_total(n_molecules, cutoff_A, temperature_K):
    top, system, ctx = water_context(n_molecules, cutoff_A, temperature_K=temperature_K, steps=200,
                                     seed=n_molecules)
    dec, _ = _decompose(top, system, ctx)
    for _ in range(3):  # several frames of the same run
        ctx.getIntegrator().step(50)
        snap = engine.snapshot(ctx)
        u = dec(snap.positions, snap.box)
        assert u.shape == (n_molecules,)
        rel = abs(u.sum() - snap.potential_energy) / abs(snap.potential_energy)
        assert rel < 1e-5, rel  # the tolerance; observed 3e-7 .. 1.2e-6 on CPU


@pytest.mark.slow  # ~2 s on 2 cores; CI runs it
def test_sum_equals_openmm_total_flexible_water():
    """Harmonic bonds and angles (flexible SPC/E) go into the per-molecule sum too."""
    top, system, ctx = water_context(64, 6.0, rigid=False, steps=200)
    dec, snap = _decompose(top, system, ctx)
    assert dec.bonded.bonds.shape == (128, 2) and dec.bonded.angles.shape == (64, 3)
    c = dec.components(snap.positions, snap.box)
    assert c["bonded"].sum() > 0.1  # thermal bond/angle energy is really there
    assert abs(sum(v.sum() for v in c.values()) - snap.potential_energy) < 1e-5 * abs(snap.potential_energy)


@pytest.mark.slow  # ~6 s on 2 cores; CI runs it
def test_translation_and_wrapping_invariance():
    top, system, ctx = water_context(64, 6.0)
    dec, snap = _decompose(top, system, ctx)
    u0 = dec(snap.positions, snap.box)
    rng = np.random.default_rng(3)
    shifted = snap.positions + rng.uniform(-50, 50, 3)
    np.testing.assert_allclose(dec(shifted, snap.box), u0, rtol=0, atol=1e-8)
    # wrapping single atoms into the box (molecules broken) changes nothing either
    wrapped = snap.positions - snap.box * np.floor(snap.positions / snap.box)
    np.testing.assert_allclose(dec(wrapped, snap.box), u0, rtol=0, atol=1e-8)


@pytest.mark.slow  # ~5 s on 2 cores; CI runs it
def test_permuting_molecules_permutes_energies():
    top, system, ctx = water_context(64, 6.0)
    dec, snap = _decompose(top, system, ctx)
    u0 = dec(snap.positions, snap.box)
    perm = np.random.default_rng(5).permutation(64)  # new molecule m is old molecule perm[m]
    atoms = (3 * perm[:, None] + np.arange(3)).ravel()
    nb = dec.nb
    inverse = np.empty_like(atoms)
    inverse[atoms] = np.arange(len(atoms))
    params = NonbondedParameters(
        charges=nb.charges[atoms], sigma=nb.sigma[atoms], epsilon=nb.epsilon[atoms],
        exceptions=inverse[nb.exceptions], exception_charge_prod=nb.exception_charge_prod,
        exception_sigma=nb.exception_sigma, exception_epsilon=nb.exception_epsilon, cutoff_A=nb.cutoff_A,
        alpha_per_A=nb.alpha_per_A)
    dec_p = EnergyDecomposition(params, np.repeat(np.arange(64), 3))
    np.testing.assert_allclose(dec_p(snap.positions[atoms], snap.box), u0[perm], rtol=0, atol=1e-8)


@pytest.mark.slow  # ~4 s on 2 cores; CI runs it
def test_kspace_sum_is_converged():
    top, system, ctx = water_context(64, 6.0)
    dec, snap = _decompose(top, system, ctx)
    tight = EnergyDecomposition(dec.nb, dec.mol, kspace_tolerance=1e-15)
    np.testing.assert_allclose(dec(snap.positions, snap.box), tight(snap.positions, snap.box), rtol=0, atol=1e-7)


# -- brute-force references --------------------------------------------------------


def _pair_list_bruteforce(n_atoms, mol):
    return [(i, j) for i, j in itertools.combinations(range(n_atoms), 2) if mol[i] != mol[j]]


@pytest.mark.slow  # ~5 s on 2 cores; CI runs it
def test_lennard_jones_only_matches_bruteforce_and_openmm():
    """Charges off: per-molecule LJ by a plain double loop; total against OpenMM's Reference platform."""
    top, system, ctx = water_context(64, 6.0)
    snap = engine.snapshot(ctx)
    nb = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)][0]
    for i in range(nb.getNumParticles()):
        q, s, e = nb.getParticleParameters(i)
        nb.setParticleParameters(i, 0.0, s, e)
    ref = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    engine.set_state(ref, snap.positions, box_A=snap.box)
    e_openmm = ref.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
    dec = engine.decomposition_for(system, ref, engine.molecule_index(top))
    u = dec(snap.positions, snap.box)
    assert abs(u.sum() - e_openmm * units.KJ_TO_KCAL) < 1e-9 * abs(e_openmm) + 1e-9

    # brute force: every intermolecular pair once, minimum image, truncated at the cutoff
    x, box, mol = snap.positions, snap.box, dec.mol
    expect = np.zeros(64)
    for i, j in _pair_list_bruteforce(len(x), mol):
        eps = np.sqrt(dec.nb.epsilon[i] * dec.nb.epsilon[j])
        if eps == 0.0:
            continue
        d = x[i] - x[j]
        r = np.linalg.norm(d - box * np.round(d / box))
        if r < dec.nb.cutoff_A:
            sig = 0.5 * (dec.nb.sigma[i] + dec.nb.sigma[j])
            e = 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6)
            expect[mol[i]] += e / 2
            expect[mol[j]] += e / 2
    expect += dispersion_correction_energy(dec.nb.sigma, dec.nb.epsilon, dec.nb.cutoff_A, np.prod(box)) / 64
    np.testing.assert_allclose(u, expect, rtol=1e-10, atol=1e-10)


@pytest.mark.slow  # ~5 s on 2 cores; CI runs it
def test_dispersion_correction_matches_openmm():
    top, system, ctx = water_context(64, 6.0, steps=0)
    snap = engine.snapshot(ctx)
    nb = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)][0]
    energies = []
    for flag in (True, False):
        nb.setUseDispersionCorrection(flag)
        c = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
        engine.set_state(c, snap.positions, box_A=snap.box)
        energies.append(c.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole))
    dec = engine.decomposition_for(system, ctx, engine.molecule_index(top))
    ours = dispersion_correction_energy(dec.nb.sigma, dec.nb.epsilon, dec.nb.cutoff_A, np.prod(snap.box))
    assert ours == pytest.approx((energies[0] - energies[1]) * units.KJ_TO_KCAL, rel=1e-8)


def _ewald_per_molecule_bruteforce(x, q, mol, box, alpha, n_images=2, n_k=8):
    """Per-molecule Coulomb energy q_i phi_i / 2 by an independent, naive Ewald sum.

    The electrostatic potential phi_i at atom i from all other non-excluded charges
    (all periodic images, tin-foil boundary) does not depend on alpha; so a
    different alpha, explicit image loops and an explicit k loop make an
    independent reference for the decomposition's real + reciprocal + self + excluded terms.
    """
    shifts = np.array(list(itertools.product(range(-n_images, n_images + 1), repeat=3))) * box
    same = mol[:, None] == mol[None, :]
    d = x[:, None, None, :] - x[None, :, None, :] + shifts[None, None, :, :]  # (i, j, image, 3)
    r = np.linalg.norm(d, axis=-1)
    own = same[:, :, None] & np.all(shifts == 0, axis=1)[None, None, :]  # own molecule, central image
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where((r > 0) & ~own, erfc(alpha * r) / r, 0.0)
    phi = np.einsum("ijs,j->i", terms, q)
    # reciprocal: all k != 0 in a cube (no half-space trick, no factorisation)
    nvec = np.array([v for v in itertools.product(range(-n_k, n_k + 1), repeat=3) if v != (0, 0, 0)])
    k = 2 * np.pi * nvec / box
    k2 = np.sum(k * k, axis=1)
    e = np.exp(1j * x @ k.T)  # (n, n_k)
    sk = q @ e
    phi += 4 * np.pi / np.prod(box) * np.real(e.conj() @ (np.exp(-k2 / (4 * alpha**2)) / k2 * sk))
    phi -= 2 * alpha / np.sqrt(np.pi) * q  # self
    # remove the smooth (erf) part of the own molecule's charges, which the k-sum included
    for i in range(len(x)):
        for j in np.flatnonzero(same[i]):
            if j != i:
                d = x[i] - x[j]
                r = np.linalg.norm(d - box * np.round(d / box))
                phi[i] -= q[j] * (1 - erfc(alpha * r)) / r
    return np.bincount(mol, 0.5 * units.COULOMB * q * phi)


def test_coulomb_only_matches_bruteforce_ewald():
    top, _, ctx = water_context(27, 4.0, steps=100)
    # a tight Ewald tolerance for the comparison (one energy evaluation only: the PME grid is large)
    system = engine.create_system(top, "spce", 4.0, 1e-7)
    nb = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)][0]
    for i in range(nb.getNumParticles()):
        q, s, e = nb.getParticleParameters(i)
        nb.setParticleParameters(i, q, s, 0.0)
    ref = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    snap = engine.snapshot(ctx)
    engine.set_state(ref, snap.positions, box_A=snap.box)
    dec = engine.decomposition_for(system, ref, engine.molecule_index(top))
    u = dec(snap.positions, snap.box)
    e_openmm = ref.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
    assert abs(u.sum() - e_openmm * units.KJ_TO_KCAL) < 1e-6 * abs(e_openmm * units.KJ_TO_KCAL)
    brute = _ewald_per_molecule_bruteforce(snap.positions, dec.nb.charges, dec.mol, snap.box, alpha=0.45)
    # a second alpha validates the brute force itself (phi is alpha-independent)
    brute2 = _ewald_per_molecule_bruteforce(snap.positions, dec.nb.charges, dec.mol, snap.box, alpha=0.6,
                                            n_images=1, n_k=10)
    np.testing.assert_allclose(brute, brute2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(u, brute, rtol=0, atol=2e-5)  # kcal/mol per molecule


def test_rejects_charged_systems_and_bad_shapes():
    z = np.zeros(0)
    with pytest.raises(ValueError, match="net charge"):
        NonbondedParameters(np.array([1.0, 0.0]), np.ones(2), np.ones(2), np.zeros((0, 2), int), z, z, z, 3.0, 0.3)
    p = NonbondedParameters(np.array([1.0, -1.0]), np.ones(2), np.ones(2), np.zeros((0, 2), int), z, z, z, 3.0, 0.3)
    dec = EnergyDecomposition(p, [0, 1])
    with pytest.raises(ValueError, match="positions have shape"):
        dec(np.zeros((3, 3)), np.full(3, 10.0))
    with pytest.raises(ValueError, match="half the box"):
        dec(np.zeros((2, 3)), np.full(3, 5.0))
