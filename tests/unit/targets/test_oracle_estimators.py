"""The 1-D two-state oracle (THEORY.md §5) and the thermal-response estimators (§3).

Statistical tests compare a Monte Carlo mean with its exact value at z = 4.5
standard errors: a false failure has probability 7e-6 per comparison (Gaussian
means of >= 10^4 samples), below 1e-3 for the whole file. Seeds are fixed, so a
run is reproducible; the bound says how often another seed would fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.targets import estimators as est
from thermocg.targets.oracle import TwoStateOracle, beta_of

Z = 4.5
ORACLE = TwoStateOracle()
XS = np.linspace(-1.5, 1.5, 13)
BETAS = [0.5, beta_of(300.0), 3.0]


@pytest.mark.parametrize("beta", BETAS)
def test_analytic_derivatives_match_finite_differences(beta):
    h = 1e-4
    F = ORACLE.F
    np.testing.assert_allclose(ORACLE.F1(XS, beta), (F(XS, beta + h) - F(XS, beta - h)) / (2 * h), atol=1e-7)
    np.testing.assert_allclose(ORACLE.F2(XS, beta),
                               (F(XS, beta + h) - 2 * F(XS, beta) + F(XS, beta - h)) / h**2, atol=2e-5)
    hx = 1e-5
    np.testing.assert_allclose(F(XS, beta), -(ORACLE.W(XS + hx, beta) - ORACLE.W(XS - hx, beta)) / (2 * hx),
                               atol=1e-7)


@pytest.mark.parametrize("beta", BETAS)
def test_beta_derivative_of_beta_F_is_minus_grad_U(beta):
    """d(beta F)/dbeta = F + beta F1 = -dU/dx (THEORY.md §2)."""
    hx = 1e-5
    grad_u = (ORACLE.U(XS + hx, beta) - ORACLE.U(XS - hx, beta)) / (2 * hx)
    np.testing.assert_allclose(ORACLE.F(XS, beta) + beta * ORACLE.F1(XS, beta), -grad_u, atol=1e-7)


def _conditional_mean(values_of_s, x, beta):
    """Exact E[. | x]: s = 1 with probability p, else 0."""
    p = ORACLE.p(x, beta)
    return (1 - p) * values_of_s(0.0) + p * values_of_s(1.0)


@pytest.mark.parametrize("beta", BETAS)
def test_cumulant_identities_by_enumeration(beta):
    """F1 = -Cov(f, u), F2 = kappa(f, u, u), exactly, at fixed x."""
    x = XS
    F, U = ORACLE.F(x, beta), ORACLE.U(x, beta)
    np.testing.assert_allclose(_conditional_mean(lambda s: ORACLE.force(x, s), x, beta), F, atol=1e-12)
    cov = _conditional_mean(lambda s: (ORACLE.force(x, s) - F) * (ORACLE.energy(x, s) - U), x, beta)
    np.testing.assert_allclose(-cov, ORACLE.F1(x, beta), atol=1e-12)
    k3 = _conditional_mean(lambda s: (ORACLE.force(x, s) - F) * (ORACLE.energy(x, s) - U) ** 2, x, beta)
    np.testing.assert_allclose(k3, ORACLE.F2(x, beta), atol=1e-12)
    np.testing.assert_allclose(_conditional_mean(lambda s: (ORACLE.energy(x, s) - U) ** 2, x, beta),
                               ORACLE.var_u(x, beta), atol=1e-12)


@pytest.mark.parametrize("e, d", [(0.0, 0.0), (0.3, 0.0), (0.0, -0.2), (0.25, 0.15)])
def test_estimator_biases_are_exactly_as_theory_says(e, d):
    """With F0 = F - e and c = U - d, each estimator's conditional mean (by enumeration) is the
    formula of THEORY.md §3; with v = E[(u - c)^2 | x] the centred order-2 target loses the
    force-model error term, the naive one keeps e (Var u + d^2)."""
    beta, x = 1.2, XS
    F, U, F1, F2, var = (ORACLE.F(x, beta), ORACLE.U(x, beta), ORACLE.F1(x, beta), ORACLE.F2(x, beta),
                         ORACLE.var_u(x, beta))
    F0, c = F - e, U - d
    v = var + d * d  # the conditional mean of (u - c)^2

    def mean(fn):
        return _conditional_mean(lambda s: fn(ORACLE.force(x, s), ORACLE.energy(x, s)), x, beta)

    np.testing.assert_allclose(mean(lambda f, u: est.order1(f, u, F0, c)), est.expected_order1(F1, e, d),
                               atol=1e-12)
    naive = mean(lambda f, u: est.order2_naive(f, u, F0, c))
    centred = mean(lambda f, u: est.order2_centred(f, u, F0, c, v))
    np.testing.assert_allclose(naive, est.expected_order2(F1, F2, e, d, var), atol=1e-12)
    np.testing.assert_allclose(centred, est.expected_order2(F1, F2, e, d, var, v), atol=1e-12)
    np.testing.assert_allclose(centred, F2 - 2 * d * F1, atol=1e-12)  # no e term left
    # the trap: the naive target is off by e (Var u + d^2), which grows with the energy
    # variance (here ~0.2 kcal^2/mol^2; for a total energy of water, hundreds)
    np.testing.assert_allclose(naive - centred, e * v, atol=1e-12)


def test_monte_carlo_means_converge_to_the_exact_values():
    """Hidden states sampled exactly at fixed x: sample means of t1 and t2 within Z standard errors."""
    rng = np.random.default_rng(11)
    beta, n = 1.2, 40_000
    e, d = 0.2, 0.1
    for x0 in (-1.0, 0.0, 0.7):
        x = np.full(n, x0)
        s = ORACLE.sample_hidden(x, beta, rng)
        f, u = ORACLE.force(x, s), ORACLE.energy(x, s)
        F0, c = ORACLE.F(x0, beta) - e, ORACLE.U(x0, beta) - d
        var = ORACLE.var_u(x0, beta)
        F1, F2 = ORACLE.F1(x0, beta), ORACLE.F2(x0, beta)
        for t, exact in ((est.order1(f, u, F0, c), est.expected_order1(F1, e, d)),
                         (est.order2_centred(f, u, F0, c, var + d * d), F2 - 2 * d * F1),
                         (est.order2_naive(f, u, F0, c), est.expected_order2(F1, F2, e, d, var))):
            se = t.std(ddof=1) / np.sqrt(n)
            assert abs(t.mean() - exact) < Z * se, (x0, t.mean(), exact, se)


def test_sampler_draws_the_marginal():
    """x from exp(-beta W): the mean force over samples vanishes, and binned densities match."""
    rng = np.random.default_rng(12)
    beta, n = 1.2, 200_000
    x, s = ORACLE.sample(n, beta, rng)
    f = ORACLE.force(x, s)
    assert abs(f.mean()) < Z * f.std() / np.sqrt(n)  # <F> = -<W'> = 0 for a confined marginal
    # hidden states: the fraction in s = 1 equals <p(x)>
    p = ORACLE.p(x, beta)
    assert abs(s.mean() - p.mean()) < Z * np.sqrt(np.mean(p * (1 - p)) / n)
    grid = np.linspace(-4, 4, 400_001)
    dens = np.exp(-beta * (ORACLE.W(grid, beta) - ORACLE.W(grid, beta).min()))
    dens /= np.trapezoid(dens, grid)
    edges = np.linspace(-1.5, 1.5, 16)
    counts, _ = np.histogram(x, edges)
    probs = np.array([np.trapezoid(dens[(grid >= a) & (grid <= b)], grid[(grid >= a) & (grid <= b)])
                      for a, b in zip(edges[:-1], edges[1:])])
    expected = n * probs
    assert np.all(np.abs(counts - expected) < Z * np.sqrt(expected))


@pytest.mark.parametrize("order", [1, 2])
def test_regressing_targets_recovers_the_exact_functions(order):
    """Sample (x, s) from the ensemble, build targets with exact baselines, regress with a
    simple model (bin means): each bin's mean target agrees with the bin's mean exact F1 or F2."""
    rng = np.random.default_rng(20 + order)
    beta, n = 1.2, 400_000
    x, s = ORACLE.sample(n, beta, rng)
    f, u = ORACLE.force(x, s), ORACLE.energy(x, s)
    F0, c = ORACLE.F(x, beta), ORACLE.U(x, beta)
    if order == 1:
        t, exact = est.order1(f, u, F0, c), ORACLE.F1(x, beta)
    else:
        t, exact = est.order2_centred(f, u, F0, c, ORACLE.var_u(x, beta)), ORACLE.F2(x, beta)
    edges = np.linspace(-1.2, 1.2, 13)
    which = np.digitize(x, edges) - 1
    for b in range(len(edges) - 1):
        sel = which == b
        assert sel.sum() > 2000
        se = t[sel].std(ddof=1) / np.sqrt(sel.sum())
        assert abs(t[sel].mean() - exact[sel].mean()) < Z * se, (b, t[sel].mean(), exact[sel].mean(), se)
    # and the functions are far from zero: the test discriminates
    assert np.max(np.abs(exact)) > 10 * Z * t.std() / np.sqrt(n / 12)


def test_estimators_broadcast_energies_over_force_components():
    f = np.ones((5, 4, 3))
    u = np.arange(20.0).reshape(5, 4)
    t = est.order1(f, u, 0.0, 1.0)
    assert t.shape == (5, 4, 3)
    np.testing.assert_allclose(t[..., 1], -(u - 1.0))
