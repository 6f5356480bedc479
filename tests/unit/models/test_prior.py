"""The repulsive prior: its defining forces, autograd vs finite differences, each pair once,
per-system shape at batch sizes 1, 2 and 4 (the broadcast bug of THEORY.md §7), the fit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from thermocg.models.prior import RepulsivePrior

PRIOR = RepulsivePrior(onset_A=2.5, strength=20.0, width_A=0.15, p=0.05)


def _all_pairs(x, box, system):
    """Both orders of every pair within a system (as hippynn's pair finders give them)."""
    first, second = [], []
    for s in torch.unique(system):
        idx = torch.nonzero(system == s).ravel().tolist()
        for i, j in itertools.permutations(idx, 2):
            first.append(i)
            second.append(j)
    first, second = torch.tensor(first), torch.tensor(second)
    d = x[first] - x[second]
    b = box[system[first]]
    d = d - b * torch.round(d / b)
    return first, second, torch.linalg.norm(d, dim=1), system[first]


def _energy_and_forces(x, box, system, n_systems):
    x = x.clone().requires_grad_(True)
    first, second, r, sys_of_pair = _all_pairs(x, box, system)
    e = PRIOR(first, second, r, sys_of_pair, n_systems)
    (grad,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), -grad


def test_force_is_s_p_at_onset_and_s_one_width_inside():
    for r, want in ((2.5, 20.0 * 0.05), (2.35, 20.0)):
        rr = torch.tensor([r], dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(PRIOR.pair_energy(rr).sum(), rr)
        assert float(-g) == pytest.approx(want, rel=1e-12)


def _random_system(rng, n=12, box=9.0):
    x = torch.tensor(rng.uniform(0, box, (n, 3)), dtype=torch.float64)
    return x, torch.full((1, 3), box, dtype=torch.float64)


def test_energy_counts_each_pair_once_and_forces_are_minus_gradients():
    rng = np.random.default_rng(0)
    x, box = _random_system(rng)
    system = torch.zeros(len(x), dtype=torch.long)
    e, f = _energy_and_forces(x, box, system, 1)
    expect = 0.0
    xn, bn = x.numpy(), box.numpy()[0]
    for i, j in itertools.combinations(range(len(x)), 2):
        d = xn[i] - xn[j]
        d -= bn * np.round(d / bn)
        r = np.linalg.norm(d)
        expect += 20.0 * 0.05 / PRIOR.decay_per_A * np.exp(-PRIOR.decay_per_A * (r - 2.5))
    assert e.shape == (1, 1) and float(e) == pytest.approx(expect, rel=1e-12)
    h = 1e-6
    for k in range(3):
        xp, xm = x.clone(), x.clone()
        xp[0, k] += h
        xm[0, k] -= h
        fd = -(float(_energy_and_forces(xp, box, system, 1)[0]) - float(_energy_and_forces(xm, box, system, 1)[0])) / (2 * h)
        assert float(f[0, k]) == pytest.approx(fd, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_batched_systems_equal_single_ones(batch):
    rng = np.random.default_rng(batch)
    singles = [_random_system(rng) for _ in range(batch)]
    x = torch.cat([s[0] for s in singles])
    box = torch.cat([s[1] for s in singles])
    system = torch.repeat_interleave(torch.arange(batch), len(singles[0][0]))
    e, f = _energy_and_forces(x, box, system, batch)
    assert e.shape == (batch, 1)
    for b, (xs, bs) in enumerate(singles):
        e1, f1 = _energy_and_forces(xs, bs, torch.zeros(len(xs), dtype=torch.long), 1)
        torch.testing.assert_close(e[b], e1[0])
        torch.testing.assert_close(f[system == b], f1)
    # added to a network-like (B, 1) energy the shape stays (B, 1): no (B, B) broadcast
    assert (torch.zeros(batch, 1, dtype=e.dtype) + e).shape == (batch, 1)


def test_fit_from_reference_water(water64):
    cg = water64[1]
    prior = RepulsivePrior.fit(cg.positions, cg.box, cg.forces)
    d = cg.positions[:, :, None] - cg.positions[:, None]
    d -= cg.box[:, None, None] * np.round(d / cg.box[:, None, None])
    r = np.linalg.norm(d, axis=-1)
    closest = r[r > 0].min()
    # the onset is at the closest approaches the data has (within a couple of bins)
    assert closest - 0.05 <= float(prior.onset_A) <= closest + 0.3
    assert 2.2 < float(prior.onset_A) < 2.8  # water O-O contact
    assert float(prior.strength) == pytest.approx(np.linalg.norm(cg.forces, axis=-1).mean())
    assert prior.parameters_dict()["p"] == 0.05


def test_bad_parameters():
    with pytest.raises(ValueError, match="0 < p < 1"):
        RepulsivePrior(2.5, 10.0, p=1.5)
