"""Write a PDB of N TraPPE-UA methanol molecules in a cubic box at a given density.

The molecules sit on a simple cubic lattice with random orientations (the geometry of
trappe-ua-methanol.xml: CH3-O 1.430 Å, O-H 0.945 Å, 108.5°); the reference stage minimises the
energy and equilibrates before sampling (a lattice start melts in a few ps at 250-350 K).

    python examples/methanol/make_box.py 128 0.786 examples/methanol/methanol-128.pdb
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def methanol_box(n: int, density_g_cm3: float, seed: int = 1):
    """Positions (3n, 3) Å and the cubic box edge (Å)."""
    molar_mass = 15.035 + 15.999 + 1.008
    edge = (n * molar_mass / (density_g_cm3 * 0.602214076)) ** (1.0 / 3.0)
    per_side = math.ceil(n ** (1.0 / 3.0))
    spacing = edge / per_side
    theta = math.radians(108.5)
    local = np.array([[1.430, 0.0, 0.0], [0.0, 0.0, 0.0],
                      [0.945 * math.cos(theta), 0.945 * math.sin(theta), 0.0]])  # C, O, H about O
    rng = np.random.default_rng(seed)
    sites = [(i, j, k) for i in range(per_side) for j in range(per_side) for k in range(per_side)][:n]
    x = []
    for site in sites:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random rotation
        x.append((np.array(site) + 0.5) * spacing + local @ q.T)
    return np.concatenate(x), edge


def write_pdb(path: str, positions: np.ndarray, edge: float) -> None:
    lines = [f"CRYST1{edge:9.3f}{edge:9.3f}{edge:9.3f}  90.00  90.00  90.00 P 1           1"]
    names, elements = ("C", "O", "H"), ("C", "O", "H")
    for a, (x, y, z) in enumerate(positions):
        res = a // 3 + 1
        lines.append(f"HETATM{a + 1:5d}  {names[a % 3]:<3s} MOH A{res % 10000:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                     f"  1.00  0.00          {elements[a % 3]:>2s}")
    for m in range(len(positions) // 3):
        c, o, h = 3 * m + 1, 3 * m + 2, 3 * m + 3
        lines.append(f"CONECT{c:5d}{o:5d}")
        lines.append(f"CONECT{o:5d}{c:5d}{h:5d}")
        lines.append(f"CONECT{h:5d}{o:5d}")
    lines.append("END")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int)
    ap.add_argument("density_g_cm3", type=float)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    x, edge = methanol_box(args.n, args.density_g_cm3, args.seed)
    write_pdb(args.out, x, edge)
    print(f"{args.out}: {args.n} molecules, box {edge:.3f} Å")


if __name__ == "__main__":
    main()
