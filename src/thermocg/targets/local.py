"""Local energies for local regression (THEORY.md §3).

Conditional on R, the force on bead I correlates only with the energies of
nearby molecules, so ``Cov_R(f_I, u) ~ Cov_R(f_I, u_loc,I)`` with
``u_loc,I = sum_{J : |R_IJ| < r_e} u_J`` (minimum image, J = I included).
The same neighbour sums apply to per-bead baselines: ``c_I = sum_{J near I} U_J(R)``.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix

from thermocg.geometry import periodic_pairs


def neighbour_matrix(positions, box, r_e: float) -> csr_matrix:
    """Sparse (N, N) 0/1 matrix A with A_IJ = 1 when |R_I - R_J| < r_e (minimum image), diagonal included.

    Parameters
    ----------
    positions : (N, 3) Å;  box : (3,) Å, orthorhombic;  r_e : Å
        ``r_e`` may exceed half the box: then every bead counts every other
        bead once (the nearest image), which is the global limit.
    """
    x = np.asarray(positions, dtype=np.float64)
    b = np.asarray(box, dtype=np.float64)
    n = len(x)
    if r_e >= 0.5 * np.sqrt(np.sum(b * b)):  # beyond the farthest minimum image: everyone
        return csr_matrix(np.ones((n, n)))
    pairs = periodic_pairs(x, b, r_e)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
    return csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))


def local_sum(values, positions, box, r_e: float) -> np.ndarray:
    """``sum_{J near I} values_J`` for every bead and frame.

    Parameters
    ----------
    values : (F, N) per-bead quantities (energies u_J, baselines U_J)
    positions : (F, N, 3) Å;  box : (F, 3) Å;  r_e : Å

    Returns
    -------
    (F, N)
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    for k in range(len(values)):
        out[k] = neighbour_matrix(positions[k], box[k], r_e) @ values[k]
    return out
