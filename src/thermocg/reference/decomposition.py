"""Per-molecule decomposition of an Ewald/PME potential energy (THEORY.md §3).

The thermal-response targets need the total potential energy ``u`` written as
a sum of per-molecule energies, ``u = sum_J u_J``. OpenMM computes no per-atom
energies (its issue #1900), so thermocg computes them itself from the saved
configuration, with the engine's own parameters (charges, Lennard-Jones
parameters, exceptions, cutoff and the Ewald splitting parameter alpha read
back from the running context). Why our own code: no library splits an Ewald
sum per atom.

The split, for an orthorhombic periodic box of volume V (atoms i, j; molecule
``m(i)`` of atom i; Coulomb constant ke)::

    real space       ke q_i q_j erfc(alpha r_ij) / r_ij     pairs r < rc, not excepted   1/2 to m(i), 1/2 to m(j)
    reciprocal       q_i phi_rec(r_i) / 2                                                to m(i)
                     phi_rec(r) = ke 4 pi / V  sum_{k != 0} exp(-k^2/4 alpha^2)/k^2 Re[S(k) exp(-i k.r)],
                     S(k) = sum_j q_j exp(i k.r_j)    (a direct, converged Ewald k-sum)
    self             -ke alpha / sqrt(pi) q_i^2                                          to m(i)
    excluded pairs   -ke q_i q_j erf(alpha r_ij) / r_ij    every exception (i, j)        1/2 each
    exceptions       ke qq_ij / r_ij + 4 eps_ij [(s_ij/r)^12 - (s_ij/r)^6]               1/2 each
    Lennard-Jones    4 eps_ij [(s_ij/r)^12 - (s_ij/r)^6], Lorentz-Berthelot, r < rc      1/2 each
    dispersion corr. OpenMM's homogeneous long-range correction / V                     spread evenly
    harmonic bonds, angles, periodic torsions                                            evenly over their atoms' molecules

Summed over molecules, these are exactly the terms of OpenMM's Ewald energy
(with a converged reciprocal sum instead of PME's interpolated one), so
``sum_J u_J`` equals OpenMM's total to PME's own accuracy (about 4e-6
relative at ewaldErrorTolerance 1e-5). Units: Å, kcal/mol, e (``thermocg.units``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import erf, erfc

from thermocg import units
from thermocg.geometry import minimum_image as _minimum_image
from thermocg.geometry import periodic_pairs

_F64 = np.float64


@dataclass(frozen=True)
class NonbondedParameters:
    """Parameters of a periodic Ewald/PME nonbonded force, in thermocg units.

    Attributes
    ----------
    charges : (n_atoms,) e
    sigma : (n_atoms,) Å
    epsilon : (n_atoms,) kcal/mol
    exceptions : (n_exc, 2) int
        Atom pairs excluded from the normal pair terms (OpenMM exceptions).
    exception_charge_prod, exception_sigma, exception_epsilon : (n_exc,)
        The exceptions' own parameters (e^2, Å, kcal/mol); zero for plain exclusions.
    cutoff_A : float
        Real-space cutoff of both Coulomb and Lennard-Jones (plain truncation).
    alpha_per_A : float
        Ewald splitting parameter, 1/Å.
    dispersion_correction : bool
        Whether the homogeneous long-range Lennard-Jones correction is on.
    """

    charges: np.ndarray
    sigma: np.ndarray
    epsilon: np.ndarray
    exceptions: np.ndarray
    exception_charge_prod: np.ndarray
    exception_sigma: np.ndarray
    exception_epsilon: np.ndarray
    cutoff_A: float
    alpha_per_A: float
    dispersion_correction: bool = True

    def __post_init__(self):
        n = len(self.charges)
        for name in ("sigma", "epsilon"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({n},)")
        m = len(self.exceptions)
        if self.exceptions.shape != (m, 2):
            raise ValueError(f"exceptions has shape {self.exceptions.shape}, expected (n_exc, 2)")
        for name in ("exception_charge_prod", "exception_sigma", "exception_epsilon"):
            if getattr(self, name).shape != (m,):
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected ({m},)")
        net = float(np.sum(self.charges))
        if abs(net) > 1e-6:
            # OpenMM adds a neutralising-background term for charged systems; the
            # per-molecule share of that term has no unique definition, so refuse.
            raise ValueError(f"net charge {net:.3g} e: the decomposition supports neutral systems only")


@dataclass(frozen=True)
class BondedTerms:
    """Harmonic bonds ``k/2 (r - r0)^2``, angles ``k/2 (theta - theta0)^2`` and periodic
    torsions ``k (1 + cos(n phi - phi0))`` (OpenMM's PeriodicTorsionForce).

    Attributes
    ----------
    bonds : (n_b, 2) int;  bond_r0 : (n_b,) Å;  bond_k : (n_b,) kcal/(mol Å^2)
    angles : (n_a, 3) int; angle_theta0 : (n_a,) rad; angle_k : (n_a,) kcal/(mol rad^2)
    torsions : (n_t, 4) int; torsion_n : (n_t,) int; torsion_phase : (n_t,) rad; torsion_k : (n_t,) kcal/mol
    """

    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))
    bond_r0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bond_k: np.ndarray = field(default_factory=lambda: np.zeros(0))
    angles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), int))
    angle_theta0: np.ndarray = field(default_factory=lambda: np.zeros(0))
    angle_k: np.ndarray = field(default_factory=lambda: np.zeros(0))
    torsions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), int))
    torsion_n: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    torsion_phase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    torsion_k: np.ndarray = field(default_factory=lambda: np.zeros(0))


def dihedral(x1, x2, x3, x4, box) -> np.ndarray:
    """Dihedral angles (rad, in (-pi, pi]) of the atom quadruples, minimum image per bond,
    with OpenMM's sign convention (IUPAC: positive clockwise looking down 2 -> 3)."""
    b1, b2, b3 = (_minimum_image(b - a, box) for a, b in ((x1, x2), (x2, x3), (x3, x4)))
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    m = np.cross(n1, b2 / np.linalg.norm(b2, axis=-1, keepdims=True))
    return -np.arctan2(np.sum(m * n2, -1), np.sum(n1 * n2, -1))


def _pairs_within(x: np.ndarray, box: np.ndarray, cutoff: float, subset: np.ndarray) -> np.ndarray:
    """Index pairs (i < j) of ``subset`` atoms closer than ``cutoff`` (minimum image)."""
    # i < j in subset order; subset is sorted, so i < j holds for atoms too
    return subset[periodic_pairs(x[subset], box, cutoff)]


def _lj(r, sigma, epsilon):
    s6 = (sigma / r) ** 6
    return 4.0 * epsilon * (s6 * s6 - s6)


def dispersion_correction_energy(sigma, epsilon, cutoff_A, volume_A3):
    """OpenMM's homogeneous long-range Lennard-Jones correction (no switching), kcal/mol.

    ``E = 8 pi N^2 / V [<eps s^12> / (9 rc^9) - <eps s^6> / (3 rc^3)]``, the
    averages taken over the N(N+1)/2 atom pairs (i <= j) with Lorentz-Berthelot
    mixing, as OpenMM's ``NonbondedForceImpl::calcDispersionCorrection`` does.
    """
    sigma = np.asarray(sigma, _F64)
    epsilon = np.asarray(epsilon, _F64)
    n = len(sigma)
    classes, counts = np.unique(np.stack([sigma, epsilon], axis=1), axis=0, return_counts=True)
    s = 0.5 * (classes[:, None, 0] + classes[None, :, 0])
    e = np.sqrt(classes[:, None, 1] * classes[None, :, 1])
    # pair counts: n_a n_b for a != b (each unordered class pair once), n_a (n_a + 1)/2 for a == b
    cnt = np.outer(counts, counts).astype(_F64)
    np.fill_diagonal(cnt, counts * (counts + 1) / 2.0)
    upper = np.triu(np.ones_like(cnt, dtype=bool))
    s6 = s**6
    n_int = n * (n + 1) / 2.0
    sum1 = np.sum((cnt * e * s6 * s6)[upper]) / n_int
    sum2 = np.sum((cnt * e * s6)[upper]) / n_int
    return 8.0 * n * n * np.pi * (sum1 / (9.0 * cutoff_A**9) - sum2 / (3.0 * cutoff_A**3)) / volume_A3


class EnergyDecomposition:
    """Per-molecule energies ``u_J`` whose sum is the total potential energy.

    Parameters
    ----------
    nonbonded : NonbondedParameters
    molecule_index : (n_atoms,) int
        Molecule of each atom, 0 .. n_molecules-1.
    bonded : BondedTerms, optional
    kspace_tolerance : float
        Reciprocal vectors with ``exp(-k^2 / 4 alpha^2) >= kspace_tolerance`` are
        summed; the default 1e-9 converges the energy far below PME's own error.

    Notes
    -----
    Orthorhombic boxes only (the reference stage's cubic box); the cutoff must be
    below half the shortest edge.
    """

    def __init__(self, nonbonded: NonbondedParameters, molecule_index, bonded: BondedTerms | None = None,
                 kspace_tolerance: float = 1e-9):
        self.nb = nonbonded
        self.mol = np.asarray(molecule_index, dtype=np.int64)
        if self.mol.shape != nonbonded.charges.shape:
            raise ValueError(f"molecule_index has shape {self.mol.shape}, expected {nonbonded.charges.shape}")
        self.n_molecules = int(self.mol.max()) + 1
        self.bonded = bonded if bonded is not None else BondedTerms()
        self.kspace_tolerance = kspace_tolerance
        n = len(self.mol)
        self._charged = np.flatnonzero(nonbonded.charges != 0.0)
        self._lj_atoms = np.flatnonzero(nonbonded.epsilon != 0.0)
        exc = np.sort(np.asarray(nonbonded.exceptions, dtype=np.int64), axis=1)
        self._exc_keys = np.sort(exc[:, 0] * n + exc[:, 1])
        # When every exception is intramolecular (water), only same-molecule pairs need the look-up.
        self._intramolecular_exceptions = bool(np.all(self.mol[exc[:, 0]] == self.mol[exc[:, 1]]))
        self._kcache: tuple | None = None

    # -- helpers -------------------------------------------------------------
    def _split_pairs(self, pairs: np.ndarray, energies: np.ndarray) -> np.ndarray:
        """Give half of each pair energy to the molecule of each atom."""
        half = 0.5 * energies
        return (np.bincount(self.mol[pairs[:, 0]], half, self.n_molecules)
                + np.bincount(self.mol[pairs[:, 1]], half, self.n_molecules))

    def _drop_exceptions(self, pairs: np.ndarray) -> np.ndarray:
        """Remove excepted pairs (rows i < j) from a pair list."""
        if self._intramolecular_exceptions:
            cand = np.flatnonzero(self.mol[pairs[:, 0]] == self.mol[pairs[:, 1]])
        else:
            cand = np.arange(len(pairs))
        keys = pairs[cand, 0] * len(self.mol) + pairs[cand, 1]
        keep = np.ones(len(pairs), dtype=bool)
        keep[cand[np.isin(keys, self._exc_keys)]] = False
        return pairs[keep]

    def _kweights(self, box: np.ndarray) -> np.ndarray:
        """Weights ``c_k exp(-k^2/4 alpha^2)/k^2`` on the grid n_x in [0, m_x], n_y, n_z in [-m, m].

        ``c_k`` is 2 for n_x > 0 (the +-k pair), 1 for n_x = 0 (the full plane
        already holds both), 0 for k = 0 and outside the sphere |k| <= kmax.
        Cached per box.
        """
        key = tuple(np.round(box, 12))
        if self._kcache is not None and self._kcache[0] == key:
            return self._kcache[1]
        a = self.nb.alpha_per_A
        kmax = 2.0 * a * np.sqrt(-np.log(self.kspace_tolerance))
        m = np.floor(kmax * box / (2 * np.pi)).astype(int)
        kx = 2 * np.pi * np.arange(0, m[0] + 1) / box[0]
        ky = 2 * np.pi * np.arange(-m[1], m[1] + 1) / box[1]
        kz = 2 * np.pi * np.arange(-m[2], m[2] + 1) / box[2]
        k2 = kx[:, None, None] ** 2 + ky[None, :, None] ** 2 + kz[None, None, :] ** 2
        with np.errstate(divide="ignore"):
            w = np.where((k2 > 0) & (k2 <= kmax * kmax), np.exp(-k2 / (4 * a * a)) / k2, 0.0)
        w[1:] *= 2.0
        self._kcache = (key, w)
        return w

    def reciprocal_potential(self, positions: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Reciprocal-space Ewald potential ``phi_rec(r_i)`` at every atom, kcal/(mol e).

        A direct sum over reciprocal vectors (not PME), exact up to the k-space
        truncation set by ``kspace_tolerance``. The plane waves factorise,
        ``exp(i k.r) = X[a] Y[b] Z[c]``, so the structure factor
        ``S[a,b,c] = sum_j q_j X_ja Y_jb Z_jc`` and the potential are both
        matrix products (BLAS) instead of a trigonometric call per (atom, k).
        """
        q = self.nb.charges
        idx = self._charged
        w = self._kweights(box)
        na, nb, nc = w.shape
        x = positions[idx]
        X = np.exp(1j * np.outer(x[:, 0], 2 * np.pi * np.arange(na) / box[0]))
        Y = np.exp(1j * np.outer(x[:, 1], 2 * np.pi * np.arange(-(nb // 2), nb // 2 + 1) / box[1]))
        Z = np.exp(1j * np.outer(x[:, 2], 2 * np.pi * np.arange(-(nc // 2), nc // 2 + 1) / box[2]))
        XY = (X[:, :, None] * Y[:, None, :]).reshape(len(x), na * nb)  # (n, ab)
        S = (XY * q[idx, None]).T @ Z  # (ab, c)
        WS = w.reshape(na * nb, nc) * S
        # phi_i = Re sum_abc WS_abc conj(XY_i,ab Z_i,c)
        M = Z.conj() @ WS.T  # (n, ab)
        phi = np.zeros(len(q))
        phi[idx] = (units.COULOMB * 4.0 * np.pi / float(np.prod(box))) * np.real(np.sum(XY.conj() * M, axis=1))
        return phi

    # -- the decomposition ---------------------------------------------------
    def components(self, positions, box) -> dict[str, np.ndarray]:
        """Each term of the split as a per-molecule array, kcal/mol.

        Parameters
        ----------
        positions : (n_atoms, 3) Å
        box : (3,) Å, edges of the orthorhombic box (or a (3, 3) diagonal matrix)

        Returns
        -------
        dict of (n_molecules,) arrays: ``real``, ``reciprocal``, ``self``,
        ``excluded``, ``exceptions``, ``lennard_jones``, ``dispersion``, ``bonded``.
        """
        return self._evaluate(positions, box)[0]

    def __call__(self, positions, box) -> np.ndarray:
        """Per-molecule energies ``u_J``, shape (n_molecules,), kcal/mol."""
        return sum(self.components(positions, box).values())

    def with_cutoff_ambiguity(self, positions, box, width_A: float = 1e-4) -> tuple[np.ndarray, float]:
        """Per-molecule energies and the energy of pairs within ``width_A`` of the cutoff.

        The truncated pair terms jump at the cutoff (|V_LJ(rc)| is ~0.01 kcal/mol
        for water O-O at 6 Å). An engine computing distances in single
        precision (OpenMM's CPU and mixed CUDA platforms) can put a pair at
        ``|r - rc| < 1e-6`` Å on the other side of the cutoff; it happens about
        once in a few thousand frames of 64 waters. The second return value,
        the summed |energy| of pairs in that band, is the part of
        ``sum u_J - E_engine`` that such a decision can explain.
        """
        comps, ambiguous = self._evaluate(positions, box, width_A)
        return sum(comps.values()), ambiguous

    def _evaluate(self, positions, box, width_A: float = 0.0) -> tuple[dict[str, np.ndarray], float]:
        x = np.asarray(positions, dtype=_F64)
        box = np.asarray(box, dtype=_F64)
        if box.shape == (3, 3):
            if np.any(np.abs(box - np.diag(np.diag(box))) > 1e-9):
                raise ValueError("only orthorhombic boxes are supported by the energy decomposition")
            box = np.diag(box).copy()
        if x.shape != self.nb.charges.shape + (3,):
            raise ValueError(f"positions have shape {x.shape}, expected {self.nb.charges.shape + (3,)}")
        rc = self.nb.cutoff_A
        if 2 * (rc + width_A) >= box.min():
            raise ValueError(f"cutoff {rc} Å is not below half the box edge {box.min()} Å")
        nb, ke, a, nm = self.nb, units.COULOMB, self.nb.alpha_per_A, self.n_molecules
        q = nb.charges
        out: dict[str, np.ndarray] = {}
        ambiguous = 0.0

        pairs = self._drop_exceptions(_pairs_within(x, box, rc + width_A, self._charged))
        r = np.linalg.norm(_minimum_image(x[pairs[:, 0]] - x[pairs[:, 1]], box), axis=1)
        e = ke * q[pairs[:, 0]] * q[pairs[:, 1]] * erfc(a * r) / r
        ambiguous += float(np.sum(np.abs(e[np.abs(r - rc) < width_A])))
        inside = r < rc
        out["real"] = self._split_pairs(pairs[inside], e[inside])

        out["reciprocal"] = np.bincount(self.mol, 0.5 * q * self.reciprocal_potential(x, box), nm)
        out["self"] = np.bincount(self.mol, -ke * a / np.sqrt(np.pi) * q * q, nm)

        exc = np.asarray(nb.exceptions, dtype=np.int64)
        if len(exc):
            re = np.linalg.norm(_minimum_image(x[exc[:, 0]] - x[exc[:, 1]], box), axis=1)
            out["excluded"] = self._split_pairs(exc, -ke * q[exc[:, 0]] * q[exc[:, 1]] * erf(a * re) / re)
            own = ke * nb.exception_charge_prod / re + _lj(re, nb.exception_sigma, nb.exception_epsilon)
            out["exceptions"] = self._split_pairs(exc, own)
        else:
            out["excluded"] = out["exceptions"] = np.zeros(nm)

        lj_pairs = self._drop_exceptions(_pairs_within(x, box, rc + width_A, self._lj_atoms))
        i, j = lj_pairs[:, 0], lj_pairs[:, 1]
        rl = np.linalg.norm(_minimum_image(x[i] - x[j], box), axis=1)
        e_lj = _lj(rl, 0.5 * (nb.sigma[i] + nb.sigma[j]), np.sqrt(nb.epsilon[i] * nb.epsilon[j]))
        ambiguous += float(np.sum(np.abs(e_lj[np.abs(rl - rc) < width_A])))
        inside = rl < rc
        out["lennard_jones"] = self._split_pairs(lj_pairs[inside], e_lj[inside])

        disp = dispersion_correction_energy(nb.sigma, nb.epsilon, rc, float(np.prod(box))) \
            if nb.dispersion_correction else 0.0
        out["dispersion"] = np.full(nm, disp / nm)
        out["bonded"] = self._bonded(x, box)
        return out, ambiguous

    def _bonded(self, x, box) -> np.ndarray:
        b = self.bonded
        total = np.zeros(self.n_molecules)
        if len(b.bonds):
            r = np.linalg.norm(_minimum_image(x[b.bonds[:, 0]] - x[b.bonds[:, 1]], box), axis=1)
            total += self._split_pairs(b.bonds, 0.5 * b.bond_k * (r - b.bond_r0) ** 2)
        if len(b.angles):
            d1 = _minimum_image(x[b.angles[:, 0]] - x[b.angles[:, 1]], box)
            d2 = _minimum_image(x[b.angles[:, 2]] - x[b.angles[:, 1]], box)
            cos = np.sum(d1 * d2, 1) / (np.linalg.norm(d1, axis=1) * np.linalg.norm(d2, axis=1))
            e = 0.5 * b.angle_k * (np.arccos(np.clip(cos, -1, 1)) - b.angle_theta0) ** 2
            for col in range(3):
                total += np.bincount(self.mol[b.angles[:, col]], e / 3.0, self.n_molecules)
        if len(b.torsions):
            t = b.torsions
            phi = dihedral(x[t[:, 0]], x[t[:, 1]], x[t[:, 2]], x[t[:, 3]], box)
            e = b.torsion_k * (1.0 + np.cos(b.torsion_n * phi - b.torsion_phase))
            for col in range(4):
                total += np.bincount(self.mol[t[:, col]], e / 4.0, self.n_molecules)
        return total
