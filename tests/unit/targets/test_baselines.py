"""Pairwise spline baselines: exact recovery of functions in the basis, cross-fitting."""

from __future__ import annotations

import numpy as np

from thermocg.targets.baselines import PairBasis, fit_force_and_energy, fit_variance, pair_features

BASIS = PairBasis(cutoff_A=5.0, r_min_A=1.0, n_basis=12)


def _system(rng, n_frames=6, n=50, box=11.0):
    x = rng.uniform(0, box, (n_frames, n, 3))
    return x, np.full((n_frames, 3), box)


def _exact(x, box, g_coef, phi_coef, e0):
    """Forces and bead energies of a pair model in the basis span, by explicit loops."""
    n_frames, n, _ = x.shape
    forces, energy = np.zeros_like(x), np.full((n_frames, n), e0)
    for f in range(n_frames):
        for i in range(n):
            d = x[f, i] - x[f]
            d -= box[f] * np.round(d / box[f])
            r = np.linalg.norm(d, axis=1)
            ok = (r > 0) & (r < BASIS.cutoff_A)
            forces[f, i] = np.sum(BASIS.evaluate(g_coef, r[ok])[:, None] * d[ok] / r[ok, None], axis=0)
            energy[f, i] += 0.5 * np.sum(BASIS.evaluate(phi_coef, r[ok]))
    return forces, energy


def test_functions_in_the_basis_are_recovered_exactly():
    rng = np.random.default_rng(0)
    x, box = _system(rng)
    g = rng.normal(size=BASIS.n_basis)
    phi = rng.normal(size=BASIS.n_basis)
    forces, energy = _exact(x, box, g, phi, e0=-3.0)
    f0, u, fit = fit_force_and_energy(x, box, forces, energy, BASIS, folds=3, ridge=1e-12)
    np.testing.assert_allclose(fit.force_coef, g, atol=1e-6)
    np.testing.assert_allclose(fit.energy_coef, np.concatenate([[-3.0], phi]), atol=1e-6)
    np.testing.assert_allclose(f0, forces, atol=1e-6)  # cross-fitted predictions too
    np.testing.assert_allclose(u, energy, atol=1e-6)


def test_variance_model_recovers_a_pair_sum():
    rng = np.random.default_rng(1)
    x, box = _system(rng)
    psi = rng.uniform(0, 1, BASIS.n_basis)
    target = np.stack([2.0 + pair_features(x[f], box[f], BASIS)[1] @ psi for f in range(len(x))])
    np.testing.assert_allclose(fit_variance(x, box, target, BASIS, folds=2, ridge=1e-12), target, atol=1e-6)


def test_cross_fitted_prediction_ignores_its_own_frame():
    rng = np.random.default_rng(2)
    x, box = _system(rng, n_frames=4)
    forces = rng.normal(size=x.shape)
    energy = rng.normal(size=x.shape[:2])
    f_a, u_a, _ = fit_force_and_energy(x, box, forces, energy, BASIS, folds=4)
    forces2, energy2 = forces.copy(), energy.copy()
    forces2[1] += 5.0 * rng.normal(size=forces[1].shape)
    energy2[1] += 3.0
    f_b, u_b, _ = fit_force_and_energy(x, box, forces2, energy2, BASIS, folds=4)
    np.testing.assert_allclose(f_b[1], f_a[1], atol=1e-10)  # frame 1's baseline never saw frame 1
    np.testing.assert_allclose(u_b[1], u_a[1], atol=1e-10)
    assert np.abs(f_b[0] - f_a[0]).max() > 1e-3  # ... the other frames' baselines did


def _pairs_by_loop(x, box):
    """(frame, bead i, neighbour j, the vector from j to i, its length) of every minimum-image
    pair within the basis cutoff, by explicit loops (what the vectorised features are checked
    against)."""
    for f in range(len(x)):
        for i in range(x.shape[1]):
            d = x[f, i] - x[f]
            d -= box[f] * np.round(d / box[f])
            r = np.linalg.norm(d, axis=1)
            for j in np.flatnonzero((r > 0) & (r < BASIS.cutoff_A)):
                yield f, i, j, d[j], r[j]


def test_a_mixture_has_a_function_per_type_pair_recovered_exactly():
    """Two bead types: forces from g_00, g_01 = g_10, g_11 and energies from a constant per type
    plus phi per type pair (explicit loops) are recovered exactly, coefficient by coefficient (g
    in the order (0,0), (0,1), (1,1); phi per ordered pair, here symmetric); Newton's third law
    holds for the predicted forces; the variance model recovers a constant per type plus psi per
    *ordered* type pair."""
    from thermocg.targets.baselines import pair_type_index

    rng = np.random.default_rng(4)
    x, box = _system(rng)
    types = rng.integers(0, 2, x.shape[1])
    g = rng.normal(size=(3, BASIS.n_basis))
    phi = rng.normal(size=(3, BASIS.n_basis))
    e0 = np.array([-3.0, 1.5])
    forces, energy = np.zeros_like(x), np.tile(e0[types], (len(x), 1))
    for f, i, j, d, r in _pairs_by_loop(x, box):
        u = pair_type_index(types[i], types[j], 2)
        forces[f, i] += BASIS.evaluate(g[u], r) * d / r
        energy[f, i] += 0.5 * BASIS.evaluate(phi[u], r)
    f0, u_pred, fit = fit_force_and_energy(x, box, forces, energy, BASIS, folds=3, ridge=1e-12, types=types)
    np.testing.assert_allclose(fit.force_coef, g.ravel(), atol=1e-6)
    ordered = phi[[pair_type_index(a, b, 2) for a in range(2) for b in range(2)]]  # (0,0), (0,1), (1,0), (1,1)
    np.testing.assert_allclose(fit.energy_coef, np.concatenate([e0, ordered.ravel()]), atol=1e-6)
    np.testing.assert_allclose(f0, forces, atol=1e-6)
    np.testing.assert_allclose(u_pred, energy, atol=1e-6)
    np.testing.assert_allclose(f0.sum(axis=1), 0.0, atol=1e-9)
    # a per-molecule energy that splits a pair's energy unequally by species: phi_01 != phi_10
    phi_o = rng.normal(size=(4, BASIS.n_basis))
    uneven = np.tile(e0[types], (len(x), 1))
    for f, i, j, _, r in _pairs_by_loop(x, box):
        uneven[f, i] += 0.5 * BASIS.evaluate(phi_o[2 * types[i] + types[j]], r)
    _, u2, fit2 = fit_force_and_energy(x, box, forces, uneven, BASIS, folds=3, ridge=1e-12, types=types)
    np.testing.assert_allclose(fit2.energy_coef, np.concatenate([e0, phi_o.ravel()]), atol=1e-6)
    np.testing.assert_allclose(u2, uneven, atol=1e-6)
    assert [pair_type_index(a, b, 3) for a, b in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (2, 0))] == \
        [0, 1, 2, 3, 4, 5, 2]
    psi = rng.uniform(0, 1, 4 * BASIS.n_basis)  # (0,0), (0,1), (1,0), (1,1): psi_01 != psi_10
    target = np.stack([np.array([2.0, 0.5])[types] + pair_features(x[f], box[f], BASIS, types, 2)[1] @ psi
                       for f in range(len(x))])
    np.testing.assert_allclose(fit_variance(x, box, target, BASIS, folds=2, ridge=1e-12, types=types), target,
                               atol=1e-6)
