"""The inference form (thermocg.models.fast) computes the hippynn model's function.

Reference: the hippynn ThermalForceField in float64 with weights moved away from their
initial values (mu and sigma included), a nonzero per-bead offset, and configurations
with the prior active, beads outside the box, a bead with no neighbour and a pair just
inside the cutoff. Energies, heads and forces must agree to 1e-6 relative (they agree to
~1e-14); forces must equal finite differences of the energy; the neighbour list must hold
exactly the minimum-image pairs within the cutoff whatever the beads did since its search.
"""

import numpy as np
import pytest
import torch

from thermocg.models.fast import FastForceField, NeighbourList
from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network, zero_heads

CUTOFF = 6.0


def perturbed_model(settings, order, form, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = ThermalForceField(build_network(settings), RepulsivePrior(2.4, 12.0), beta_of(320.0), order, settings,
                              form).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.add_(0.1 * torch.randn_like(p) * (p.abs().mean() + 0.1))
        model.bead_offset.copy_(torch.tensor([0.3, -0.2, 0.1]))
    return model


def configurations(seed=1, n=40, dtype=torch.float64):
    """Three systems of n beads in different boxes: jittered lattices (closest pairs ~2.2-2.6 Å,
    inside the prior's range), unwrapped by whole boxes. System 0 (16 Å box) has a bead with no
    neighbour within the cutoff; system 1 a pair at cutoff - 1e-3 Å."""
    rng = np.random.default_rng(seed)
    lengths = np.array([[16.0, 16.0, 16.0], [13.0, 13.5, 14.0], [13.2, 12.8, 13.6]])
    sites = np.stack(np.meshgrid(*[np.arange(4.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    xs = []
    for k, box in enumerate(lengths):
        pts = (sites + 0.5) / 4 * box + rng.uniform(-0.4, 0.4, (64, 3))
        if k == 0:  # keep bead 0 alone: drop every site within cutoff + 0.5 Å of it
            d = pts - pts[0]
            d -= box * np.round(d / box)
            far = np.linalg.norm(d, axis=1) > CUTOFF + 0.5
            pts = np.concatenate([pts[:1], pts[far]])
        pts = pts[np.r_[0, 1 + rng.permutation(len(pts) - 1)[: n - 1]]]
        if k == 1:  # bead 1 at cutoff - 1e-3 from bead 0, in a direction that keeps it clear of the others
            for _ in range(1000):
                u = rng.normal(size=3)
                trial = pts[0] + (CUTOFF - 1e-3) * u / np.linalg.norm(u)
                d = pts[2:] - trial
                d -= box * np.round(d / box)
                if np.linalg.norm(d, axis=1).min() > 2.2:
                    pts[1] = trial
                    break
            else:
                raise AssertionError("no place for the near-cutoff pair")
        xs.append(pts + box * rng.integers(-2, 3, (n, 3)))
    return torch.tensor(np.array(xs), dtype=dtype), torch.tensor(lengths, dtype=dtype)


def reference(model, x, lengths, temps):
    species = torch.ones(x.shape[:2], dtype=torch.long)
    cell = torch.diag_embed(lengths)
    heads = model.heads(species, x, cell)
    w, f = model.energy_and_forces(species, x.clone(), cell, temps)
    return heads, w, f


def close(a, b, rtol=1e-6):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= rtol * float(b.abs().max()) + 1e-12


CASES = [  # (shared, interaction, interaction layers, order, form)
    (False, "quad", 1, 2, "beta"),
    (False, "quad", 2, 1, "em"),
    (False, "vec", 1, 2, "energy-entropy"),
    (False, "scalar", 2, 0, "beta"),
    (True, "quad", 1, 2, "beta"),
    (True, "quad", 2, 2, "energy-entropy"),
    (True, "vec", 2, 1, "beta"),
    (True, "scalar", 1, 1, "em"),
]


@pytest.mark.parametrize("shared,interaction,layers,order,form", CASES)
def test_equals_hippynn_model_float64(shared, interaction, layers, order, form):
    settings = NetworkSettings(shared=shared, interaction=interaction, n_interaction_layers=layers)
    model = perturbed_model(settings, order, form)
    fast = FastForceField.from_model(model, skin_A=0.7)
    x, lengths = configurations()
    temps = torch.tensor([320.0, 300.0, 500.0], dtype=torch.float64)
    h_ref, w_ref, f_ref = reference(model, x, lengths, temps)
    for kernels in ("auto", "torch"):  # the numba pair kernels (CPU default) and the torch ops (GPU path)
        fast.kernels = kernels
        h, (w, f) = fast.heads(x, lengths), fast.energy_and_forces(x, lengths, temps)
        for k in range(order + 1 if form != "em" else 2):
            assert close(h[k], h_ref[k]), (kernels, k, h[k], h_ref[k])
        assert close(w, w_ref) and close(f, f_ref), kernels
    # the prior is active (closest pairs below its onset + width) and the lone bead feels nothing
    # but its cusp term: its force is exactly zero in both
    assert float(model.prior(*_pairs(x, lengths), 3).abs().max()) > 1e-6
    assert float(f_ref[0, 0].abs().max()) == 0.0 and float(f[0, 0].abs().max()) == 0.0


def _pairs(x, lengths):
    nl = NeighbourList(CUTOFF, 0.0)
    nl.update(x, lengths)
    return _pairs_from(nl, x)


def test_separate_model_with_a_zeroed_head_and_per_bead_heads():
    settings = NetworkSettings(shared=False)
    model = perturbed_model(settings, 2, "beta", seed=3)
    zero_heads(model.network, [1])
    fast = FastForceField.from_model(model)
    x, lengths = configurations(seed=4)
    species = torch.ones(x.shape[:2], dtype=torch.long)
    _, per_bead_ref = model.heads_and_bead_heads(species, x, torch.diag_embed(lengths))
    per_bead, _ = fast.bead_heads(x, lengths)
    assert close(per_bead + fast.bead_offset, per_bead_ref)
    assert float(per_bead[..., 1].abs().max()) == 0.0
    assert close(fast.energy_and_forces(x, lengths, 450.0)[1], reference(model, x, lengths, 450.0)[2])


def test_forces_are_minus_the_gradient_by_finite_differences():
    model = perturbed_model(NetworkSettings(shared=False), 2, "beta", seed=5)
    fast = FastForceField.from_model(model, skin_A=0.0)
    x, lengths = configurations(seed=6)
    temps = torch.tensor([280.0, 420.0, 650.0], dtype=torch.float64)
    _, f = fast.energy_and_forces(x, lengths, temps)
    rng = np.random.default_rng(7)
    h = 1e-5
    for _ in range(8):
        b, i, a = int(rng.integers(3)), int(rng.integers(1, 40)), int(rng.integers(3))
        xp, xm = x.clone(), x.clone()
        xp[b, i, a] += h
        xm[b, i, a] -= h
        with torch.no_grad():
            numeric = -(fast.energy(xp, lengths, temps)[b] - fast.energy(xm, lengths, temps)[b]) / (2 * h)
        assert abs(float(numeric - f[b, i, a])) <= 1e-6 * float(f.abs().max()), (b, i, a)


def test_neighbour_list_holds_the_minimum_image_pairs_as_beads_move():
    """After the search, beads move by less than skin/2 (0.15 Å; the skin shrinks to 0.39 Å to fit
    the 12.8 Å box) (no new search) and then by more
    (a new search), crossing box edges: the pairs within the cutoff always equal a brute-force
    minimum-image search's."""
    x, lengths = configurations(seed=8)
    nl = NeighbourList(CUTOFF, skin_A=1.0)
    gen = torch.Generator().manual_seed(9)

    def brute(x):
        d = x[:, :, None, :] - x[:, None, :, :]
        d = d - lengths[:, None, None, :] * torch.round(d / lengths[:, None, None, :])
        r = d.norm(dim=-1)
        b, i, j = torch.nonzero((r < CUTOFF) & ~torch.eye(x.shape[1], dtype=torch.bool), as_tuple=True)
        return {(int(b_ * x.shape[1] + i_), int(b_ * x.shape[1] + j_)) for b_, i_, j_ in zip(b, i, j)}

    def listed(x):
        first, second, _, _ = _pairs_from(nl, x)
        return {(int(a), int(c)) for a, c in zip(first, second)}

    nl.update(x, lengths)
    assert listed(x) == brute(x) and nl.rebuilds == 1
    small = x + 0.15 * torch.nn.functional.normalize(torch.randn(x.shape, generator=gen, dtype=x.dtype), dim=-1)
    nl.update(small, lengths)
    assert nl.rebuilds == 1 and listed(small) == brute(small)
    big = x + lengths[:, None, :] * 0.3 + 0.6 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    nl.update(big, lengths)
    assert nl.rebuilds == 2 and listed(big) == brute(big)


def test_both_paddings_of_a_half_list_hold_each_pair_in_both_rows():
    """The numba padding (CPU) and the torch one (other devices) of the same half list: every
    pair (i, j) in row i and row j, nothing else, empty slots pointing at the bead itself; a bead
    without neighbours has an empty row."""
    from thermocg.models.fast import pad_pairs_torch
    from thermocg.models.fast_kernels import pad_pairs

    rng = np.random.default_rng(3)
    m = 40
    pairs = {tuple(sorted(p)) for p in rng.integers(0, m - 1, size=(300, 2)) if p[0] != p[1]}  # bead m-1: none
    first, second = (np.array(v, dtype=np.int64) for v in zip(*sorted(pairs, key=lambda p: rng.random())))
    expected = [{j for p in pairs for j in p if i in p and j != i} for i in range(m)]
    for nbr, valid in (pad_pairs(first, second, m), pad_pairs_torch(torch.from_numpy(first), torch.from_numpy(second), m)):
        nbr, valid = np.asarray(nbr), np.asarray(valid)
        assert valid.shape[1] == max(len(e) for e in expected)
        for i in range(m):
            assert set(nbr[i][valid[i]].tolist()) == expected[i] and valid[i].sum() == len(expected[i])
            assert (nbr[i][~valid[i]] == i).all()
        assert not valid[m - 1].any()


def _pairs_from(nl, x):
    m = x.shape[0] * x.shape[1]
    lengths = nl._lengths
    first = torch.arange(m)[:, None].expand_as(nl.neighbours)[nl.valid]
    second = nl.neighbours[nl.valid]
    xf, box = x.reshape(m, 3), lengths.repeat_interleave(x.shape[1], 0)[first]
    d = xf[first] - xf[second]
    r = (d - box * torch.round(d / box)).norm(dim=1)
    keep = r < CUTOFF
    return first[keep], second[keep], r[keep], first[keep] // x.shape[1]


def test_cutoff_not_below_half_the_box_is_an_error():
    nl = NeighbourList(CUTOFF, 1.0)
    x = torch.zeros(1, 4, 3)
    with pytest.raises(ValueError, match="half the shortest box edge"):
        nl.update(x, torch.tensor([[11.9, 20.0, 20.0]]))


def test_md_force_functions_of_both_engines_agree_in_float32():
    """The simulate stage's force function on the inference form (default) and on the hippynn
    graph with its skin list: the same forces to float32 rounding, and the list-based safety
    check gives the dense minimum-image distance."""
    from thermocg.simulate.engine import min_distance, model_force_function

    model = perturbed_model(NetworkSettings(shared=False), 2, "beta", seed=11, dtype=torch.float32)
    x, lengths = configurations(seed=12, dtype=torch.float32)
    temps = torch.tensor([250.0, 300.0, 600.0])
    fast, hip = model_force_function(model, 1.0, "fast"), model_force_function(model, 1.0, "hippynn")
    (w, f), (w_ref, f_ref) = fast(x, lengths, temps), hip(x, lengths, temps)
    assert float((f - f_ref).abs().max()) <= 1e-4 * float(f_ref.abs().max())
    assert float((w - w_ref).abs().max()) <= 1e-5 * float(w_ref.abs().max())
    np.testing.assert_allclose(fast.min_distance(x, lengths).numpy(), min_distance(x, lengths).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="engine must be"):
        model_force_function(model, 1.0, "openmm")


@pytest.mark.parametrize("shared,interaction,layers", [(True, "quad", 1), (False, "vec", 1), (False, "scalar", 2)])
def test_several_bead_types_equal_hippynn_and_types_matter(shared, interaction, layers):
    """A model of three bead types (a mixture): the inference form with each bead's type equals
    hippynn's model given species = type + 1, on torch ops and on the numba kernels; permuting the beads together with their types
    permutes the forces (the function is of the typed configuration); changing one bead's type
    changes the forces (the species input is used); a several-type model refuses a call without
    types."""
    settings = NetworkSettings(shared=shared, interaction=interaction, n_types=3, n_interaction_layers=layers)
    model = perturbed_model(settings, 2, "beta")
    fast = FastForceField.from_model(model, skin_A=0.7)
    x, lengths = configurations()
    rng = np.random.default_rng(3)
    types = torch.as_tensor(rng.integers(0, 3, x.shape[:2]))
    temps = torch.tensor([320.0, 300.0, 500.0], dtype=torch.float64)
    cell = torch.diag_embed(lengths)
    w_ref, f_ref = model.energy_and_forces(types + 1, x.clone(), cell, temps)
    for kernels in ("torch", "auto"):  # the numba kernels: one pass per neighbour type
        fast.kernels = kernels
        w, f = fast.energy_and_forces(x, lengths, temps, types)
        assert close(w, w_ref) and close(f, f_ref), kernels
    perm = torch.as_tensor(rng.permutation(x.shape[1]))
    _, f_perm = fast.energy_and_forces(x[:, perm], lengths, temps, types[:, perm])
    assert close(f_perm, f[:, perm], rtol=1e-10)
    other = types.clone()
    other[:, 5] = (other[:, 5] + 1) % 3
    assert float((fast.energy_and_forces(x, lengths, temps, other)[1] - f).abs().max()) > 1e-6
    with pytest.raises(ValueError, match="this model has 3 bead types: pass each bead's type"):
        fast.energy_and_forces(x, lengths, temps)
    with pytest.raises(ValueError, match=r"types holds \[0, 1, 2, 3\], but this model has bead types 0 .. 2"):
        model.forces_numpy(x[0].numpy(), lengths[0].numpy(), 300.0, np.r_[[3], types[0, 1:].numpy()])
    np.testing.assert_allclose(model.forces_numpy(x[1].numpy(), lengths[1].numpy(), 300.0, types[1].numpy()),
                               fast.forces_numpy(x[1].numpy(), lengths[1].numpy(), 300.0, types[1].numpy()),
                               rtol=0, atol=1e-9 * float(f.abs().max()))


def test_kernel_functions_match_numpy():
    """The kernels' own exponentials and sin/cos (polynomials, so that their loops vectorise)
    against numpy: exp_neg to 1e-9 relative on [-100, 0], exp_neg32 to 1e-5 on [-20, 0] (and
    2e-3 down to its floor at -32), sin/cos to 1e-15 on [-pi/2, pi/2]."""
    import numba

    from thermocg.models import fast_kernels as fk

    @numba.njit
    def apply(a, which):
        out, out2 = np.empty(a.size), np.empty(a.size)
        for i in range(a.size):
            if which == 0:
                out[i] = fk.exp_neg(a[i])
            elif which == 1:
                out[i] = fk.exp_neg32(np.float32(a[i]))
            else:
                out[i], out2[i] = fk._sin_cos(a[i])
        return out, out2

    x = np.linspace(-100.0, 0.0, 100001)
    assert np.max(np.abs(apply(x, 0)[0] / np.exp(x) - 1)) < 1e-9
    x32 = np.linspace(-32.0, 0.0, 100001).astype(np.float32).astype(np.float64)  # exactly representable
    rel = np.abs(apply(x32, 1)[0] / np.exp(x32) - 1)
    assert rel[x32 > -20].max() < 1e-5 and rel.max() < 2e-3
    assert abs(apply(np.array([-40.0]), 1)[0][0] / np.exp(-32.0) - 1) < 2e-3  # below -32: the floor
    t = np.linspace(-np.pi / 2, np.pi / 2, 100001)
    s, c = apply(t, 2)
    assert np.abs(s - np.sin(t)).max() < 1e-15 and np.abs(c - np.cos(t)).max() < 1e-15


@pytest.mark.parametrize("seed,interaction,layers", [(0, "quad", 1), (1, "quad", 1), (2, "quad", 1), (0, "vec", 1),
                                                     (0, "scalar", 2)])
def test_float32_kernels_are_as_close_to_float64_as_torch_ops(seed, interaction, layers):
    """MD runs in float32, and so do the pair kernels then (their own float32 exponential). The
    forces of the float32 form agree with float64 as closely as the same form in torch
    operations (torch's exp) does: float32's rounding of the network, not the kernels, sets the
    error (measured: 0.7-2.8e-5 of the largest force, both ways)."""
    settings = NetworkSettings(shared=False, interaction=interaction, n_interaction_layers=layers)
    model = perturbed_model(settings, 2, "beta", seed=seed)
    x, lengths = configurations(seed=seed + 5)
    temps = torch.tensor([250.0, 300.0, 700.0], dtype=torch.float64)
    f64 = FastForceField.from_model(model).energy_and_forces(x, lengths, temps)[1]
    form32 = FastForceField.from_model(model.to(torch.float32))
    args = (x.float(), lengths.float(), temps.float())
    f_kernels = form32.energy_and_forces(*args)[1].double()
    form32.kernels = "torch"
    f_torch = form32.energy_and_forces(*args)[1].double()
    scale = float(f64.abs().max())
    err_kernels, err_torch = float((f_kernels - f64).abs().max()), float((f_torch - f64).abs().max())
    assert err_kernels <= 1.5 * err_torch + 1e-6 * scale, (err_kernels / scale, err_torch / scale)
    assert err_kernels < 1e-4 * scale and float((f_kernels - f64).norm() / f64.norm()) < 3e-5


def test_the_kernels_backward_may_run_twice_and_out_of_order():
    """The pair kernels keep each forward pass's pair data for its backward pass (a reused
    buffer): a backward pass run twice (a retained graph), with another call in between, and the
    backward passes of two forward passes taken in reverse order give the gradients of a fresh
    call."""
    model = perturbed_model(NetworkSettings(shared=False, interaction="quad"), 2, "beta", seed=3)
    form = FastForceField.from_model(model)
    x, lengths = configurations(seed=4)
    temps = torch.tensor([300.0, 400.0, 500.0], dtype=torch.float64)
    x2 = x + 0.05 * torch.randn_like(x)
    f1, f2 = form.energy_and_forces(x, lengths, temps)[1], form.energy_and_forces(x2, lengths, temps)[1]
    a, b = x.clone().requires_grad_(True), x2.clone().requires_grad_(True)
    wa, wb = form.energy(a, lengths, temps).sum(), form.energy(b, lengths, temps).sum()
    (gb,) = torch.autograd.grad(wb, b, retain_graph=True)
    (ga,) = torch.autograd.grad(wa, a, retain_graph=True)
    form.energy_and_forces(x2 + 0.1, lengths, temps)  # a call between: it must not take b's buffer
    (gb2,) = torch.autograd.grad(wb, b)
    (ga2,) = torch.autograd.grad(wa, a)
    for g, f in ((ga, f1), (ga2, f1), (gb, f2), (gb2, f2)):
        assert torch.equal(-g, f)


def test_the_kernels_follow_a_change_of_the_weights():
    """The kernels' inputs (1/mu, sigma^2, the interaction's map and scales, the prior) are kept
    between calls: changing a weight in place afterwards (as load_state_dict does) changes the
    forces as a form built from the changed model has them."""
    model = perturbed_model(NetworkSettings(shared=False, interaction="quad"), 2, "beta", seed=5)
    x, lengths = configurations(seed=6)
    temps = torch.tensor([300.0, 400.0, 500.0], dtype=torch.float64)
    form = FastForceField.from_model(model)
    before = form.energy_and_forces(x, lengths, temps)[1]
    state = {k: v.clone() for k, v in form.state_dict().items()}
    for name in ("mu0", "V0", "quadscale0", "prior_onset"):
        state[name] = state[name] * 1.05
    form.load_state_dict(state)
    after = form.energy_and_forces(x, lengths, temps)[1]
    form.kernels = "torch"  # the same weights through torch operations: no kept inputs
    expected = form.energy_and_forces(x, lengths, temps)[1]
    assert close(after, expected) and not close(after, before, rtol=1e-3)


def test_the_pair_kernels_compile_once_and_load_from_numbas_cache(tmp_path):
    """The numba kernels are cached on disk (cache=True): a second process loads them instead of
    compiling them again (~10-20 s per kernel and dtype at every MD start otherwise)."""
    import subprocess
    import sys

    script = (
        "import torch, numpy as np\n"
        "from thermocg.models import fast_kernels as fk\n"
        "from thermocg.models.fast import FastForceField\n"
        "import sys; sys.path.insert(0, %r)\n"
        "from test_fast import perturbed_model, configurations\n"
        "from thermocg.models.thermal import NetworkSettings\n"
        "model = perturbed_model(NetworkSettings(shared=False), 2, 'beta', dtype=torch.float32)\n"
        "x, lengths = configurations(dtype=torch.float32)\n"
        "FastForceField.from_model(model).energy_and_forces(x, lengths, 300.0)\n"
        "kernels = (fk.pair_forward, fk.pair_backward)\n"
        "print(sum(sum(k.stats.cache_misses.values()) for k in kernels),"
        " sum(sum(k.stats.cache_hits.values()) for k in kernels))\n"
    ) % str(__import__("pathlib").Path(__file__).parent)
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
            for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    misses, hits = (int(v) for v in runs[1].stdout.split()[-2:])
    assert misses == 0 and hits == 2, runs[1].stdout


@pytest.mark.parametrize("n_types", [1, 3])
def test_the_kernels_without_the_prior_equal_torch_ops(n_types):
    """Multiple time stepping's slow part (include_prior = False) on the numba kernels equals the
    same on torch operations, for one and for several bead types, and adding the prior's own
    forces gives the whole model's."""
    model = perturbed_model(NetworkSettings(shared=False, n_types=n_types), 2, "beta", seed=7)
    x, lengths = configurations(seed=8)
    types = None if n_types == 1 else torch.as_tensor(np.random.default_rng(9).integers(0, 3, x.shape[:2]))
    temps = torch.tensor([300.0, 400.0, 500.0], dtype=torch.float64)
    form = FastForceField.from_model(model)
    whole = form.energy_and_forces(x, lengths, temps, types)[1]
    form.include_prior = False
    slow = form.energy_and_forces(x, lengths, temps, types)[1]
    form.kernels = "torch"
    assert close(slow, form.energy_and_forces(x, lengths, temps, types)[1])
    form.kernels = "auto"
    assert close(slow + form.prior_energy_and_forces(x, lengths, temps)[1], whole)
    assert not close(slow, whole, rtol=1e-3)  # the prior acts on these configurations
