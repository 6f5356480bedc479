"""The skin pair list: exactly the minimum-image pairs within the cutoff at every call (a
brute-force oracle), whether the list was rebuilt or reused, across box edges and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg.simulate.pairs import SkinPairs

CUTOFF = 4.0


def brute_force(x, box, cutoff):
    """{(system, i, j): minimum-image vector x_i - x_j} for all ordered pairs within cutoff."""
    out = {}
    for s in range(x.shape[0]):
        d = x[s, :, None, :] - x[s, None, :, :]
        d -= box[s] * np.round(d / box[s])
        r = np.linalg.norm(d, axis=-1)
        for i, j in zip(*np.nonzero((r < cutoff) & ~np.eye(len(r), dtype=bool))):
            out[(s, int(i), int(j))] = d[i, j]
    return out


def call(pairs, x, box):
    """Run the module as hippynn's graph would (flat bead indices, no padding)."""
    b, n, _ = x.shape
    xt = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    cell = torch.diag_embed(torch.as_tensor(box, dtype=torch.float64))
    real = torch.arange(b * n)
    dist, first, second, coord, offsets, offset_index = pairs(
        xt, torch.ones(b, n, dtype=torch.bool), real, real, cell, torch.arange(b).repeat_interleave(n), b, n)
    got = {(int(f) // n, int(f) % n, int(s) % n): c for f, s, c in zip(first, second, coord.detach().numpy())}
    # the documented conventions: coord = x_first - x_second + offsets @ cell, dist = |coord|
    flat = xt.detach().reshape(b * n, 3)
    lengths = torch.as_tensor(box, dtype=torch.float64).repeat_interleave(n, dim=0)
    np.testing.assert_allclose(coord.detach(), flat[first] - flat[second] + offsets * lengths[first], atol=1e-12)
    np.testing.assert_allclose(dist.detach(), coord.detach().norm(dim=1), atol=1e-12)
    assert torch.equal(offset_index, (offsets[:, 2] + 1) + 3 * ((offsets[:, 1] + 1) + 3 * (offsets[:, 0] + 1)))
    return got, dist, xt


def assert_same(got, want):
    assert set(got) == set(want), (len(got), len(want), sorted(set(got) ^ set(want))[:5])
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=1e-10)


@pytest.mark.slow  # ~7 s on 2 cores; CI runs it
def test_pairs_match_brute_force_through_rebuilds_reuses_and_box_crossings():
    rng = np.random.default_rng(0)
    box = np.array([[11.0, 12.0, 13.0], [11.0, 12.0, 13.0], [11.0, 12.0, 13.0]])
    x = rng.uniform(0, 1, (3, 70, 3)) * box[:, None, :]
    pairs = SkinPairs(CUTOFF, skin=1.0)
    got, _, _ = call(pairs, x, box)
    assert_same(got, brute_force(x, box, CUTOFF))
    assert pairs.rebuilds == 1
    u = rng.normal(size=x.shape)
    v = 0.06 * u / np.linalg.norm(u, axis=-1, keepdims=True)  # every bead moves 0.06 Å per step
    for step in range(30):
        x = x + v
        wrapped = x - box[:, None, :] * np.floor(x / box[:, None, :])  # the model sees wrapped positions
        got, _, _ = call(pairs, wrapped, box)
        assert_same(got, brute_force(wrapped, box, CUTOFF))
    # rebuilt when a bead has moved more than skin/2 = 0.5 Å: after 9 steps (0.54 Å), 18 and 27
    assert pairs.rebuilds == 4, pairs.rebuilds
    assert pairs.calls == 31


def test_a_bead_crossing_the_box_edge_is_not_motion():
    box = np.full((1, 3), 12.0)
    x = np.array([[[0.01, 6.0, 6.0], [3.0, 6.0, 6.0], [9.5, 6.0, 6.0]]])
    pairs = SkinPairs(CUTOFF, skin=1.0)
    call(pairs, x, box)
    x2 = x.copy()
    x2[0, 0, 0] = 11.98  # moved 0.03 Å across the edge: wrapped coordinate jumped by ~L
    got, _, _ = call(pairs, x2, box)
    assert pairs.rebuilds == 1
    assert_same(got, brute_force(x2, box, CUTOFF))
    assert (0, 0, 2) in got  # now 2.48 Å from bead 2 through the boundary


def test_gradients_flow_through_pair_vectors():
    """d|r_ij|/dx_i = r_ij / |r_ij| (minimum image)."""
    box = np.full((1, 3), 12.0)
    x = np.array([[[0.5, 6.0, 6.0], [11.0, 6.5, 6.0]]])
    pairs = SkinPairs(CUTOFF, skin=0.5)
    got, dist, xt = call(pairs, x, box)
    (g,) = torch.autograd.grad(dist.sum() / 2, xt)  # both orders present: halve
    r = np.array([1.5, -0.5, 0.0])
    np.testing.assert_allclose(g[0, 0].numpy(), r / np.linalg.norm(r), atol=1e-12)
    np.testing.assert_allclose(g[0, 1].numpy(), -r / np.linalg.norm(r), atol=1e-12)


def test_skin_shrinks_to_fit_the_box_and_a_too_long_cutoff_is_refused():
    pairs = SkinPairs(CUTOFF, skin=5.0)
    x = np.random.default_rng(1).uniform(0, 9.0, (1, 20, 3))
    got, _, _ = call(pairs, x, np.full((1, 3), 9.0))
    assert_same(got, brute_force(x, np.full((1, 3), 9.0), CUTOFF))
    assert pairs.neighbours._skin_used < 0.5  # L/2 - cutoff = 0.5
    with pytest.raises(ValueError, match="not below half the shortest box edge"):
        call(SkinPairs(CUTOFF, skin=1.0), x * 0.8, np.full((1, 3), 7.2))
