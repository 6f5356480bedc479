"""Structure: the radial distribution function of beads (THEORY.md §6).

Why our own: freud is not a dependency (yet) and MDAnalysis' InterRDF needs a
Universe; the pair search here is scipy's compiled KD-tree, and the histogram a
single numpy call, so this is not a Python loop over pairs.
"""

from __future__ import annotations

import numpy as np

from thermocg.geometry import pair_vectors, periodic_pairs


class RDF:
    """Radial distribution function g(r) of one species of beads in orthorhombic boxes.

    ``g(r) = <n(r)> / (rho 4 pi r^2 dr)`` averaged over frames and beads, with
    rho = (N - 1) / V per frame, so an ideal gas gives g = 1 exactly on average.

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

    def compute(self, positions, box) -> "RDF":
        """positions (F, N, 3) or (N, 3) Å; box (F, 3) or (3,) Å orthorhombic edges."""
        x = np.asarray(positions, dtype=np.float64)
        b = np.asarray(box, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if b.ndim == 1:
            b = np.broadcast_to(b, (len(x), 3))
        if x.ndim != 3 or x.shape[2] != 3 or b.shape != (len(x), 3):
            raise ValueError(f"positions {x.shape} and box {b.shape} do not match (F, N, 3) and (F, 3)")
        if np.any(self.r_max_A >= b.min(axis=1) / 2):
            raise ValueError(f"r_max_A = {self.r_max_A} must be below half the box edge ({b.min() / 2:.3f} Å)")
        edges = np.linspace(0.0, self.r_max_A, self.bins + 1)
        shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
        acc = np.zeros(self.bins)
        for xf, bf in zip(x, b):
            n = len(xf)
            _, r = pair_vectors(xf, periodic_pairs(xf, bf, self.r_max_A), bf)
            counts, _ = np.histogram(r, edges)
            counts = 2 * counts  # every bead counts each neighbour: each pair twice
            rho = (n - 1) / np.prod(bf)
            acc += counts / (n * rho * shell)
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
