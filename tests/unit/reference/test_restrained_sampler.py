"""Restrained-bead sampling with OpenMM (issue 15): 64 SPC/E waters, every centre of mass on a
spring, the orientations free.

Statistical bounds: spreads within 25 % of equipartition (a variance from 64 x 3 x ~100
effectively independent samples is good to a few per cent); the force balance to 5 % (measured
0.1-0.3 %). Seeds fixed."""

from __future__ import annotations

import numpy as np
import openmm as mm
import pytest

from tests.helpers import water_context
from thermocg import units
from thermocg.errors import ConfigError
from thermocg.reference import engine
from thermocg.reference.restrained import RestrainedSampler

# slow: samples restrained water with OpenMM: ~21 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

T = 300.0
KT = units.KB * T


@pytest.fixture(scope="module")
def water():
    top, system, ctx = water_context(64, 6.0, temperature_K=T, steps=500, seed=11)
    snap = engine.snapshot(ctx)
    return mm.XmlSerializer.serialize(system), engine.molecule_index(top), snap


@pytest.fixture(scope="module")
def samples(water):
    xml, mol, snap = water
    out = {}
    for k in (250.0, 1000.0):
        sampler = RestrainedSampler(xml, mol, T, k, timestep_fs=2.0, device="cpu", threads=1)
        out[k] = sampler.sample(snap.positions, snap.box, equilibration_fs=400, n_samples=200, interval_fs=20,
                                seed=5)
    return out


def test_each_centre_of_mass_stays_within_its_thermal_spread(samples):
    """Equipartition of the spring: <dx^2> = kB T / k_eff per axis, k_eff = k plus the curvature of
    the mean-force landscape (a few per cent of k here, and positive on average in a liquid):
    the variance is kB T / k within 25 %, and at most 5 % above it; it shrinks as 1/k."""
    var = {k: float(np.var(s.offsets)) for k, s in samples.items()}
    for k, v in var.items():
        assert 0.75 < v * k / KT < 1.05, (k, v * k / KT)
        assert np.abs(samples[k].offsets).max() < 6 * np.sqrt(KT / k)
    ratio = var[250.0] / var[1000.0]
    assert 3.0 < ratio < 5.0, ratio


def test_sampled_physical_forces_sum_to_zero(samples):
    """The physical forces of a closed system sum to zero (PME: to its accuracy). (The springs'
    forces sum to almost zero too: the system's CMMotionRemover freezes the one collective mode
    that would move them all together, so this is no test of the spring's exclusion; the force
    balance below is.)"""
    for s in samples.values():
        assert np.abs(s.forces.sum(axis=1)).max() < 0.05


def test_mean_physical_force_balances_the_spring(samples):
    """In the restrained equilibrium the total force on each centre of mass averages to zero:
    <f_I> = k <offset_I>. A check of the spring's units and sign, of the exclusion of its force
    (with the spring's force included, the sampled mean force would be ~0 and the slope 0) and of
    equilibration. The total force is the centre of mass's acceleration (plus Langevin
    terms), whose time average telescopes: it vanishes faster than sampling noise, so the test is
    on the whole field: slope 1 within 5 %, residual below 10 % of the mean force (measured:
    slope 0.999 and 1.002, residual 4 %)."""
    for k, s in samples.items():
        mean_f, balance = s.forces.mean(axis=0), k * s.offsets.mean(axis=0)
        slope = float(np.sum(mean_f * balance) / np.sum(mean_f * mean_f))
        residual = float(np.sqrt(np.mean((mean_f - balance) ** 2) / np.mean(mean_f**2)))
        assert abs(slope - 1.0) < 0.05 and residual < 0.1, (k, slope, residual)


def test_energies_are_per_molecule_and_sum_to_the_physical_energy(water, samples):
    """The per-molecule energies of every sample sum to the physical potential energy (checked
    by the sampler against OpenMM to 1e-4, failing loudly otherwise); here: they fluctuate, and
    their mean per molecule is the liquid's (about -10 kcal/mol for SPC/E at 300 K)."""
    e = samples[1000.0].molecule_energies
    assert e.shape == (200, 64)
    assert -12.5 < e.mean() < -8.5
    assert np.std(e.sum(axis=1)) > 1.0  # the hidden degrees of freedom move


def test_a_spring_too_stiff_for_the_time_step_is_refused(water):
    xml, mol, _ = water
    with pytest.raises(ConfigError, match="period"):
        RestrainedSampler(xml, mol, T, 20000.0, timestep_fs=2.0, device="cpu", threads=1)
    with pytest.raises(ConfigError, match="restraint_k"):
        RestrainedSampler(xml, mol, T, 0.0, device="cpu", threads=1)


def test_broken_molecules_are_refused(water):
    xml, mol, snap = water
    sampler = RestrainedSampler(xml, mol, T, 500.0, device="cpu", threads=1)
    x = snap.positions.copy()
    x[1] += snap.box  # one hydrogen one box image away: wrapped, not whole
    with pytest.raises(ValueError, match="whole"):
        sampler.sample(x, snap.box, 20, 3, 20, seed=1)
