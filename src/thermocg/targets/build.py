"""Thermal-response targets for a set of CG frames, given baseline values (THEORY.md §3).

The baselines are conditional means fitted in order — F0 (force matching), the
per-bead energies U_J(R), then v(R) from the residuals of the local energy —
whether by :mod:`thermocg.targets.baselines` (pairwise splines), by the
training stage's HIP-NN-TS models, or by exact oracles: this module takes their
values as arrays, so any model plugs in as ``model(cg.positions, cg.box)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thermocg.mapping import CGFrames
from thermocg.targets import estimators
from thermocg.targets.local import local_sum


@dataclass(frozen=True)
class Targets:
    """Regression targets per frame and bead.

    t0 (F, N, 3): mapped forces; t1 (F, N, 3): order 1; t2 (F, N, 3) or None: order 2
    (centred); u_loc (F, N): local (or total) energies; c (F, N): their baselines;
    r_e: local radius in Å, None for the global variant (u = total energy).
    """

    t0: np.ndarray
    t1: np.ndarray
    t2: np.ndarray | None
    u_loc: np.ndarray
    c: np.ndarray
    r_e: float | None


def local_energy_and_baseline(cg: CGFrames, bead_baseline, r_e: float | None) -> tuple[np.ndarray, np.ndarray]:
    """``u_loc`` and ``c`` (both (F, N)): neighbour sums within r_e of the per-bead energies and
    of their baseline U_J(R); ``r_e = None``: the total potential energy and sum_J U_J."""
    u_bead = _check(bead_baseline, cg.bead_energy.shape, "energy baseline")
    if r_e is None:
        n = cg.bead_energy.shape[1]
        return (np.repeat(cg.potential_energy[:, None], n, axis=1),
                np.repeat(u_bead.sum(axis=1, keepdims=True), n, axis=1))
    return local_sum(cg.bead_energy, cg.positions, cg.box, r_e), local_sum(u_bead, cg.positions, cg.box, r_e)


def thermal_targets(cg: CGFrames, force_baseline, bead_baseline, r_e: float | None,
                    variance=None) -> Targets:
    """Order-0, 1 and (with ``variance``) centred order-2 targets.

    Parameters
    ----------
    cg : CGFrames
    force_baseline : (F, N, 3) F0 at the frames, kcal/(mol Å)
    bead_baseline : (F, N) U_J at the frames, kcal/mol
    r_e : Å, or None for the global variant
    variance : (F, N) v_I, kcal^2/mol^2, or None (no order-2 target)
    """
    f0 = _check(force_baseline, cg.forces.shape, "force baseline")
    u_loc, c = local_energy_and_baseline(cg, bead_baseline, r_e)
    t1 = estimators.order1(cg.forces, u_loc, f0, c)
    t2 = None
    if variance is not None:
        t2 = estimators.order2_centred(cg.forces, u_loc, f0, c, _check(variance, u_loc.shape, "variance"))
    return Targets(t0=cg.forces.copy(), t1=t1, t2=t2, u_loc=u_loc, c=c, r_e=r_e)


def _check(values, shape, what) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{what} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} is not finite")
    return a
