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

from thermocg.geometry import minimum_image, pair_vectors, periodic_pairs
from thermocg.units import beta_of

__all__ = ["PairTwoStateOracle", "TwoStateOracle", "beta_of"]  # beta_of: re-exported for oracle users


def _occupation(eps, beta, g):
    """g e^{-beta eps} / (1 + g e^{-beta eps}), the logistic function computed stably."""
    z = beta * eps - np.log(g)
    return 0.5 * (1 - np.tanh(z / 2))


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
        """Probability of s = 1 given x."""
        return _occupation(self.eps(x), beta, self.g)

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


def _switch(r, rc, width=1.0):
    """1 below rc - width, 0 beyond rc, the cubic 1 - 3x^2 + 2x^3 between (value and slope
    continuous); returns S and dS/dr."""
    x = np.clip((np.asarray(r, dtype=np.float64) - (rc - width)) / width, 0.0, 1.0)
    return 1 - 3 * x * x + 2 * x**3, (-6 * x + 6 * x * x) / width


@dataclass(frozen=True)
class PairTwoStateOracle:
    """A many-body liquid with exact F, F1, F2 per bead (THEORY.md §5, pairwise version).

    Every pair of beads within ``cutoff_A`` carries a hidden state s in {0, 1}
    (degeneracy ``g`` of s = 1), independent between pairs given the positions:
    ``u = sum_pairs [V(r) + eps(r) s]``. With ``p(r) = g e^{-beta eps}/(1 + g e^{-beta eps})``
    the pair PMF is ``w = V - ln(1 + g e^{-beta eps}) / beta`` and, along the unit
    vector from j to i, each pair adds to bead i

        F   = -(V' + eps' p),   F1 = eps' eps p (1 - p),   F2 = -eps' eps^2 p (1 - p)(1 - 2p).

    Bead energies: ``u_J`` = half of every pair energy involving J. Functions:
    ``V = a (sigma / r)^12 S(r)``, ``eps = e0 (r_m - r) S(r)``, S a smooth switch
    from 1 to 0 over the last 1 Å before the cutoff. The defaults put F1 and F2 where
    pairs are common (3-4.5 Å) and give F2 a sign change. Units: Å, kcal/mol.
    """

    cutoff_A: float = 5.0
    a: float = 1.0
    sigma: float = 2.7
    e0: float = 1.0
    r_m: float = 3.8
    g: float = 2.0

    def V(self, r):
        s, _ = _switch(r, self.cutoff_A)
        return self.a * (self.sigma / r) ** 12 * s

    def dV(self, r):
        s, ds = _switch(r, self.cutoff_A)
        lj = self.a * (self.sigma / r) ** 12
        return -12 * lj / r * s + lj * ds

    def eps(self, r):
        s, _ = _switch(r, self.cutoff_A)
        return self.e0 * (self.r_m - r) * s

    def deps(self, r):
        s, ds = _switch(r, self.cutoff_A)
        return -self.e0 * s + self.e0 * (self.r_m - r) * ds

    def p(self, r, beta):
        """Probability of the pair state s = 1 at distance r."""
        return _occupation(self.eps(r), beta, self.g)

    def w(self, r, beta):
        """Pair PMF in kcal/mol, shifted by ln(1 + g)/beta so that it is 0 at and beyond the cutoff.

        Every pair has a hidden state, but beyond the cutoff both states have energy 0:
        they add the same constant -ln(1 + g)/beta to every pair's PMF, no force and
        no energy, so leaving them out (the shift) changes nothing physical.
        """
        shifted = self.V(r) - (np.logaddexp(0.0, np.log(self.g) - beta * self.eps(r)) - np.log1p(self.g)) / beta
        return np.where(r < self.cutoff_A, shifted, 0.0)

    # -- configurations ------------------------------------------------------------
    def pairs(self, positions, box):
        """(i, j, unit vector from j to i, r) for pairs i < j within the cutoff."""
        x = np.asarray(positions, dtype=np.float64)
        b = np.asarray(box, dtype=np.float64)
        p = periodic_pairs(x, b, self.cutoff_A)
        d, r = pair_vectors(x, p, b)
        return p[:, 0], p[:, 1], d / r[:, None], r

    @staticmethod
    def _half_to_each(i, j, pair_energy, n):
        """Bead energies: half of every pair energy to each of its two beads."""
        return 0.5 * (np.bincount(i, pair_energy, n) + np.bincount(j, pair_energy, n))

    def _per_bead(self, i, j, rhat, magnitude, n):
        out = np.zeros((n, 3))
        np.add.at(out, i, magnitude[:, None] * rhat)
        np.add.at(out, j, -magnitude[:, None] * rhat)
        return out

    def exact(self, positions, box, beta, r_e=None):
        """Exact conditional quantities at one configuration.

        Returns dict with ``F``, ``F1``, ``F2`` (N, 3); ``U`` (N,) the bead energy
        baselines <u_J>; and, when ``r_e`` is given, the exact conditional means of
        the local targets with exact baselines: ``t1_mean`` and ``t2_mean`` (each pair
        (I, J) enters u_loc,I with weight 1/2 + 1/2 [r_IJ < r_e], so r_e >= cutoff gives
        F1 and F2 exactly and a shorter r_e shows the truncation bias) and ``v`` (N,),
        the exact Var(u_loc,I | R).
        """
        n = len(positions)
        i, j, rhat, r = self.pairs(positions, box)
        p = self.p(r, beta)
        de, e = self.deps(r), self.eps(r)
        out = {
            "F": self._per_bead(i, j, rhat, -(self.dV(r) + de * p), n),
            "F1": self._per_bead(i, j, rhat, de * e * p * (1 - p), n),
            "F2": self._per_bead(i, j, rhat, -de * e * e * p * (1 - p) * (1 - 2 * p), n),
            "U": self._half_to_each(i, j, self.V(r) + e * p, n),
        }
        if r_e is not None:
            from thermocg.targets.local import neighbour_matrix
            near = neighbour_matrix(positions, box, r_e)
            inside = np.asarray(near[i, j]).ravel() > 0
            wgt = np.where(inside, 1.0, 0.5)
            out["t1_mean"] = self._per_bead(i, j, rhat, wgt * de * e * p * (1 - p), n)
            out["t2_mean"] = self._per_bead(i, j, rhat, -wgt**2 * de * e * e * p * (1 - p) * (1 - 2 * p), n)
            var = e * e * p * (1 - p)
            # Var(u_loc,I): pair (a, b) enters bead I's local sum with weight
            # 1/2 [a near I] + 1/2 [b near I]; pairs are independent given R.
            near_a = near[:, i].toarray()  # (N, P): is the pair's first bead within r_e of I
            near_b = near[:, j].toarray()
            out["v"] = ((0.5 * near_a + 0.5 * near_b) ** 2) @ var
        return out

    def sample_hidden(self, positions, box, beta, rng: np.random.Generator):
        """One exact draw of every pair's hidden state: mapped forces f (N, 3) and bead energies (N,)."""
        n = len(positions)
        i, j, rhat, r = self.pairs(positions, box)
        s = (rng.random(len(r)) < self.p(r, beta)).astype(np.float64)
        f = self._per_bead(i, j, rhat, -(self.dV(r) + self.deps(r) * s), n)
        pair_u = self.V(r) + self.eps(r) * s
        return f, self._half_to_each(i, j, pair_u, n)

    def sample_hidden_chain(self, positions, box, beta, n_samples: int, rng: np.random.Generator,
                            refresh: float = 1.0):
        """Restrained sampling, exactly: ``n_samples`` draws of the hidden states at fixed beads.

        A Markov chain whose stationary law is the exact conditional one: at every step each
        pair's state is redrawn from its conditional distribution with probability ``refresh``
        (else kept), so the samples are correlated like MD samples, with autocorrelation
        ``(1 - refresh)^lag`` (integrated correlation time ``(2 - refresh) / refresh`` samples);
        ``refresh = 1``: independent draws. Returns the mapped forces (K, N, 3) and the bead
        energies (K, N).
        """
        if not 0.0 < refresh <= 1.0:
            raise ValueError(f"refresh must be in (0, 1], found {refresh}")
        n = len(positions)
        i, j, rhat, r = self.pairs(positions, box)
        p, dv, de, v, e = self.p(r, beta), self.dV(r), self.deps(r), self.V(r), self.eps(r)
        s = (rng.random(len(r)) < p).astype(np.float64)
        forces, energies = np.empty((n_samples, n, 3)), np.empty((n_samples, n))
        for k in range(n_samples):
            if k:
                redraw = rng.random(len(r)) < refresh
                s = np.where(redraw, (rng.random(len(r)) < p).astype(np.float64), s)
            forces[k] = self._per_bead(i, j, rhat, -(dv + de * s), n)
            energies[k] = self._half_to_each(i, j, v + e * s, n)
        return forces, energies

    def sample_positions(self, n, box, beta, rng: np.random.Generator, sweeps=200, step_A=0.4, start=None,
                         restraint: tuple[np.ndarray, float] | None = None):
        """Metropolis Monte Carlo on the pair PMF ``sum w``: ``n`` beads in an orthorhombic box.

        Single-bead moves, uniform in a cube of half-width ``step_A``; returns the
        final positions and the acceptance ratio. (Only the positions come from MC;
        the hidden states are drawn exactly by :meth:`sample_hidden`.) ``restraint``:
        ``(centres, k)`` adds a spring ``k/2 |x_i - centres_i|^2`` (minimum image) on every
        bead, as restrained sampling with finite stiffness does to water's centres of mass.
        """
        b = np.asarray(box, dtype=np.float64)
        if start is None:
            m = int(np.ceil(n ** (1 / 3)))
            grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
            x = (grid + 0.5) * b / m
        else:
            x = np.array(start, dtype=np.float64)

        def bead_energy(k, xk):
            r = np.linalg.norm(minimum_image(x - xk, b), axis=1)
            r[k] = np.inf
            r = r[r < self.cutoff_A]
            spring = 0.0
            if restraint is not None:
                spring = 0.5 * restraint[1] * float(np.sum(minimum_image(xk - restraint[0][k], b) ** 2))
            return float(np.sum(self.w(r, beta))) + spring

        accepted = 0
        for _ in range(sweeps):
            for k in rng.permutation(n):
                trial = x[k] + rng.uniform(-step_A, step_A, 3)
                delta = bead_energy(k, trial) - bead_energy(k, x[k])
                if delta <= 0 or rng.random() < np.exp(-beta * delta):
                    x[k] = trial
                    accepted += 1
        return x, accepted / (sweeps * n)

    def sample_frames(self, n_frames, n_beads, box, beta, rng: np.random.Generator, equilibration_sweeps=30,
                      sweeps_between=3):
        """``n_frames`` configurations (n_frames, n_beads, 3) from one Monte Carlo chain on the
        pair PMF: ``equilibration_sweeps`` from a lattice, then ``sweeps_between`` per frame."""
        x, _ = self.sample_positions(n_beads, box, beta, rng, sweeps=equilibration_sweeps)
        frames = []
        for _ in range(n_frames):
            x, _ = self.sample_positions(n_beads, box, beta, rng, sweeps=sweeps_between, start=x)
            frames.append(x.copy())
        return np.array(frames)

    def exact_frames(self, positions, box, beta) -> dict:
        """:meth:`exact` of every frame, stacked: ``F``, ``F1``, ``F2`` (n_frames, N, 3), ``U`` (n_frames, N)."""
        rows = [self.exact(x, box, beta) for x in positions]
        return {key: np.array([r[key] for r in rows]) for key in ("F", "F1", "F2", "U")}

