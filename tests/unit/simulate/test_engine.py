"""The torch CG MD engine: Langevin reaches equipartition, velocity Verlet conserves energy
with an error that shrinks as h^2, batched systems equal separate runs, and a run that goes
wrong stops with an error naming the step and the system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg import units
from thermocg.errors import SimulationError
from thermocg.simulate.engine import KCAL_TO_MVV, Integrator, Safety, min_distance, model_force_function

MASS = 18.0  # amu: a water bead
K_SPRING = 40.0  # kcal/(mol Å^2): rms displacement 0.2 Å at 600 K


def harmonic_wells(n_side=4, spacing=4.0, k=K_SPRING):
    """Independent beads, each in its own harmonic well on a cubic lattice (no pair forces):
    <PE> = <KE> = 3N/2 kB T exactly in equilibrium."""
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = torch.as_tensor((g + 0.5) * spacing)
    box = np.full(3, n_side * spacing)

    def fn(x, box_t, temperature):
        d = x - centres.to(x)
        return 0.5 * k * (d ** 2).sum((1, 2)), -k * d

    return fn, centres.numpy(), box


def test_langevin_reaches_equipartition_at_several_temperatures():
    fn, centres, box = harmonic_wells()
    temps = np.array([150.0, 300.0, 600.0])
    n = len(centres)
    md = Integrator(fn, np.full(n, MASS), box, temps, timestep_fs=2.0, friction_per_ps=5.0, seeds=[1, 2, 3],
                    dtype=torch.float64)
    assert_equipartition(md, centres, temps)
    assert md.n_dof == 3 * n


def assert_equipartition(md, centres, temps):
    """From the well centres, 500 steps, then 300 samples 10 steps apart: <KE> = <PE> = 3N/2 kB T.
    ~300 x 0.02 ps / (1/friction = 0.2 ps) ~ 30 independent samples of 3N = 192 dof: relative
    standard error ~ sqrt(2 / 5800) ~ 2 %; tolerance 6 %."""
    n = len(centres)
    md.set_state(np.broadcast_to(centres, (len(temps), n, 3)))
    md.step(500)  # ~2.5 relaxation times of the thermostat
    ke, pe = [], []
    for _ in range(300):
        md.step(10)
        ke.append(md.kinetic_energy().numpy())
        pe.append(md.potential.numpy())
    expected = 1.5 * n * units.KB * np.asarray(temps)
    np.testing.assert_allclose(np.mean(ke, 0) / expected, 1.0, atol=0.06)
    np.testing.assert_allclose(np.mean(pe, 0) / expected, 1.0, atol=0.06)


def test_maxwell_boltzmann_start_in_nve_has_no_momentum_and_the_right_temperature():
    fn, centres, box = harmonic_wells(n_side=6)
    md = Integrator(fn, np.full(len(centres), MASS), box, [200.0, 500.0], timestep_fs=1.0, friction_per_ps=0.0,
                    seeds=[5, 6], dtype=torch.float64)
    md.set_state(np.broadcast_to(centres, (2, len(centres), 3)))
    p = (md.velocities * MASS).sum(1)
    assert float(p.abs().max()) < 1e-9
    # 645 dof: the kinetic temperature of one draw is within ~3 sigma = 3 sqrt(2/645) = 17 %
    np.testing.assert_allclose(md.kinetic_temperature().numpy() / [200.0, 500.0], 1.0, atol=0.17)


def _nve_energy_error(model_fn, x0, masses, box, h_fs, t_ps, seed=3):
    md = Integrator(model_fn, masses, box, 300.0, timestep_fs=h_fs, friction_per_ps=0.0, seeds=[seed],
                    dtype=torch.float64, safety=Safety(interval=1000))
    md.set_state(x0[None])
    e = []
    for _ in range(int(round(t_ps * 1000 / h_fs))):
        md.step(1)
        e.append(float(md.potential[0] + md.kinetic_energy()[0]))
    e = np.array(e)
    return float(np.max(np.abs(e - e[0]))), float(md.kinetic_energy()[0])


def test_velocity_verlet_conserves_energy_with_an_h_squared_error(water_model):
    """NVE on the HIP-NN-TS model (network + prior, periodic, positions crossing the box):
    the energy error is small and shrinks ~4x when the timestep halves."""
    model, cg = water_model
    fn = model_force_function(model)
    errs = {}
    for h in (2.0, 1.0):
        errs[h], ke = _nve_energy_error(fn, cg.positions[0], cg.bead_masses, cg.box[0], h, 0.1)
    # bound: 1 % of the kinetic energy at 2 fs; measured ratios ~4 (second-order integrator)
    assert errs[2.0] < 0.01 * ke, (errs, ke)
    assert 2.5 < errs[2.0] / errs[1.0] < 6.0, errs


def test_batched_temperatures_equal_separate_runs(water_model):
    model, cg = water_model
    fn = model_force_function(model)
    temps, seeds = [250.0, 400.0, 700.0], [11, 12, 13]
    x0 = np.stack([cg.positions[0], cg.positions[1], cg.positions[2]])

    def run(idx):
        md = Integrator(fn, cg.bead_masses, cg.box[0], [temps[i] for i in idx], timestep_fs=2.0,
                        friction_per_ps=1.0, seeds=[seeds[i] for i in idx], dtype=torch.float64)
        md.set_state(x0[idx])
        md.step(15)
        return md.positions.numpy(), md.velocities.numpy()

    xb, vb = run([0, 1, 2])
    for i in range(3):
        xs, vs = run([i])
        np.testing.assert_allclose(xb[i], xs[0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(vb[i], vs[0], rtol=0, atol=1e-9)
    # the temperature enters the model: systems at different T feel different forces
    _, f_lo = fn(torch.as_tensor(x0[:1]), torch.as_tensor(cg.box[:1]), torch.tensor([250.0], dtype=torch.float64))
    _, f_hi = fn(torch.as_tensor(x0[:1]), torch.as_tensor(cg.box[:1]), torch.tensor([700.0], dtype=torch.float64))
    assert float((f_lo - f_hi).abs().max()) > 1e-6


def test_skin_pair_list_gives_the_trajectory_of_a_fresh_search_every_step(water_model):
    """Langevin on the HIP-NN-TS model with the skin list (rebuilt several times) follows
    the model's own KD-tree search at every call to float64 round-off."""
    model, cg = water_model
    runs = {}
    for skin in (None, 0.3):
        fn = model_force_function(model, skin_A=skin)
        md = Integrator(fn, cg.bead_masses, cg.box[0], [300.0, 600.0], timestep_fs=2.0, friction_per_ps=1.0,
                        seeds=[5, 6], dtype=torch.float64)
        md.set_state(np.stack([cg.positions[0], cg.positions[1]]))
        md.step(40)
        runs[skin] = md.positions.numpy()
        if skin is not None:
            assert 3 <= fn.pair_lists[0].rebuilds < 41, fn.pair_lists[0].rebuilds  # reused, and rebuilt
    np.testing.assert_allclose(runs[0.3], runs[None], rtol=0, atol=1e-9)


def test_model_sees_wrapped_positions(water_model):
    """Shifting beads by whole box edges (unwrapped trajectories) changes no force."""
    model, cg = water_model
    fn = model_force_function(model)
    x = torch.as_tensor(cg.positions[:1])
    box = torch.as_tensor(cg.box[:1])
    shift = torch.as_tensor(np.random.default_rng(0).integers(-3, 4, x.shape)) * box[:, None, :]
    t = torch.tensor([300.0], dtype=torch.float64)
    e0, f0 = fn(x, box, t)
    e1, f1 = fn(x + shift, box, t)
    torch.testing.assert_close(f1, f0, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(e1, e0, rtol=1e-9, atol=1e-9)


def test_a_run_that_goes_wrong_stops_with_the_step_and_system():
    fn, centres, box = harmonic_wells()
    n = len(centres)

    def nan_after_12(x, b, t, calls=[0]):
        calls[0] += 1
        e, f = fn(x, b, t)
        if calls[0] > 12:
            f = f.clone()
            f[1, 3, 0] = float("nan")
        return e, f

    md = Integrator(nan_after_12, np.full(n, MASS), box, [300.0, 350.0], 2.0, 1.0, seeds=[0, 1],
                    dtype=torch.float64, safety=Safety(interval=5))
    md.set_state(np.broadcast_to(centres, (2, n, 3)))
    with pytest.raises(SimulationError, match=r"step 15: system 1 \(T = 350 K\) has non-finite"):
        md.step(30)

    close = np.broadcast_to(centres, (1, n, 3)).copy()
    close[0, 1] = close[0, 0] + [1.0, 0.0, 0.0]
    md = Integrator(fn, np.full(n, MASS), box, 300.0, 2.0, 1.0, seeds=[0])
    with pytest.raises(SimulationError, match=r"step 0: system 0 .* two beads 1.000 Å apart"):
        md.set_state(close)

    def explode(x, b, t):
        e, f = fn(x, b, t)
        return e, f * 1e6

    md = Integrator(explode, np.full(n, MASS), box, 300.0, 2.0, 1.0, seeds=[0])
    with pytest.raises(SimulationError, match="above max_force"):
        md.set_state(np.broadcast_to(centres, (1, n, 3)) + 0.05)


def test_min_distance_is_the_minimum_image_distance():
    rng = np.random.default_rng(4)
    box = np.array([10.0, 11.0, 12.0])
    x = rng.uniform(0, 1, (2, 50, 3)) * box
    d = x[:, :, None] - x[:, None]
    d -= box * np.round(d / box)
    r = np.sqrt((d ** 2).sum(-1)) + np.eye(50) * 1e9
    got = min_distance(torch.as_tensor(x), torch.as_tensor(np.stack([box, box])), chunk=7)
    np.testing.assert_allclose(got.numpy(), r.min(axis=(1, 2)), rtol=1e-12)


# -- multiple time stepping (r-RESPA) ------------------------------------------------------

def two_scale_wells(n_side=3, spacing=4.0, k_fast=2000.0, k_slow=20.0):
    """Independent beads in a stiff well (the fast part) plus a soft well (the slow part), both
    centred on lattice sites: an exact oracle for the split. Returns (slow, fast, whole, centres,
    box)."""
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = torch.as_tensor((g + 0.5) * spacing)

    def well(k):
        def fn(x, box_t, temperature):
            d = x - centres.to(x)
            return 0.5 * k * (d ** 2).sum((1, 2)), -k * d
        return fn

    return well(k_slow), well(k_fast), well(k_fast + k_slow), centres.numpy(), np.full(3, n_side * spacing)


def _respa_energy_error(slow, fast, x0, v0, box, outer_fs, substeps, t_ps=0.5):
    md = Integrator(slow, np.full(len(x0), MASS), box, 300.0, timestep_fs=outer_fs, friction_per_ps=0.0,
                    seeds=[1], dtype=torch.float64, safety=Safety(interval=10 ** 6), fast_fn=fast, substeps=substeps)
    md.set_state(x0[None], v0[None])
    ke0 = float(md.kinetic_energy()[0])
    e0 = float(md.potential[0]) + ke0
    err = 0.0
    for _ in range(int(round(t_ps * 1000 / outer_fs))):
        md.step(1)
        err = max(err, abs(float(md.potential[0] + md.kinetic_energy()[0]) - e0))
    return err, ke0


def test_respa_steps_a_stiff_force_that_breaks_plain_verlet_at_the_outer_step():
    """k_fast = 4200 kcal/(mol Å^2) on 18 amu: omega H = 2.5 at H = 8 fs, beyond velocity
    Verlet's stability limit of 2 (and away from RESPA's resonance at pi), so plain steps of
    8 fs blow up. With the stiff part at 8 substeps (omega h = 0.31) the same outer step
    conserves the energy, with RESPA's second-order error: ~4x smaller when both steps halve."""
    slow, fast, whole, centres, box = two_scale_wells(k_fast=4200.0)
    rng = np.random.default_rng(0)
    x0 = centres + 0.01 * rng.standard_normal(centres.shape)
    v0 = 3.0 * rng.standard_normal(centres.shape)  # Å/ps, ~300 K for water beads
    omega = np.sqrt(4200.0 * KCAL_TO_MVV / MASS)  # 1/ps
    assert 2.0 < omega * 8e-3 < 0.9 * np.pi
    err_plain, ke = _respa_energy_error(whole, None, x0, v0, box, 8.0, 1, t_ps=0.4)
    assert not np.isfinite(err_plain) or err_plain > 100 * ke  # blown up
    err8, ke = _respa_energy_error(slow, fast, x0, v0, box, 8.0, 8)
    err4, _ = _respa_energy_error(slow, fast, x0, v0, box, 4.0, 8)
    assert err8 < 0.1 * ke, (err8, ke)
    assert 3.0 < err8 / err4 < 5.5, (err8, err4)


@pytest.mark.slow  # ~4 s on 2 cores; CI runs it
def test_baoab_respa_samples_the_canonical_distribution():
    """Langevin with the stiff part at substeps: <KE> = <PE> = 3N/2 kB T (harmonic wells)."""
    slow, fast, _, centres, box = two_scale_wells(n_side=4)
    temps = np.array([200.0, 500.0])
    n = len(centres)
    md = Integrator(slow, np.full(n, MASS), box, temps, timestep_fs=2.0, friction_per_ps=5.0, seeds=[3, 4],
                    dtype=torch.float64, fast_fn=fast, substeps=4)
    assert_equipartition(md, centres, temps)


def test_substeps_need_a_fast_part():
    fn, centres, box = harmonic_wells()
    with pytest.raises(ValueError, match="substeps"):
        Integrator(fn, np.full(len(centres), MASS), box, 300.0, 2.0, 1.0, seeds=[1], substeps=2)


@pytest.mark.parametrize("form,kernels", [("beta", "auto"), ("em", "auto"), ("beta", "torch")])
def test_the_model_split_adds_up_to_the_whole_model(water_model, form, kernels):
    """Network without prior + the prior's term (weighted as h0 is in the expansion) = the model,
    in energy and forces, at several temperatures, with two beads pushed into the prior's range;
    on the numba kernels and on the torch ops (the GPU path)."""
    from thermocg.models.thermal import ThermalForceField
    from thermocg.simulate.engine import split_force_functions

    base, cg = water_model
    order = 1 if form == "em" else 2
    model = ThermalForceField(base.network, base.prior, float(base.beta0), order=order, form=form)
    x = torch.as_tensor(np.stack([cg.positions[0], cg.positions[1]]))
    x[0, 1] = x[0, 0] + torch.tensor([2.1, 0.3, 0.0], dtype=x.dtype)  # below the prior's onset
    box = torch.as_tensor(cg.box[:2])
    t = torch.tensor([250.0, 650.0], dtype=torch.float64)
    slow, fast = split_force_functions(model)
    slow.fast_form.kernels = kernels
    e, f = model_force_function(model)(x, box, t)
    es, fs = slow(x, box, t)
    ef, ff = fast(x, box, t)
    assert float(ff.abs().max()) > 1.0  # the prior acts
    torch.testing.assert_close(es + ef, e, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(fs + ff, f, rtol=1e-10, atol=1e-9)


def test_one_substep_of_the_split_model_is_the_plain_step(water_model):
    from thermocg.simulate.engine import split_force_functions

    model, cg = water_model
    slow, fast = split_force_functions(model)
    runs = []
    for kw in ({}, {"fast_fn": fast, "substeps": 1}):
        md = Integrator(slow if kw else model_force_function(model), cg.bead_masses, cg.box[0], 300.0, 2.0, 1.0,
                        seeds=[9], dtype=torch.float64, **kw)
        md.set_state(cg.positions[:1])
        md.step(20)
        runs.append(md.positions.numpy())
    np.testing.assert_allclose(runs[1], runs[0], rtol=0, atol=1e-9)
