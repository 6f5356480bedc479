"""Thermal-response targets for a set of CG frames, given baseline models (THEORY.md §3).

The baselines are conditional means fitted in order — F0 (force matching), the
per-bead energies U_J(R), and v(R) — and will come from the HIP-NN-TS models of
the training stage. Here they are any callables of (positions, box), so exact
baselines (oracles) and fitted models plug in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from thermocg.mapping import CGFrames
from thermocg.targets import estimators
from thermocg.targets.local import local_sum

#: (positions (F, N, 3) Å, box (F, 3) Å) -> array
Model = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Baselines:
    """Baseline models. ``force``: F0, (F, N, 3) kcal/(mol Å). ``bead_energy``: U_J(R),
    (F, N) kcal/mol. ``variance``: v_I(R) ~ E[(u_loc,I - c_I)^2 | R], (F, N) kcal^2/mol^2,
    needed for the order-2 target."""

    force: Model
    bead_energy: Model
    variance: Model | None = None


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


def thermal_targets(cg: CGFrames, baselines: Baselines, r_e: float | None, order: int = 2) -> Targets:
    """Build the order-0, 1 (and 2) targets of :mod:`thermocg.targets.estimators`.

    ``r_e = None`` gives the global variant: ``u`` is the total potential energy
    (every bead) and ``c = sum_J U_J``, kept for comparison with the local one.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, found {order}")
    f0 = np.asarray(baselines.force(cg.positions, cg.box), dtype=np.float64)
    if f0.shape != cg.forces.shape:
        raise ValueError(f"force baseline returned shape {f0.shape}, expected {cg.forces.shape}")
    u_bead = np.asarray(baselines.bead_energy(cg.positions, cg.box), dtype=np.float64)
    if u_bead.shape != cg.bead_energy.shape:
        raise ValueError(f"energy baseline returned shape {u_bead.shape}, expected {cg.bead_energy.shape}")
    if r_e is None:
        n = cg.bead_energy.shape[1]
        u_loc = np.repeat(cg.potential_energy[:, None], n, axis=1)
        c = np.repeat(u_bead.sum(axis=1, keepdims=True), n, axis=1)
    else:
        u_loc = local_sum(cg.bead_energy, cg.positions, cg.box, r_e)
        c = local_sum(u_bead, cg.positions, cg.box, r_e)
    t1 = estimators.order1(cg.forces, u_loc, f0, c)
    t2 = None
    if order == 2:
        if baselines.variance is None:
            raise ValueError("the order-2 target needs a variance baseline v(R)")
        v = np.asarray(baselines.variance(cg.positions, cg.box), dtype=np.float64)
        t2 = estimators.order2_centred(cg.forces, u_loc, f0, c, v)
    return Targets(t0=cg.forces.copy(), t1=t1, t2=t2, u_loc=u_loc, c=c, r_e=r_e)
