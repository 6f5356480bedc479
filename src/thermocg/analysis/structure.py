"""Structure of bead configurations (THEORY.md §6): RDF, first-shell ADF, pair excess entropy.

Why our own: freud's RDF normalises by N/V (an ideal gas of N beads reads
g = 1 - 1/N), MDAnalysis' InterRDF needs a Universe, and neither has a
bond-angle distribution (freud's BondOrder is a 2-D map of bond directions,
hippynn's ``calculate_adf`` raises in 0.1.3). The pair search here is scipy's
compiled periodic KD-tree and the histograms single numpy calls: no Python loop
over pairs or triplets.
"""

from __future__ import annotations

import numpy as np

from thermocg.geometry import pair_vectors, periodic_pairs


class RDF:
    """Radial distribution function g(r) of beads in orthorhombic boxes: of all beads, or the
    partial g_ab(r) between the beads of types a and b of a mixture.

    ``g(r) = <n(r)> / (rho 4 pi r^2 dr)`` averaged over frames and beads, with
    rho = (N - 1) / V per frame, so an ideal gas gives g = 1 exactly on average. Partial:
    ``g_ab(r) = V <n_ab(r)> / (N_a N_b 4 pi r^2 dr)`` with n_ab the a-b pairs (N_a (N_a - 1) for
    a = b, each pair counted twice), so an ideal mixture gives 1 too and
    ``g = sum_ab x_a x_b g_ab`` (with N_a - 1 for N_a in the a = b terms).

    Parameters
    ----------
    r_max_A : float
        Largest distance; must be below half the shortest box edge.
    bins : int
    """

    def __init__(self, r_max_A: float = 8.0, bins: int = 160):
        if r_max_A <= 0 or bins < 1:
            raise ValueError(f"need r_max_A > 0 and bins >= 1, found {r_max_A}, {bins}")
        self.r_max_A = float(r_max_A)
        self.bins = int(bins)
        self._rdf = None

    def compute(self, positions, box, types=None, pair: tuple[int, int] | None = None) -> "RDF":
        """positions (F, N, 3) or (N, 3) Å; box (F, 3) or (3,) Å orthorhombic edges; with
        ``types`` (N,) and ``pair`` (a, b): the partial g_ab."""
        x, b = _frames(positions, box)
        if np.any(self.r_max_A >= b.min(axis=1) / 2):
            raise ValueError(f"r_max_A = {self.r_max_A} must be below half the box edge ({b.min() / 2:.3f} Å)")
        if (types is None) != (pair is None):
            raise ValueError("a partial g_ab needs both types and pair")
        n = x.shape[1]
        if pair is None:
            n_a = n_b = n
        else:
            t = np.asarray(types)
            n_a, n_b = int(np.sum(t == pair[0])), int(np.sum(t == pair[1]))
            if t.shape != (n,) or n_a == 0 or n_b == 0 or (pair[0] == pair[1] and n_a < 2):
                raise ValueError(f"types (shape {t.shape}) hold {n_a} bead(s) of type {pair[0]} and {n_b} of type "
                                 f"{pair[1]}: too few for g_ab over {n} beads")
        same = pair is None or pair[0] == pair[1]
        edges = np.linspace(0.0, self.r_max_A, self.bins + 1)
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        acc = np.zeros(self.bins)
        for xf, bf in zip(x, b):
            pairs = periodic_pairs(xf, bf, self.r_max_A)
            if pair is not None:
                ti, tj = t[pairs[:, 0]], t[pairs[:, 1]]
                pairs = pairs[((ti == pair[0]) & (tj == pair[1])) | ((ti == pair[1]) & (tj == pair[0]))]
            _, r = pair_vectors(xf, pairs, bf)
            counts, _ = np.histogram(r, edges)
            # every a bead counts each b neighbour: a pair of one type twice, of two types once
            counts = 2 * counts if same else counts
            rho = (n_b - 1 if same else n_b) / np.prod(bf)
            acc += counts / (n_a * rho * shell)
        self._edges = edges
        self._rdf = acc / len(x)
        return self

    def _require(self):
        if self._rdf is None:
            raise RuntimeError("RDF results are not available before compute()")

    @property
    def bin_centers(self) -> np.ndarray:
        self._require()
        return 0.5 * (self._edges[1:] + self._edges[:-1])

    @property
    def rdf(self) -> np.ndarray:
        self._require()
        return self._rdf.copy()

    def onset(self, threshold: float = 0.01) -> float:
        """The first r (bin centre) where g(r) exceeds ``threshold``: the closest approach seen."""
        above = np.flatnonzero(self.rdf > threshold)
        if len(above) == 0:
            raise ValueError(f"g(r) never exceeds {threshold} below r_max_A = {self.r_max_A}")
        return float(self.bin_centers[above[0]])

    def plot(self, ax=None, **kwargs):
        import matplotlib.pyplot as plt
        ax = ax or plt.gca()
        ax.plot(self.bin_centers, self.rdf, **kwargs)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        return ax


def _frames(positions, box):
    x = np.asarray(positions, dtype=np.float64)
    b = np.asarray(box, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if b.ndim == 1:
        b = np.broadcast_to(b, (len(x), 3))
    if x.ndim != 3 or x.shape[2] != 3 or b.shape != (len(x), 3):
        raise ValueError(f"positions {x.shape} and box {b.shape} do not match (F, N, 3) and (F, 3)")
    return x, b


class ADF:
    """Angular distribution of the first shell: angles J-I-K for every bead I and every two
    of its neighbours J, K closer than ``r_cut_A`` (THEORY.md §6), as a probability
    density in theta (radians; integrates to 1 over [0, pi]).

    Uncorrelated neighbours (an ideal gas) give sin(theta)/2.

    Parameters
    ----------
    r_cut_A : float
        First-shell radius (3.4 Å: the first minimum of water's bead g(r)).
    bins : int
    """

    def __init__(self, r_cut_A: float = 3.4, bins: int = 90):
        if r_cut_A <= 0 or bins < 1:
            raise ValueError(f"need r_cut_A > 0 and bins >= 1, found {r_cut_A}, {bins}")
        self.r_cut_A = float(r_cut_A)
        self.bins = int(bins)
        self._adf = None

    def compute(self, positions, box) -> "ADF":
        """positions (F, N, 3) or (N, 3) Å; box (F, 3) or (3,) Å."""
        x, b = _frames(positions, box)
        if np.any(self.r_cut_A >= b.min(axis=1) / 2):
            raise ValueError(f"r_cut_A = {self.r_cut_A} must be below half the box edge ({b.min() / 2:.3f} Å)")
        edges = np.linspace(0.0, np.pi, self.bins + 1)
        counts = np.zeros(self.bins)
        n_triplets = 0
        for xf, bf in zip(x, b):
            pairs = periodic_pairs(xf, bf, self.r_cut_A)
            d, _ = pair_vectors(xf, pairs, bf)
            # bonds from each centre: i -> j is -d (d = x_i - x_j), j -> i is +d
            centre = np.concatenate([pairs[:, 0], pairs[:, 1]])
            bond = np.concatenate([-d, d])
            order = np.argsort(centre, kind="stable")
            centre, bond = centre[order], bond[order] / np.linalg.norm(bond[order], axis=1, keepdims=True)
            starts = np.searchsorted(centre, np.arange(len(xf) + 1))
            deg = np.diff(starts)
            # all (J, K) pairs of each centre's bonds, vectorised over centres with equal degree
            for k in np.unique(deg[deg >= 2]):
                rows = np.flatnonzero(deg == k)
                idx = starts[rows][:, None] + np.arange(k)[None, :]
                u = bond[idx]  # (n_centres, k, 3)
                a, c = np.triu_indices(k, 1)
                cos = np.clip(np.einsum("nid,nid->ni", u[:, a], u[:, c]), -1.0, 1.0)
                counts += np.histogram(np.arccos(cos), edges)[0]
                n_triplets += cos.size
        if n_triplets == 0:
            raise ValueError(f"no bead has two neighbours within r_cut_A = {self.r_cut_A} Å")
        self._edges = edges
        self._adf = counts / (n_triplets * np.diff(edges))
        self.n_triplets = n_triplets
        return self

    def _require(self):
        if self._adf is None:
            raise RuntimeError("ADF results are not available before compute()")

    @property
    def bin_centers(self) -> np.ndarray:
        self._require()
        return 0.5 * (self._edges[1:] + self._edges[:-1])

    @property
    def adf(self) -> np.ndarray:
        """Probability density per radian, (bins,)."""
        self._require()
        return self._adf.copy()

    def plot(self, ax=None, **kwargs):
        import matplotlib.pyplot as plt
        ax = ax or plt.gca()
        ax.plot(np.degrees(self.bin_centers), self.adf, **kwargs)
        ax.set_xlabel("angle J-I-K (degrees)")
        ax.set_ylabel("P(θ) (1/rad)")
        return ax


def pair_excess_entropy(r, g, density) -> float:
    """Two-body excess entropy per bead in units of kB (THEORY.md §6):
    ``s2 = -2 pi rho ∫ [g ln g - g + 1] r^2 dr`` by the trapezoidal rule on the given
    grid (r in Å, density in beads/Å^3; g ln g = 0 where g = 0)."""
    r, g = np.asarray(r, dtype=np.float64), np.asarray(g, dtype=np.float64)
    glng = np.where(g > 0, g * np.log(np.where(g > 0, g, 1.0)), 0.0)
    return float(-2.0 * np.pi * density * np.trapezoid((glng - g + 1.0) * r * r, r))


def integrated_absolute_error(x, a, b) -> float:
    """∫ |a - b| dx by the trapezoidal rule: the distance between two curves on one grid."""
    return float(np.trapezoid(np.abs(np.asarray(a) - np.asarray(b)), np.asarray(x)))


def first_peak(x, y) -> tuple[float, float]:
    """(position, height) of the global maximum, refined by a parabola through its neighbours."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    k = int(np.argmax(y))
    if 0 < k < len(y) - 1:
        y0, y1, y2 = y[k - 1], y[k], y[k + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            shift = 0.5 * (y0 - y2) / denom
            h = x[1] - x[0]
            return float(x[k] + shift * h), float(y1 - 0.25 * (y0 - y2) * shift)
    return float(x[k]), float(y[k])
