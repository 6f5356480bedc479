"""Pairwise spline baselines: the conditional means the targets need, by linear least squares.

The thermal-response targets need baselines fitted in order (THEORY.md §3):
F0 (force matching), per-bead energies U_J(R), and v(R) ~ E[(u_loc - c)^2 | R].
The production baselines are HIP-NN-TS models (training stage); these pairwise
ones are the classic multiscale-CG force matching (Noid et al. 2008) and its
energy analogue — linear in their parameters, so they fit in seconds with no
training loop, and they are good first baselines (the targets only need them
reasonable: errors enter as products, THEORY.md §3).

Models, for beads I with pair distances r_IK < rc (minimum image), basis B_k
(piecewise-linear "hat" functions on a uniform grid from ``r_min_A`` to rc):

* force:     ``F0_I = sum_K g(r_IK) rhat_KI``,  ``g(r) = sum_k a_k B_k(r)``  (a pair force, conservative)
* energy:    ``U_I = a_0 + 1/2 sum_K phi(r_IK)``, ``phi = sum_k b_k B_k``
* variance:  ``v_I = c_0 + sum_K psi(r_IK)``,     ``psi = sum_k c_k B_k``

Fits use ridge-regularised normal equations accumulated frame by frame. With
``folds > 1`` the predictions are cross-fitted: each frame's baseline comes from
a fit that did not see that frame, so a baseline never absorbs the noise of the
sample it is subtracted from.

Why our own code: no library fits these (MS-CG codes such as BOCS or OpenMSCG
are standalone programs for LAMMPS/GROMACS data, not Python libraries).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from thermocg.geometry import pair_vectors, periodic_pairs


class Baseline(Protocol):
    """The baselines the thermal-response targets need (THEORY.md §3), as one protocol.

    Both methods fit and predict in one call, cross-fitted over frames: with ``folds > 1``
    each frame's prediction comes from a fit that never saw that frame (the targets stage
    only ever needs such out-of-fold predictions). Implementations:
    :class:`PairSplineBaseline` (here; linear least squares, seconds) and
    :class:`thermocg.targets.hipnn.HipnnBaseline` (HIP-NN-TS networks). The targets
    stage receives one and does not know which.
    """

    def force_and_energy(self, positions, box, forces, bead_energy, folds: int, types=None):
        """Cross-fitted F0 (F, N, 3), per-bead energies U_J (F, N) and a dict of what to record
        about the fit (stored with the targets; may be empty).

        positions (F, N, 3) Å; box (F, 3) Å; forces (F, N, 3) mapped forces, kcal/(mol Å);
        bead_energy (F, N) per-molecule energies u_J, kcal/mol; types (N,) the bead type of
        each bead (None: one type).
        """
        ...

    def variance(self, positions, box, squared_residual, folds: int, types=None):
        """Cross-fitted v (F, N): the regression of ``squared_residual`` (F, N) per bead."""
        ...


@dataclass(frozen=True)
class PairBasis:
    """Hat functions on ``n_basis`` uniform knots from ``r_min_A`` to ``cutoff_A``."""

    cutoff_A: float = 8.0
    r_min_A: float = 2.0
    n_basis: int = 40

    @property
    def knots(self) -> np.ndarray:
        return np.linspace(self.r_min_A, self.cutoff_A, self.n_basis)

    def weights(self, r):
        """(index k, weight of B_k, index k+1, weight of B_{k+1}) for distances r."""
        h = (self.cutoff_A - self.r_min_A) / (self.n_basis - 1)
        t = np.clip((np.asarray(r) - self.r_min_A) / h, 0.0, self.n_basis - 1 - 1e-12)
        k = np.floor(t).astype(np.int64)
        w = t - k
        return k, 1.0 - w, k + 1, w

    def evaluate(self, coef, r):
        """sum_k coef_k B_k(r)."""
        k0, w0, k1, w1 = self.weights(r)
        return coef[k0] * w0 + coef[k1] * w1


def pair_type_index(a, b, n_types: int):
    """The index of the unordered type pair {a, b} among the n_types (n_types + 1) / 2 of them:
    (0,0), (0,1), ..., (0,T-1), (1,1), ... (a mixture's pair functions g_ab = g_ba)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo * n_types - lo * (lo - 1) // 2 + (hi - lo)


def pair_features(positions, box, basis: PairBasis, types=None, n_types: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Features of one frame; ``types`` (N,) the bead type of each bead, 0 .. n_types - 1 (None:
    one type). Every type pair has its own functions.

    Returns
    -------
    force_design : (N, 3, U K)  d F_I,c / d a_uk for the pair-force model (U = T (T + 1) / 2
                   unordered type pairs u, K basis functions each; g_ab = g_ba, so Newton's
                   third law holds)
    pair_sum : (N, T T K)       sum_K B_k(r_IK) in the block of the ordered pair (t_I, t_K)
                                (energy and variance models: phi_ab, psi_ab per ordered pair)
    """
    x = np.asarray(positions, dtype=np.float64)
    n, kb = len(x), basis.n_basis
    t = np.zeros(n, dtype=np.int64) if types is None else np.asarray(types, dtype=np.int64)
    box = np.asarray(box, dtype=np.float64)
    p = periodic_pairs(x, box, basis.cutoff_A)
    i, j = p[:, 0], p[:, 1]
    d, r = pair_vectors(x, p, box)
    rhat = d / r[:, None]  # from j to i
    n_pairs = n_types * (n_types + 1) // 2
    force = np.zeros((n, 3, n_pairs * kb))
    psum = np.zeros((n, n_types * n_types * kb))
    u = pair_type_index(t[i], t[j], n_types) * kb
    for k, w in (basis.weights(r)[:2], basis.weights(r)[2:]):
        contrib = w[:, None] * rhat  # (P, 3)
        np.add.at(force, (i, slice(None), u + k), contrib)
        np.add.at(force, (j, slice(None), u + k), -contrib)
        np.add.at(psum, (i, (t[i] * n_types + t[j]) * kb + k), w)
        np.add.at(psum, (j, (t[j] * n_types + t[i]) * kb + k), w)
    return force, psum


def _per_bead_design(pair_sum: np.ndarray, types: np.ndarray, n_types: int, scale: float = 1.0) -> np.ndarray:
    """(N, T + T T K): a constant per bead type, then ``scale`` times the pair sums by ordered
    type pair. The energy model takes scale 1/2 (``U_I = a_{t_I} + 1/2 sum_K
    phi_{t_I t_K}(r_IK)``), the variance model 1. phi_ab and phi_ba are separate: a per-molecule
    energy need not split a pair's energy equally between two kinds of molecule
    (reciprocal-space and self terms differ by species), and the forces come from their own
    model."""
    return np.concatenate([np.eye(n_types)[types], scale * pair_sum], axis=1)


def _types(types, n: int) -> tuple[np.ndarray, int]:
    t = np.zeros(n, dtype=np.int64) if types is None else np.asarray(types, dtype=np.int64)
    return t, int(t.max()) + 1 if len(t) else 1


@dataclass(frozen=True)
class PairBaselineFit:
    """Fitted coefficients (the last fit on all frames, for reporting and reuse)."""

    basis: PairBasis
    force_coef: np.ndarray  # (U K,) g(r) on the knots per unordered type pair, kcal/(mol Å)
    energy_coef: np.ndarray  # (T + T T K,) a constant per type, then phi on the knots per ordered type pair, kcal/mol


def _solve(ata, aty, ridge):
    scale = np.mean(np.diag(ata)) if np.any(ata) else 1.0
    return np.linalg.solve(ata + ridge * scale * np.eye(len(ata)), aty)


def cross_fit_splits(n_frames: int, folds: int):
    """(training frames, held-out frames) per fold; with a single fold both are all frames."""
    everything = np.arange(n_frames)
    parts = np.array_split(everything, max(1, min(folds, n_frames)))
    for held in parts:
        yield (np.setdiff1d(everything, held) if len(parts) > 1 else held), held


def fit_force_and_energy(positions, box, forces, bead_energy, basis: PairBasis, folds: int = 5,
                         ridge: float = 1e-8, types=None):
    """Cross-fitted F0 (F, N, 3) and U (F, N) predictions, and the all-frame fit.

    Parameters
    ----------
    positions (F, N, 3) Å; box (F, 3) Å; forces (F, N, 3) mapped forces; bead_energy (F, N) u_J;
    types (N,) bead types (None: one type).
    """
    n_frames, n, _ = positions.shape
    t, n_types = _types(types, n)
    feats = [pair_features(positions[f], box[f], basis, t, n_types) for f in range(n_frames)]
    designs = [(fd.reshape(n * 3, -1), _per_bead_design(ps, t, n_types, 0.5)) for fd, ps in feats]
    fa = np.stack([a.T @ a for a, _ in designs])
    fy = np.stack([a.T @ forces[f].reshape(-1) for f, (a, _) in enumerate(designs)])
    ea = np.stack([e.T @ e for _, e in designs])
    ey = np.stack([e.T @ bead_energy[f] for f, (_, e) in enumerate(designs)])
    f0 = np.empty_like(np.asarray(forces, dtype=np.float64))
    u = np.empty((n_frames, n))
    for train, held in cross_fit_splits(n_frames, folds):
        a_coef = _solve(fa[train].sum(0), fy[train].sum(0), ridge)
        e_coef = _solve(ea[train].sum(0), ey[train].sum(0), ridge)
        for f in held:
            a, e = designs[f]
            f0[f] = (a @ a_coef).reshape(n, 3)
            u[f] = e @ e_coef
    fit = PairBaselineFit(basis, _solve(fa.sum(0), fy.sum(0), ridge), _solve(ea.sum(0), ey.sum(0), ridge))
    return f0, u, fit


def fit_variance(positions, box, squared_residual, basis: PairBasis, folds: int = 5, ridge: float = 1e-8,
                 types=None):
    """Cross-fitted v (F, N): regression of (u_loc - c)^2 on a constant per bead type plus pair
    sums per ordered type pair."""
    n_frames, n, _ = positions.shape
    t, n_types = _types(types, n)
    design = [_per_bead_design(pair_features(positions[f], box[f], basis, t, n_types)[1], t, n_types)
              for f in range(n_frames)]
    va = np.stack([d.T @ d for d in design])
    vy = np.stack([d.T @ squared_residual[f] for f, d in enumerate(design)])
    v = np.empty((n_frames, n))
    for train, held in cross_fit_splits(n_frames, folds):
        coef = _solve(va[train].sum(0), vy[train].sum(0), ridge)
        for f in held:
            v[f] = design[f] @ coef
    return v


@dataclass(frozen=True)
class PairSplineBaseline:
    """:class:`Baseline` from pairwise splines (:func:`fit_force_and_energy`, :func:`fit_variance`).

    What it records about a fit: the all-frame pair force function on the knots.
    """

    basis: PairBasis = PairBasis()
    ridge: float = 1e-8

    def force_and_energy(self, positions, box, forces, bead_energy, folds: int, types=None):
        f0, u, fit = fit_force_and_energy(positions, box, forces, bead_energy, self.basis, folds=folds,
                                          ridge=self.ridge, types=types)
        return f0, u, {"force_baseline_pair_function": fit.force_coef.tolist(),
                       "baseline_knots_A": fit.basis.knots.tolist()}

    def variance(self, positions, box, squared_residual, folds: int, types=None):
        return fit_variance(positions, box, squared_residual, self.basis, folds=folds, ridge=self.ridge,
                            types=types)
