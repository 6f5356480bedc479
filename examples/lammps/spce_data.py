"""Write a LAMMPS data file of rigid SPC/E water (``atom_style full``, ``units real``): the molecules
on a cubic lattice at the density, each turned at random, for ``in.spce`` to melt and equilibrate.

    python spce_data.py --molecules 216 --out system.data

Numpy only, so the file is the same on any machine for the same seed. Any molecular liquid works
with thermocg's import: what it needs from a data file is each atom's molecule id and mass (the
element), which every ``atom_style full`` file has.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

AVOGADRO = 6.02214076e23
MASS = {"O": 15.9994, "H": 1.008}
BOND_A, ANGLE_DEG = 1.0, 109.47  # SPC/E geometry (Berendsen et al. 1987)


def water_molecule(rng: np.random.Generator) -> np.ndarray:
    """O, H, H positions (Å) about the oxygen, turned by a uniformly random rotation."""
    half = math.radians(ANGLE_DEG) / 2.0
    local = np.array([[0.0, 0.0, 0.0],
                      [BOND_A * math.sin(half), 0.0, BOND_A * math.cos(half)],
                      [-BOND_A * math.sin(half), 0.0, BOND_A * math.cos(half)]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))  # Haar-uniform orthogonal matrix; make it a proper rotation
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return local @ q.T


def write_data(path: Path, n_molecules: int, density_g_cm3: float = 0.997, seed: int = 2026) -> float:
    """Write the data file; returns the cubic box edge (Å)."""
    rng = np.random.default_rng(seed)
    mass_g = n_molecules * (MASS["O"] + 2 * MASS["H"]) / AVOGADRO
    edge = (mass_g / density_g_cm3) ** (1.0 / 3.0) * 1e8  # cm -> Å
    per_side = math.ceil(n_molecules ** (1.0 / 3.0) - 1e-9)
    spacing = edge / per_side
    sites = [(i, j, k) for i in range(per_side) for j in range(per_side) for k in range(per_side)][:n_molecules]
    atoms, bonds, angles = [], [], []
    for m, site in enumerate(sites):
        xyz = (np.array(site) + 0.5) * spacing + water_molecule(rng)
        first = 3 * m + 1
        for a, (kind, charge) in enumerate((("O", -0.8476), ("H", 0.4238), ("H", 0.4238))):
            atoms.append(f"{first + a} {m + 1} {1 if kind == 'O' else 2} {charge} "
                         + " ".join(f"{c:.6f}" for c in xyz[a]))
        bonds += [f"{2 * m + 1} 1 {first} {first + 1}", f"{2 * m + 2} 1 {first} {first + 2}"]
        angles.append(f"{m + 1} 1 {first + 1} {first} {first + 2}")
    text = "\n".join([
        f"SPC/E water, {n_molecules} molecules at {density_g_cm3} g/cm3 (thermocg examples/lammps/spce_data.py)", "",
        f"{len(atoms)} atoms", f"{len(bonds)} bonds", f"{len(angles)} angles", "",
        "2 atom types", "1 bond types", "1 angle types", "",
        f"0.0 {edge:.6f} xlo xhi", f"0.0 {edge:.6f} ylo yhi", f"0.0 {edge:.6f} zlo zhi", "",
        "Masses", "", f"1 {MASS['O']}  # O", f"2 {MASS['H']}  # H", "",
        "Atoms  # full", "", *atoms, "", "Bonds", "", *bonds, "", "Angles", "", *angles, ""])
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text)
    tmp.replace(path)
    return edge


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--molecules", type=int, default=216)
    ap.add_argument("--density", type=float, default=0.997, help="g/cm3")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", default="system.data")
    args = ap.parse_args(argv)
    edge = write_data(Path(args.out), args.molecules, args.density, args.seed)
    print(f"{args.out}: {args.molecules} SPC/E molecules, box edge {edge:.3f} Å")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
