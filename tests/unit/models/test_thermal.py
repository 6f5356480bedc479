"""The temperature-dependent force field W = W_prior + W0 + dB W1 + dB^2/2 W2 (untrained
network, float64): forces are -grad W, invariances, and the beta derivatives of the force
are the heads' gradients (THEORY.md §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg import units
from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network

T0 = 300.0


@pytest.fixture(scope="module", params=[("beta", True, "quad"), ("energy-entropy", True, "quad"), ("em", True, "quad"),
                                        ("beta", False, "quad"), ("beta", True, "vec"), ("beta", True, "scalar")],
                ids=["beta", "energy-entropy", "em", "beta-separate-networks", "beta-HipnnVec", "beta-Hipnn"])
def model(request):
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    form, shared, interaction = request.param
    try:
        torch.manual_seed(0)
        net = build_network(NetworkSettings(cutoff_A=6.0, n_features=16, n_sensitivities=8, shared=shared,
                                            interaction=interaction))
        order = 1 if form == "em" else 2
        yield ThermalForceField(net, RepulsivePrior(2.5, 10.0), beta_of(T0), order=order, form=form)
    finally:
        torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def frame(water64):
    cg = water64[1]
    return cg.positions[0], cg.box[0]


def _tensors(model, x, box):
    return model._tensors(x, box)


def _beta_derivatives(forces_at, b, h):
    """First and second derivatives in beta by central differences with Richardson
    extrapolation (error O(h^4)): the energy/entropy form is not polynomial in beta and
    its terms carry powers of T, which make plain O(h^2) differences too coarse."""
    def d1(k):
        return (forces_at(b + k) - forces_at(b - k)) / (2 * k)

    def d2(k):
        return (forces_at(b + k) - 2 * forces_at(b) + forces_at(b - k)) / k**2

    return (4 * d1(h / 2) - d1(h)) / 3, (4 * d2(h / 2) - d2(h)) / 3


def test_forces_are_minus_the_gradient(model, frame):
    x, box = frame
    for temp in (250.0, 450.0):
        f = model.forces_numpy(x, box, temp)
        h = 1e-5
        for bead, k in ((0, 0), (7, 1), (30, 2)):
            xp, xm = x.copy(), x.copy()
            xp[bead, k] += h
            xm[bead, k] -= h
            fd = -(model.energy_numpy(xp, box, temp) - model.energy_numpy(xm, box, temp)) / (2 * h)
            assert f[bead, k] == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_translation_rotation_permutation(model, frame):
    x, box = frame
    e0, f0 = model.energy_numpy(x, box, 400.0), model.forces_numpy(x, box, 400.0)
    assert model.energy_numpy(x + np.array([1.3, -7.0, 40.0]), box, 400.0) == pytest.approx(e0, rel=1e-10)
    perm = np.random.default_rng(1).permutation(len(x))
    assert model.energy_numpy(x[perm], box, 400.0) == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(model.forces_numpy(x[perm], box, 400.0), f0[perm], atol=1e-9)
    # a 90-degree rotation about z maps the cubic periodic system onto itself
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    xr = x @ rot.T
    assert model.energy_numpy(xr, box, 400.0) == pytest.approx(e0, rel=1e-10)
    np.testing.assert_allclose(model.forces_numpy(xr, box, 400.0), f0 @ rot.T, atol=1e-9)


def test_beta_derivatives_of_the_force_are_the_heads(model, frame):
    """Finite differences in beta of the full model's forces at T0 against the heads' gradients.
    beta form: F = -grad h0, dF/dbeta = -grad h1, d2F/dbeta2 = -grad h2 (only W_prior + W0 act at T0).
    energy/entropy form (W = U - T S - (T - T0)^2/2 C with S = h1/(kB T0^2), C = -h2/(kB^2 T0^4),
    U = h0 + T0 S): F = -grad(U - T0 S) = -grad h0, dF/dbeta = -kB T0^2 grad S = -grad h1,
    d2F/dbeta2 = kB^2 T0^4 grad C + 2 kB^2 T0^3 grad S = -grad(h2 - 2 kB T0 h1).
    em form (head 1 = U): F = -grad h0, dF/dbeta = -grad(U - h0)/beta0, d2F/dbeta2 = 0."""
    x, box = frame
    species, xt, cell = _tensors(model, x, box)
    xt.requires_grad_(True)
    w0, w1, w2 = model.heads(species, xt, cell)
    g0, g1, g2 = (torch.autograd.grad(w.sum(), xt, retain_graph=True)[0][0].numpy() for w in (w0, w1, w2))
    b0 = beta_of(T0)
    h = 1e-3 * b0

    def forces_at(beta):
        return model.forces_numpy(x, box, 1.0 / (units.KB * beta))

    fc = forces_at(b0)
    first, second = _beta_derivatives(forces_at, b0, h)
    if model.form == "beta":
        want = (-g0, -g1, -g2)
    elif model.form == "em":
        want = (-g0, -(g1 - g0) / b0, np.zeros_like(g0))
    else:
        kb = units.KB
        s_grad, c_grad = g1 / (kb * T0**2), -g2 / (kb**2 * T0**4)
        want = (-g0, -kb * T0**2 * s_grad, kb**2 * T0**4 * c_grad + 2 * kb**2 * T0**3 * s_grad)
    np.testing.assert_allclose(fc, want[0], atol=1e-10)
    np.testing.assert_allclose(first, want[1], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(second, want[2], rtol=1e-3, atol=1e-5 * np.abs(want[2]).max() + 1e-8)
    assert np.abs(g1).max() > 0 and np.abs(g2).max() > 0 and np.abs(first).max() > 0


def test_per_bead_heads_sum_to_the_system_heads(model, frame):
    """U_J(R) read per bead (targets baselines, em per-molecule) adds up to the head's energy;
    the per-bead constant moves energies, not forces."""
    x, box = frame
    species, xt, cell = _tensors(model, np.stack([x, x[::-1]]), box)
    (h0, h1, h2), per_bead = model.heads_and_bead_heads(species, xt, cell)
    assert per_bead.shape == (2, len(x), 3)
    np.testing.assert_allclose(per_bead[..., 1].sum(1).detach(), h1.detach(), rtol=1e-12)
    np.testing.assert_allclose(per_bead[..., 2].sum(1).detach(), h2.detach(), rtol=1e-12)
    # a permutation of the beads permutes their energies
    np.testing.assert_allclose(per_bead[1].detach().numpy()[::-1],
                               per_bead[0].detach().numpy(), atol=1e-12)
    f = model.forces_numpy(x, box, 400.0)
    model.bead_offset[1] = -10.0
    try:
        assert model.heads(species, xt, cell)[1][0].item() == pytest.approx(h1[0].item() - 10.0 * len(x))
        np.testing.assert_allclose(model.forces_numpy(x, box, 400.0), f, atol=1e-12)
    finally:
        model.bead_offset[1] = 0.0


def test_batched_temperatures_equal_separate_calls(model, frame):
    x, box = frame
    xs = np.stack([x, x + 0.05])
    boxes = np.stack([box, box])
    species, xt, cell = _tensors(model, xs, boxes)
    w, f = model.energy_and_forces(species, xt, cell, torch.tensor([260.0, 520.0]))
    for k, temp in enumerate((260.0, 520.0)):
        assert float(w[k]) == pytest.approx(model.energy_numpy(xs[k], box, temp), rel=1e-10)
        np.testing.assert_allclose(f[k].numpy(), model.forces_numpy(xs[k], box, temp), atol=1e-9)


def test_order_zero_is_temperature_independent(model, frame):
    x, box = frame
    form = "beta" if model.form == "em" else model.form
    m0 = ThermalForceField(model.network, model.prior, float(model.beta0), order=0, form=form)
    np.testing.assert_allclose(m0.forces_numpy(x, box, 250.0), m0.forces_numpy(x, box, 700.0), atol=0)
    assert model.metadata()["T0_K"] == pytest.approx(T0)


def test_training_predictions_away_from_beta0(model, frame):
    """The quantities trf-multi fits at a training temperature T: the force at T and its
    first and second beta derivatives there (finite differences of the full model)."""
    from thermocg.models.training import _predictions
    x, box = frame
    temp = 450.0
    species, xt, cell = _tensors(model, x, box)
    pred = {k: v[0].detach().numpy() for k, v in
            _predictions(model, xt, cell, species, list(range(model.order + 1)), torch.tensor([beta_of(temp)]),
                         create_graph=False).items()}
    b = beta_of(temp)
    h = 1e-3 * b

    def forces_at(beta):
        return model.forces_numpy(x, box, 1.0 / (units.KB * beta))

    first, second = _beta_derivatives(forces_at, b, h)
    np.testing.assert_allclose(pred[0], forces_at(b), atol=1e-10)
    np.testing.assert_allclose(pred[1], first, rtol=1e-6, atol=1e-8)
    if model.order == 2:
        np.testing.assert_allclose(pred[2], second, rtol=1e-3, atol=1e-5 * np.abs(pred[2]).max() + 1e-8)
    else:  # em is linear in beta
        np.testing.assert_allclose(second, 0.0, atol=1e-6 * np.abs(first).max())


@pytest.mark.parametrize("form,order", [("beta", 2), ("energy-entropy", 2), ("em", 1)])
def test_skipping_unused_networks_changes_nothing(form, order, frame):
    """Separate networks evaluate only the heads a quantity reads (heads_used): W and its
    beta derivatives at beta0, computed with the other networks skipped, equal the full
    evaluation's, and away from beta0 every head of the order is read."""
    torch.manual_seed(1)
    net = build_network(NetworkSettings(cutoff_A=6.0, n_features=8, n_sensitivities=6, shared=False))
    m = ThermalForceField(net, RepulsivePrior(2.5, 10.0), beta_of(T0), order=order, form=form).double()
    species, x, cell = m._tensors(*frame)

    def derivatives():
        xx = x.detach().requires_grad_(True)
        out = m.expansion(m.heads(species, xx, cell), m.beta0.expand(1))
        return [torch.autograd.grad(o.sum(), xx, retain_graph=True, allow_unused=True)[0] for o in out[:order + 1]]

    with m.using_heads(range(3)):
        full = derivatives()
    for k in range(order + 1):
        used = m.heads_used([k], at_beta0=True)
        with m.using_heads(used):
            torch.testing.assert_close(derivatives()[k], full[k], rtol=1e-10, atol=1e-12)
    assert m.heads_used([0], at_beta0=True) == (0,)
    assert m.heads_used([0], at_beta0=False) == ((0, 1) if form == "em" else (0, 1, 2))
    # the model's own default skips the head its order never reads (em: head 2)
    assert m.network.active == m.heads_used()


def test_interaction_order_survives_save_and_load(tmp_path, frame):
    """A HipnnVec model saved by the train stage's writer loads as HipnnVec with its forces."""
    from thermocg.models.saved import load_model, save_model

    torch.manual_seed(3)
    settings = NetworkSettings(cutoff_A=6.0, n_features=8, n_sensitivities=6, interaction="vec")
    model = ThermalForceField(build_network(settings), RepulsivePrior(2.5, 10.0), beta_of(T0), 0, settings)
    save_model(tmp_path / "m.pt", model, {"variant": "fm"})
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.metadata["network"]["interaction"] == "vec"
    assert type(loaded.model.network.get_module(loaded.model.network.node_from_name("hipnn"))).__name__ == "HipnnVec"
    x, box = frame
    np.testing.assert_array_equal(loaded.model.forces_numpy(x, box, 350.0), model.forces_numpy(x, box, 350.0))
    # the loaded model's default engine is its inference form: the same function in float32
    f = model.forces_numpy(x, box, 350.0)
    np.testing.assert_allclose(loaded.forces(x, box, 350.0), f, rtol=0, atol=1e-5 * np.abs(f).max())
    with pytest.raises(ValueError, match="interaction must be one of"):
        build_network(NetworkSettings(interaction="octupole"))


@pytest.mark.parametrize("shared", [True, False])
def test_type_offsets_are_a_constant_per_bead_type_of_one_head(shared):
    """set_type_offsets (the start of a mixture's per-bead energy fit) sets a constant per bead type
    of one head's per-bead energies: after it, head 1's per-bead energy differs between two beads of
    one type exactly as before, and the other heads are untouched."""
    import numpy as np

    from thermocg.models.thermal import set_type_offsets

    torch.manual_seed(2)
    s = NetworkSettings(cutoff_A=4.0, dist_soft_max_A=3.5, n_features=8, n_sensitivities=6, n_types=2, shared=shared)
    m = ThermalForceField(build_network(s), RepulsivePrior(2.5, 10.0), beta_of(300.0), 2, s).double()
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 4.0
    x = torch.as_tensor(grid + np.random.default_rng(0).normal(0, 0.2, grid.shape))[None]
    cell = torch.diag_embed(torch.full((1, 3), 12.0, dtype=torch.float64))
    types = np.arange(27) % 2
    species = m.species(types, (1, 27), "cpu")
    with torch.no_grad():
        before = m.heads_and_bead_heads(species, x, cell)[1][0]
        set_type_offsets(m, 1, [5.0, -3.0])
        after = m.heads_and_bead_heads(species, x, cell)[1][0]
        set_type_offsets(m, 1, [5.0, -3.0])  # setting, not adding: twice is once
        torch.testing.assert_close(m.heads_and_bead_heads(species, x, cell)[1][0], after)
    shift = (after - before)[:, 1].numpy()
    for a in (0, 1):
        assert np.ptp(shift[types == a]) < 1e-9
    assert abs((shift[types == 0][0] - shift[types == 1][0]) - 8.0) < 0.5 * 8.0  # ~8 minus the random start
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])
