"""The exact two-state oracle of THEORY.md §5, in one dimension.

A CG coordinate x and a hidden state s in {0, 1} (degeneracy g of s = 1):
``u(x, s) = V(x) + eps(x) s``. Given x, s is Bernoulli with
``p = g exp(-beta eps) / (1 + g exp(-beta eps))``, and

    W(x; beta) = V - ln(1 + g exp(-beta eps)) / beta
    F   = -V' - eps' p
    F1  = dF/dbeta   =  eps' eps p (1 - p)
    F2  = d2F/dbeta2 = -eps' eps^2 p (1 - p)(1 - 2p)
    U   = <u>_x = V + eps p,   Var_x(u) = eps^2 p (1 - p)

The mapped ("fine-grained") force of a sample is ``f = -V'(x) - eps'(x) s``.
Energies in kcal/mol, x in Å, beta in mol/kcal.

Defaults: ``V = k x^2 / 2 + q x^4``, ``eps = e0 + e1 x`` — a confining well whose
hidden state's energy depends on x, so F, F1 and F2 all vary with x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thermocg import units


@dataclass(frozen=True)
class TwoStateOracle:
    """Parameters: ``V = k/2 x^2 + q x^4``, ``eps = e0 + e1 x``, degeneracy ``g``."""

    k: float = 2.0
    q: float = 0.5
    e0: float = 1.0
    e1: float = 1.5
    g: float = 3.0

    # -- the model -------------------------------------------------------------
    def V(self, x):
        return 0.5 * self.k * x**2 + self.q * x**4

    def dV(self, x):
        return self.k * x + 4 * self.q * x**3

    def eps(self, x):
        return self.e0 + self.e1 * np.asarray(x, dtype=np.float64)

    def deps(self, x):
        return np.full_like(np.asarray(x, dtype=np.float64), self.e1)

    def p(self, x, beta):
        """Probability of s = 1 given x (a logistic function, computed stably)."""
        z = beta * self.eps(x) - np.log(self.g)
        return 0.5 * (1 - np.tanh(z / 2))

    # -- exact conditional quantities ---------------------------------------------
    def W(self, x, beta):
        return self.V(x) - np.logaddexp(0.0, np.log(self.g) - beta * self.eps(x)) / beta

    def F(self, x, beta):
        return -self.dV(x) - self.deps(x) * self.p(x, beta)

    def F1(self, x, beta):
        p = self.p(x, beta)
        return self.deps(x) * self.eps(x) * p * (1 - p)

    def F2(self, x, beta):
        p = self.p(x, beta)
        return -self.deps(x) * self.eps(x) ** 2 * p * (1 - p) * (1 - 2 * p)

    def U(self, x, beta):
        return self.V(x) + self.eps(x) * self.p(x, beta)

    def var_u(self, x, beta):
        p = self.p(x, beta)
        return self.eps(x) ** 2 * p * (1 - p)

    # -- samples -------------------------------------------------------------------
    def energy(self, x, s):
        return self.V(x) + self.eps(x) * s

    def force(self, x, s):
        """The fine-grained force on x in state s."""
        return -self.dV(x) - self.deps(x) * s

    def sample_hidden(self, x, beta, rng: np.random.Generator):
        """Hidden states drawn exactly from their conditional distribution given x."""
        return (rng.random(np.shape(x)) < self.p(x, beta)).astype(np.float64)

    def sample(self, n, beta, rng: np.random.Generator, grid=(-4.0, 4.0, 200_001)):
        """``n`` samples (x, s): x from the marginal exp(-beta W) by inverse transform on a
        fine grid (linear interpolation of the CDF; the grid error is far below any
        Monte Carlo error), then s exactly from its conditional."""
        xs = np.linspace(*grid)
        logw = -beta * self.W(xs, beta)
        w = np.exp(logw - logw.max())
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(xs))])
        x = np.interp(rng.random(n) * cdf[-1], cdf, xs)
        return x, self.sample_hidden(x, beta, rng)


def beta_of(temperature_K: float) -> float:
    """beta = 1 / (kB T) in mol/kcal."""
    return 1.0 / (units.KB * temperature_K)
