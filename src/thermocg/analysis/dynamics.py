"""Dynamics: mean squared displacement and the diffusion coefficient (THEORY.md §6).

The MSD is freud's (``freud.msd.MSD``, window mode: every time origin, by FFT). What is
ours is around it: several trajectories (NVE segments) averaged, the Einstein fit
in a stated linear window with an uncertainty from independent segments, and the
Yeh-Hummer finite-size correction, reported separately (it needs a viscosity, which
a CG model does not give).

Units: Å, ps; D in Å²/ps (1 Å²/ps = 1e-8 m²/s; water at 300 K: ~0.24 Å²/ps).
"""

from __future__ import annotations

import math

import numpy as np

from thermocg import units

#: Yeh & Hummer (J. Phys. Chem. B 108, 15873, 2004): the cubic-lattice constant of
#: D_inf = D_PBC + XI kB T / (6 pi eta L).
YEH_HUMMER_XI = 2.837297


class MSD:
    """Mean squared displacement of beads, averaged over beads, time origins and trajectories.

    Parameters
    ----------
    fit_window : (float, float)
        The linear regime for the Einstein fit, as fractions of the longest lag
        (default 0.2-0.6: past the ballistic and caging regime of a ~20 ps segment,
        before the statistics of long lags thin out).
    """

    def __init__(self, fit_window: tuple[float, float] = (0.2, 0.6)):
        lo, hi = fit_window
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"fit_window must satisfy 0 <= lo < hi <= 1, found {fit_window}")
        self.fit_window = (float(lo), float(hi))
        self._msd = None

    def compute(self, trajectories, dt_ps: float) -> "MSD":
        """``trajectories``: a list of unwrapped positions (F, N, 3) Å (or one such array), frames
        ``dt_ps`` apart, all of the same length. Returns self."""
        import freud

        trajs = [np.asarray(t, dtype=np.float64) for t in (trajectories if isinstance(trajectories, (list, tuple))
                                                           else [trajectories])]
        if not trajs or any(t.ndim != 3 or t.shape[2] != 3 for t in trajs):
            raise ValueError("trajectories must be arrays (F, N, 3) of unwrapped positions")
        if len({t.shape[0] for t in trajs}) != 1 or trajs[0].shape[0] < 3:
            raise ValueError(f"trajectories need one common length of at least 3 frames, found "
                             f"{[t.shape[0] for t in trajs]}")
        per = []
        for t in trajs:
            # displacements from each bead's first position: the same MSD, and small numbers
            # for freud's single-precision FFT. Unwrapped input: freud needs no box images (a
            # box is required; it is unused here).
            t = t - t[:1]
            m = freud.msd.MSD(freud.box.Box.cube(float(np.ptp(t)) + 1.0), mode="window")
            m.compute(t)
            per.append(np.asarray(m.msd, dtype=np.float64))
        self.dt_ps = float(dt_ps)
        self._per_traj = np.array(per)
        self._msd = self._per_traj.mean(axis=0)
        self._lag = np.arange(len(self._msd)) * self.dt_ps
        self._fit()
        return self

    def _window(self) -> np.ndarray:
        n = len(self._lag)
        lo, hi = (int(round(f * (n - 1))) for f in self.fit_window)
        return np.arange(max(lo, 1), max(hi, lo + 2) + 1)

    def _fit(self) -> None:
        w = self._window()
        slopes = [np.polyfit(self._lag[w], m[w], 1)[0] for m in self._per_traj]
        self._d_each = np.array(slopes) / 6.0
        self._d = float(np.polyfit(self._lag[w], self._msd[w], 1)[0] / 6.0)

    def _require(self):
        if self._msd is None:
            raise RuntimeError("MSD results are not available before compute()")

    @property
    def lag_time_ps(self) -> np.ndarray:
        self._require()
        return self._lag.copy()

    @property
    def msd(self) -> np.ndarray:
        """Å², (F,)."""
        self._require()
        return self._msd.copy()

    @property
    def diffusion_coefficient(self) -> float:
        """D from the slope of the mean MSD in the fit window, Å²/ps (no finite-size correction)."""
        self._require()
        return self._d

    @property
    def diffusion_error(self) -> float:
        """Standard error of D from the spread over independent trajectories (NaN with one)."""
        self._require()
        n = len(self._d_each)
        return float(np.std(self._d_each, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    def plot(self, ax=None, **kwargs):
        import matplotlib.pyplot as plt
        self._require()
        ax = ax or plt.gca()
        ax.plot(self._lag, self._msd, **kwargs)
        w = self._window()
        ax.axvspan(self._lag[w[0]], self._lag[w[-1]], color="0.9", zorder=0)
        ax.set_xlabel("lag time (ps)")
        ax.set_ylabel("MSD (Å²)")
        return ax


def yeh_hummer_correction(temperature_K: float, box_edge_A: float, viscosity_mPa_s: float) -> float:
    """D_inf - D_PBC = XI kB T / (6 pi eta L) in Å²/ps for a cubic box of edge L."""
    kt_joule = units.KB * 4184.0 / units.AVOGADRO * temperature_K
    d_m2_s = YEH_HUMMER_XI * kt_joule / (6.0 * math.pi * viscosity_mPa_s * 1e-3 * box_edge_A * 1e-10)
    return d_m2_s * 1e8  # m²/s -> Å²/ps
