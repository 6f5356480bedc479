"""Per-sample regression targets for the thermal response forces (THEORY.md §3).

With one fine-grained sample per CG configuration R (an MD frame), mapped force
``f`` and energy ``u`` (total, or local: the sum of per-molecule energies near a
bead), these products of fluctuations have conditional means (``e = F - F0``,
``d = U - c``, derivatives in beta = 1/kT):

========================  ============================================  ==========================================
target                    formula                                       E[. | R]
========================  ============================================  ==========================================
order 1                   ``-(f - F0)(u - c)``                          ``F1 - e d``
order 2, naive            ``(f - F0)(u - c)^2``                         ``F2 - 2 d F1 + e (Var u + d^2)``
order 2, centred          ``(f - F0)((u - c)^2 - v)``                   ``F2 - 2 d F1 + e (Var u + d^2 - v)``
========================  ============================================  ==========================================

``F1 = dF/dbeta = -Cov_R(f, u)``, ``F2 = d2F/dbeta2 = kappa_R(f, u, u)``. With v
the conditional mean of ``(u - c)^2`` the centred target's force-model error
term vanishes; the naive one is kept only as a documented comparison (its
``e Var u`` term swamps F2). These are the method itself, so thermocg's own code.

Shapes: ``f``, ``F0`` (..., 3) or (...,); ``u``, ``c``, ``v`` (...,) broadcast
against the leading axes of ``f``. Units follow the inputs (kcal/mol, Å).
"""

from __future__ import annotations

import numpy as np


def _energy(x, f):
    x = np.asarray(x, dtype=np.float64)
    return x[..., None] if np.ndim(f) == np.ndim(x) + 1 else x


def order1(f, u, F0, c) -> np.ndarray:
    """``t1 = -(f - F0)(u - c)``; E[t1 | R] = F1 - (F - F0)(U - c)."""
    f = np.asarray(f, dtype=np.float64)
    return -(f - F0) * (_energy(u, f) - _energy(c, f))


def order2_centred(f, u, F0, c, v) -> np.ndarray:
    """``t2 = (f - F0)((u - c)^2 - v)``; E[t2 | R] = F2 - 2 d F1 + e (Var u + d^2 - v)."""
    f = np.asarray(f, dtype=np.float64)
    du = _energy(u, f) - _energy(c, f)
    return (f - F0) * (du * du - _energy(v, f))


def order2_naive(f, u, F0, c) -> np.ndarray:
    """``(f - F0)(u - c)^2``, for comparison only: E = F2 - 2 d F1 + e (Var u + d^2)."""
    return order2_centred(f, u, F0, c, 0.0)


def expected_order1(F1, e, d):
    """Conditional mean of :func:`order1` given the baseline errors e = F - F0, d = U - c."""
    return F1 - e * d


def expected_order2(F1, F2, e, d, var_u, v=0.0):
    """Conditional mean of :func:`order2_centred` (``v = 0``: :func:`order2_naive`)."""
    return F2 - 2 * d * F1 + e * (var_u + d * d - v)
