"""The distilled fast form (tabulated pair + three-body heads with the model's temperature
expansion): analytic descriptor gradients equal autograd, the least-squares fit recovers a
tabulated oracle exactly, and the OpenMM export computes the same energies and forces at
several temperatures for every expansion form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg import units
from thermocg.models.distilled import DistilledForceField, Knots, to_openmm
from thermocg.models.fast import FastForceField
from thermocg.models.thermal import ThermalForceField


def _form(water_model, form="beta", r3=3.0, seed=0):
    """A distilled form on the water model's geometry (cutoff 5 Å, three-body radius r3) with
    random coefficients and offsets."""
    base, cg = water_model
    order = 1 if form == "em" else 2
    model = ThermalForceField(base.network, base.prior, float(base.beta0), order=order, form=form)
    ff = DistilledForceField(FastForceField.from_model(model, skin_A=0.0).double(), Knots(2.0, 5.0, 0.25),
                             Knots(2.2, r3, 0.3) if r3 else None, degree=3, skin_A=0.5)
    g = torch.Generator().manual_seed(seed)
    ff.coef.copy_(0.1 * torch.randn(ff.coef.shape, generator=g, dtype=torch.float64))
    ff.bead_offset.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    return ff, cg


def test_analytic_descriptor_gradients_equal_autograd(water_model):
    ff, cg = _form(water_model)
    for frame in (0, 3):
        x, box = torch.as_tensor(cg.positions[frame:frame + 1]), torch.as_tensor(cg.box[frame:frame + 1])
        jac = ff.descriptor_gradients(x, box)
        xr = x.clone().requires_grad_(True)
        g = ff.descriptors(xr, box)[0]
        assert jac.shape == (ff.n_basis, x.shape[1], 3) and ff.n_basis > ff.n_pair
        used = 0
        for a in range(ff.n_basis):
            ga = torch.autograd.grad(g[a], xr, retain_graph=True)[0][0]
            torch.testing.assert_close(jac[a], ga, rtol=1e-9, atol=1e-11)
            used += bool(ga.abs().max() > 0)
        assert used > ff.n_basis // 2  # most descriptors are live on water


def test_the_fit_recovers_a_tabulated_oracle(water_model):
    """Fitting a distilled form to another one (the same basis) returns its forces and energies:
    the least squares is a projection, and the oracle lies in the span."""
    truth, cg = _form(water_model, seed=1)
    fitted, _ = _form(water_model, seed=2)
    frames = slice(0, 4)
    fitted.fit_heads(truth.tabulated_heads, cg.positions[frames], cg.box[frames], ridge=1e-13)
    x, box = torch.as_tensor(cg.positions[frames]), torch.as_tensor(cg.box[frames])
    for t in (250.0, 300.0, 600.0):
        e_true, f_true = truth.energy_and_forces(x, box, t)
        e_fit, f_fit = fitted.energy_and_forces(x, box, t)
        scale = float(f_true.abs().max())
        assert scale > 1.0
        torch.testing.assert_close(f_fit, f_true, rtol=0, atol=1e-7 * scale)
        torch.testing.assert_close(e_fit, e_true, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("form", ["beta", "energy-entropy", "em"])
def test_openmm_export_equals_the_engine(water_model, form):
    """The exported System (tables sampled at 0.01 Å: a natural cubic spline through samples of
    a cubic B-spline with knots on the grid is that spline, so the match is exact) against the
    engine, energies and forces, at the training temperature and away from it, and after a
    setParameter("T") (the temperature as OpenMM's global parameter)."""
    import openmm
    import openmm.unit as u

    ff, cg = _form(water_model, form=form)
    x, box = cg.positions[2], cg.box[2]
    system = to_openmm(ff, cg.bead_masses, box, 250.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x * 0.1)
    for t in (250.0, 300.0, 520.0):
        context.setParameter("T", t)
        state = context.getState(getEnergy=True, getForces=True)
        e_omm = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
        f_omm = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * units.KJ_TO_KCAL / 10
        e, f = ff.energy_and_forces(torch.as_tensor(x[None]), torch.as_tensor(box[None]), t)
        assert float(f.abs().max()) > 1.0
        np.testing.assert_allclose(e_omm, float(e[0]), rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(f_omm, f[0].numpy(), rtol=0, atol=1e-8 * float(f.abs().max()))


@pytest.mark.parametrize("form", ["beta", "em"])
def test_the_cpu_kernel_equals_the_torch_form(water_model, form):
    """The numba kernel (tables combined with each system's temperature weights, analytic forces)
    against torch + autograd, two systems at different temperatures in one batch, with a pair
    pushed into the prior's range."""
    ff, cg = _form(water_model, form=form)
    x = torch.as_tensor(np.stack([cg.positions[0], cg.positions[1]]))
    x[0, 1] = x[0, 0] + torch.tensor([2.2, 0.2, 0.0], dtype=x.dtype)
    box = torch.as_tensor(cg.box[:2])
    t = torch.tensor([260.0, 610.0], dtype=torch.float64)
    e_kernel, f_kernel = ff.energy_and_forces(x, box, t)
    ff.kernels = "torch"
    e_torch, f_torch = ff.energy_and_forces(x, box, t)
    assert float(f_torch.abs().max()) > 1.0
    torch.testing.assert_close(e_kernel, e_torch, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(f_kernel, f_torch, rtol=1e-9, atol=1e-9)


def test_the_kernel_follows_a_new_temperature_and_new_coefficients(water_model):
    """The kernel keeps its temperature-combined tables between calls: a call at another
    temperature, or after the coefficients changed in place (a new fit), must not reuse them."""
    ff, cg = _form(water_model)
    x, box = torch.as_tensor(cg.positions[:1]), torch.as_tensor(cg.box[:1])
    reference = _form(water_model)[0]
    reference.kernels = "torch"
    for t in (300.0, 620.0, 300.0):
        torch.testing.assert_close(ff.energy_and_forces(x, box, t), reference.energy_and_forces(x, box, t),
                                   rtol=1e-9, atol=1e-9)
    for form in (ff, reference):
        form.coef.mul_(1.5)
        form.bead_offset.add_(0.25)
    e_kernel, f_kernel = ff.energy_and_forces(x, box, 300.0)
    e_torch, f_torch = reference.energy_and_forces(x, box, 300.0)
    torch.testing.assert_close(f_kernel, f_torch, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(e_kernel, e_torch, rtol=1e-10, atol=1e-9)


def test_beads_with_one_neighbour_or_none(water_model):
    """A dilute system (two isolated pairs, a lone bead): no triplets, and the kernel and the
    torch form still agree (the torch form must not ask for more neighbours than the list has)."""
    ff, cg = _form(water_model)
    x = torch.tensor([[[1.0, 1.0, 1.0], [4.0, 1.0, 1.0], [15.0, 15.0, 15.0], [17.5, 15.0, 15.0],
                       [8.0, 25.0, 8.0]]], dtype=torch.float64)
    box = torch.full((1, 3), 30.0, dtype=torch.float64)
    e_kernel, f_kernel = ff.energy_and_forces(x, box, 350.0)
    ff.kernels = "torch"
    e_torch, f_torch = ff.energy_and_forces(x, box, 350.0)
    torch.testing.assert_close(e_kernel, e_torch, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(f_kernel, f_torch, rtol=1e-9, atol=1e-10)
    assert float(f_torch[0, 4].abs().max()) == 0.0  # the lone bead feels nothing


def test_a_three_body_radius_outside_its_range_is_refused(water_model):
    base, cg = water_model
    for r3 in (2.3, 5.5):  # below the first radial spline's reach; beyond the model's 5 Å cutoff
        with pytest.raises(ValueError, match="three-body radius"):
            DistilledForceField.fit(base, cg.positions[:1], cg.box[:1], r3_A=r3)


def test_compressed_frames_are_fitted_but_the_offsets_come_from_the_frames(water_model):
    """fit(..., compressions=(c,)) is the least squares over the frames and their copies scaled by c
    (the same coefficients as fitting both sets by hand), with the per-bead offsets of the unscaled
    frames alone; a factor outside (0.5, 1] is refused."""
    base, cg = water_model
    x, box = cg.positions[:2], cg.box[:2]
    auto = DistilledForceField.fit(base, x, box, r3_A=3.0, compressions=(0.95,))
    by_hand = DistilledForceField.fit(base, np.concatenate([x, 0.95 * x]), np.concatenate([box, 0.95 * box]),
                                      r3_A=3.0, compressions=())
    plain = DistilledForceField.fit(base, x, box, r3_A=3.0, compressions=())
    torch.testing.assert_close(auto.coef, by_hand.coef, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(auto.coef, plain.coef)  # the scaled copies count
    # offsets: the mean energy per bead left by the tables on the unscaled frames
    xt, bt = torch.as_tensor(x), torch.as_tensor(box)
    fast = FastForceField.from_model(base, skin_A=0.0).double()
    fast.include_prior = False
    target = torch.stack([torch.stack(fast.heads(xt[i:i + 1], bt[i:i + 1])).reshape(-1) for i in range(2)])
    tables = auto.descriptors(xt, bt) @ auto.coef.T
    heads = base.order + 1
    expected = (target[:, :heads] - tables[:, :heads]).mean(0) / x.shape[1]
    torch.testing.assert_close(auto.bead_offset[:heads], expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="compressions must lie in"):
        DistilledForceField.fit(base, x, box, compressions=(0.3,))


def test_a_compression_the_box_cannot_take_is_left_out_with_a_warning(water_model):
    """A factor that would bring half the shortest box edge below the model's cutoff (minimum-image
    pairs would be wrong) is left out with a warning naming it; the fit is then the fit without it."""
    base, cg = water_model
    x, box = cg.positions[:2], cg.box[:2]
    cutoff = FastForceField.from_model(base, skin_A=0.0).cutoff
    too_far = 0.99 * 2.0 * cutoff / float(np.min(box))  # half the compressed edge just below the cutoff
    assert 0.5 < too_far < 1.0
    with pytest.warns(UserWarning, match=f"cannot be compressed by {too_far:g} with"):
        skipped = DistilledForceField.fit(base, x, box, r3_A=3.0, compressions=(0.99, too_far))
    kept = DistilledForceField.fit(base, x, box, r3_A=3.0, compressions=(0.99,))
    torch.testing.assert_close(skipped.coef, kept.coef, rtol=0, atol=0)
