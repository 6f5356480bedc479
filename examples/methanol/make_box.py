"""Write a PDB of TraPPE-UA methanol molecules (and optionally SPC/E waters) in a cubic box.

The molecules sit on a simple cubic lattice with random orientations, in random order (the
geometry of trappe-ua-methanol.xml: CH3-O 1.430 Å, O-H 0.945 Å, 108.5°; SPC/E: O-H 1.0 Å,
109.47°); the reference stage minimises the energy and equilibrates before sampling (a lattice
start melts in a few ps at 250-350 K).

    python examples/methanol/make_box.py 128 0.786 examples/methanol/methanol-128.pdb
    python examples/methanol/make_box.py 48 0.90 examples/methanol/methanol-water-96.pdb --water 48
"""

from __future__ import annotations

import argparse
import math

import numpy as np

#: residue name -> (atom names, elements, masses in amu, local geometry in Å, bonds)
_MOLECULES = {
    "MOH": (("C", "O", "H"), ("C", "O", "H"), (15.035, 15.999, 1.008),
            np.array([[1.430, 0.0, 0.0], [0.0, 0.0, 0.0],
                      [0.945 * math.cos(math.radians(108.5)), 0.945 * math.sin(math.radians(108.5)), 0.0]]),
            ((0, 1), (1, 2))),
    "HOH": (("O", "H1", "H2"), ("O", "H", "H"), (15.999, 1.008, 1.008),
            np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0],
                      [math.cos(math.radians(109.47)), math.sin(math.radians(109.47)), 0.0]]),
            ((0, 1), (0, 2))),
}


def mixture_box(counts: dict[str, int], density_g_cm3: float, seed: int = 1):
    """(residue name of each molecule, positions (n_atoms, 3) Å, cubic box edge Å)."""
    names = [name for name, n in counts.items() for _ in range(n)]
    mass = sum(sum(_MOLECULES[name][2]) for name in names)
    edge = (mass / (density_g_cm3 * 0.602214076)) ** (1.0 / 3.0)
    per_side = math.ceil(len(names) ** (1.0 / 3.0))
    spacing = edge / per_side
    rng = np.random.default_rng(seed)
    sites = [(i, j, k) for i in range(per_side) for j in range(per_side) for k in range(per_side)][:len(names)]
    if len(set(names)) > 1:  # a mixture, in random order (its own stream: one kind draws as before)
        names = [names[i] for i in np.random.default_rng([seed, 1]).permutation(len(names))]
    x = []
    for name, site in zip(names, sites):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random rotation
        x.append((np.array(site) + 0.5) * spacing + _MOLECULES[name][3] @ q.T)
    return names, np.concatenate(x), edge


def methanol_box(n: int, density_g_cm3: float, seed: int = 1):
    """Positions (3n, 3) Å and the cubic box edge (Å) of n methanols."""
    _, x, edge = mixture_box({"MOH": n}, density_g_cm3, seed)
    return x, edge


def write_pdb(path: str, names, positions: np.ndarray, edge: float) -> None:
    lines = [f"CRYST1{edge:9.3f}{edge:9.3f}{edge:9.3f}  90.00  90.00  90.00 P 1           1"]
    conect, a = [], 0
    for res, name in enumerate(names, start=1):
        atoms, elements, _, _, bonds = _MOLECULES[name]
        for atom, element in zip(atoms, elements):
            x, y, z = positions[a]
            atom = atom if len(atom) == 4 else " " + atom  # PDB: short names start in column 14
            lines.append(f"HETATM{a + 1:5d} {atom:<4s} {name} A{res % 10000:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                         f"  1.00  0.00          {element:>2s}")
            a += 1
        first = a - len(atoms) + 1
        for i in range(len(atoms)):
            partners = sorted({j for b in bonds for j in b if i in b and j != i})
            conect.append(f"CONECT{first + i:5d}" + "".join(f"{first + j:5d}" for j in partners))
    lines += conect + ["END"]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, help="methanol molecules")
    ap.add_argument("density_g_cm3", type=float)
    ap.add_argument("out")
    ap.add_argument("--water", type=int, default=0, help="SPC/E water molecules (forcefield spce-water.xml)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    names, x, edge = mixture_box({"MOH": args.n, "HOH": args.water}, args.density_g_cm3, args.seed)
    write_pdb(args.out, names, x, edge)
    print(f"{args.out}: {len(names)} molecules ({args.n} methanol, {args.water} water), box {edge:.3f} Å")


if __name__ == "__main__":
    main()
