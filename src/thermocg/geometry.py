"""Periodic geometry shared by every stage: wrapping, minimum image, pair search.

Orthorhombic boxes given by their edges (3,) in Å. The pair search is scipy's
compiled periodic KD-tree; this module is the one place that prepares
coordinates for it.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def minimum_image(d, box):
    """Displacements (..., 3) mapped to their nearest periodic image."""
    return d - box * np.round(d / box)


def wrap(x, box):
    """Coordinates (..., 3) wrapped into [0, box)."""
    w = x - box * np.floor(x / box)
    # floor can leave a coordinate equal to the box edge after rounding; cKDTree refuses that.
    return np.where(w >= box, 0.0, w)


def periodic_pairs(x, box, cutoff: float) -> np.ndarray:
    """Index pairs (P, 2), i < j, of points (N, 3) closer than ``cutoff`` (minimum image).

    ``cutoff`` must be below half the shortest edge (each pair counted once).
    """
    x = np.asarray(x, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    return cKDTree(wrap(x, box), boxsize=box).query_pairs(r=cutoff, output_type="ndarray").astype(np.int64)


def pair_vectors(x, pairs, box) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-image displacements ``x_i - x_j`` (P, 3) and distances (P,) of index pairs (P, 2)."""
    d = minimum_image(x[pairs[:, 0]] - x[pairs[:, 1]], box)
    return d, np.linalg.norm(d, axis=1)
