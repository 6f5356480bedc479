"""The torch CG MD engine: Langevin reaches equipartition, velocity Verlet conserves energy
with an error that shrinks as h^2, batched systems equal separate runs, and a run that goes
wrong stops with an error naming the step and the system."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg import units
from thermocg.errors import SimulationError
from thermocg.simulate.engine import Integrator, Safety, min_distance, model_force_function

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
    md.set_state(np.broadcast_to(centres, (3, n, 3)))
    md.step(500)  # ~2.5 relaxation times of the thermostat
    ke, pe = [], []
    for _ in range(300):
        md.step(10)
        ke.append(md.kinetic_energy().numpy())
        pe.append(md.potential.numpy())
    expected = 1.5 * n * units.KB * temps
    # ~300 x 0.02 ps / (1/friction = 0.2 ps) ~ 30 independent samples of 3N = 192 dof:
    # relative standard error ~ sqrt(2 / 5800) ~ 2 %; tolerance 6 %
    np.testing.assert_allclose(np.mean(ke, 0) / expected, 1.0, atol=0.06)
    np.testing.assert_allclose(np.mean(pe, 0) / expected, 1.0, atol=0.06)
    assert md.n_dof == 3 * n


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


@pytest.fixture(scope="module")
def water_model(tiny_reference):
    """An untrained HIP-NN-TS force field with the repulsive prior (float64) and a water frame."""
    from thermocg.frames import read_reference
    from thermocg.mapping import map_reference
    from thermocg.models.prior import RepulsivePrior
    from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
    from thermocg.reference.stage import reference_dir

    config, _ = tiny_reference
    cg = map_reference(read_reference(reference_dir(config) / "T300K.h5md"))
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        net = build_network(NetworkSettings(cutoff_A=5.0, dist_soft_max_A=4.5, n_features=8, n_sensitivities=6))
        prior = RepulsivePrior.fit(cg.positions, cg.box, cg.forces)
        model = ThermalForceField(net, prior, beta_of(300.0), order=2)
    finally:
        torch.set_default_dtype(old)
    return model, cg


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
