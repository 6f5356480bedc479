"""Linear CG maps (thermocg's own: the map, its force map and the PBC handling are
a few array operations, and they are what the thermal-response targets rest on)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thermocg.errors import DataFormatError
from thermocg.geometry import minimum_image
from thermocg.frames import ReferenceFrames, check_types


class LinearMap:
    """A non-overlapping linear map ``R_I = sum_{i in I} c_Ii r_i`` with ``sum_i c_Ii = 1``.

    Parameters
    ----------
    bead_of_atom : (n_atoms,) int
        Bead of each atom, 0 .. n_beads-1; every atom belongs to exactly one bead.
    weights : (n_atoms,) float
        Unnormalised weights of each atom in its bead (masses for the centre of
        mass); normalised per bead here. Must be >= 0 with a positive sum per bead.
    bead_masses : (n_beads,) amu, optional
        Defaults to the sum of ``weights`` per bead (right when weights are masses).

    Notes
    -----
    Positions: each bead's atoms are first made whole by the minimum image
    relative to the bead's first atom, so the map works on wrapped coordinates
    as long as a bead spans less than half the box. Forces: the sum of the
    bead's atomic forces (the force map of a partition).
    """

    def __init__(self, bead_of_atom, weights, bead_masses=None):
        bead = np.asarray(bead_of_atom)
        w = np.asarray(weights, dtype=np.float64)
        if bead.ndim != 1 or not np.issubdtype(bead.dtype, np.integer):
            raise ValueError(f"bead_of_atom must be a 1-D integer array, found {bead.dtype} {bead.shape}")
        if w.shape != bead.shape:
            raise ValueError(f"weights have shape {w.shape}, expected {bead.shape}")
        if len(bead) == 0 or bead.min() < 0:
            raise ValueError("every atom must belong to exactly one bead (found a negative or no bead index)")
        n_beads = int(bead.max()) + 1
        counts = np.bincount(bead, minlength=n_beads)
        if np.any(counts == 0):
            raise ValueError(f"beads {np.flatnonzero(counts == 0)[:5].tolist()} have no atoms")
        if np.any(w < 0):
            raise ValueError("map weights must be >= 0")
        wsum = np.bincount(bead, w, n_beads)
        if np.any(wsum <= 0):
            raise ValueError(f"beads {np.flatnonzero(wsum <= 0)[:5].tolist()} have zero total weight")
        self.bead_of_atom = bead.astype(np.int64)
        self.n_beads = n_beads
        self.coefficients = w / wsum[bead]  # c_i of atom i in its bead
        self.bead_masses = wsum if bead_masses is None else np.asarray(bead_masses, dtype=np.float64)
        self._order = np.argsort(self.bead_of_atom, kind="stable")
        self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._first_atom = self._order[self._starts]

    @classmethod
    def center_of_mass(cls, molecule_index, masses) -> "LinearMap":
        """One bead per molecule at its centre of mass; bead mass = molecule mass."""
        return cls(molecule_index, masses)

    @property
    def n_atoms(self) -> int:
        return len(self.bead_of_atom)

    def matrix(self) -> np.ndarray:
        """The dense map matrix C, shape (n_beads, n_atoms) (for tests and small systems)."""
        c = np.zeros((self.n_beads, self.n_atoms))
        c[self.bead_of_atom, np.arange(self.n_atoms)] = self.coefficients
        return c

    def _check(self, x, what):
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-2:] != (self.n_atoms, 3):
            raise ValueError(f"{what} have shape {x.shape}, expected (..., {self.n_atoms}, 3)")
        return x

    def positions(self, positions, box=None) -> np.ndarray:
        """Bead positions, shape (..., n_beads, 3), Å.

        Parameters
        ----------
        positions : (..., n_atoms, 3) Å, wrapped or unwrapped
        box : (..., 3) Å orthorhombic edges, or None for coordinates already whole
        """
        x = self._check(positions, "positions")
        ref = x[..., self._first_atom[self.bead_of_atom], :]
        d = x - ref
        if box is not None:
            b = np.asarray(box, dtype=np.float64)[..., None, :]
            d = minimum_image(d, b)
        return self._sum(ref * self.coefficients[:, None] + d * self.coefficients[:, None])

    def forces(self, forces) -> np.ndarray:
        """Mapped forces ``f_I = sum_{i in I} f_i``, shape (..., n_beads, 3)."""
        return self._sum(self._check(forces, "forces"))

    def _sum(self, per_atom: np.ndarray) -> np.ndarray:
        """Sum (..., n_atoms, 3) over the atoms of each bead."""
        return np.add.reduceat(per_atom[..., self._order, :], self._starts, axis=-2)


@dataclass(frozen=True)
class CGFrames:
    """Coarse-grained frames at one temperature.

    positions (F, n_beads, 3) Å; forces (F, n_beads, 3) kcal/(mol Å), the mapped
    forces; box (F, 3) Å; bead_masses (n_beads,) amu; bead_energy (F, n_beads)
    kcal/mol, the per-molecule energies u_J of the beads' molecules (one bead per
    molecule); potential_energy (F,) kcal/mol; temperature_K; step (F,); source;
    bead_type (n_beads,) 0 .. len(bead_types) - 1 (None: all 0) and the type names.
    """

    positions: np.ndarray
    forces: np.ndarray
    box: np.ndarray
    bead_masses: np.ndarray
    bead_energy: np.ndarray
    potential_energy: np.ndarray
    temperature_K: float
    step: np.ndarray
    source: Path | None = None
    bead_type: np.ndarray | None = None
    bead_types: tuple[str, ...] = ("molecule",)

    def __post_init__(self):
        object.__setattr__(self, "bead_type", check_types(self.bead_type, self.bead_types, self.positions.shape[1],
                                                          str(self.source or "CG frames"), "bead_type"))

    @property
    def n_types(self) -> int:
        return len(self.bead_types)


def map_reference(frames: ReferenceFrames, cg_map: LinearMap | None = None) -> CGFrames:
    """Map all-atom reference frames to CG frames (centre-of-mass map by default).

    The per-molecule energies travel with their beads, which needs each bead to
    be exactly one molecule.
    """
    cg_map = cg_map or LinearMap.center_of_mass(frames.molecule_index, frames.masses)
    if cg_map.n_atoms != len(frames.molecule_index):
        raise DataFormatError(f"{frames.source}: the map has {cg_map.n_atoms} atoms, the frames "
                              f"{len(frames.molecule_index)}")
    if not np.array_equal(cg_map.bead_of_atom, frames.molecule_index):
        raise DataFormatError(f"{frames.source}: per-molecule energies need one bead per molecule; "
                              "this map groups atoms differently")
    return CGFrames(
        positions=cg_map.positions(frames.positions, frames.box), forces=cg_map.forces(frames.forces),
        box=frames.box.copy(), bead_masses=cg_map.bead_masses, bead_energy=frames.molecule_energy.copy(),
        potential_energy=frames.potential_energy.copy(), temperature_K=frames.temperature_K,
        step=frames.step.copy(), source=frames.source, bead_type=frames.molecule_type,
        bead_types=frames.bead_types)
