"""The band of the import's unit check (issue 33): how the centres of mass accelerate against
their forces in OpenMM's own NVE runs of SPC/E water, at the frame spacings a user may dump.

:func:`thermocg.reference.imported.com_acceleration_slope` fits each molecule's acceleration
from its positions, (X(t+h) - 2 X(t) + X(t-h)) / h², against F_COM/M at those frames (Numerov's
weights; the plain F_COM(t)/M as a second column, which the issue's first measurement used).
Right units give ~1 at small h; the slope falls where the COM forces change within h (the
molecules' librations couple to the COM force). This script measures it at each temperature and
spacing, so the import's band is set by data: forces read in eV where they are kcal/mol scale the
slope by 1/23.06, in kJ/mol by 4.184, a frame spacing declared twice the true one by 1/4.

    python bench/units_check.py --temperatures 250 300 500 700

Prints a table and writes ``--out`` (JSON): record it in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import numpy as np


def nve_frames(temperature_K: float, n_molecules: int, every_fs: int, length_ps: float, seed: int):
    """Positions (unwrapped) and forces every ``every_fs`` fs of an NVE run (1 fs Verlet, rigid
    SPC/E, PME 9 Å at 1e-5) after 5 ps of Langevin at the temperature."""
    import openmm as mm
    import openmm.unit as u

    from thermocg.reference import engine

    top, x = engine.build_water_box(n_molecules, 0.997, "spce")
    system = engine.create_system(top, "spce", 9.0, 1e-5)
    x = engine.minimize(system, x, np.diag(top.getPeriodicBoxVectors().value_in_unit(u.angstrom)))
    platform_, props = engine.choose_platform("auto")
    langevin = mm.LangevinMiddleIntegrator(temperature_K * u.kelvin, 1.0 / u.picosecond, 2.0 * u.femtosecond)
    langevin.setRandomNumberSeed(seed)
    context = mm.Context(system, langevin, platform_, props)
    engine.set_state(context, x)
    context.setVelocitiesToTemperature(temperature_K * u.kelvin, seed)
    langevin.step(2500)
    state = context.getState(getPositions=True, getVelocities=True)
    verlet = mm.VerletIntegrator(1.0 * u.femtosecond)
    context = mm.Context(system, verlet, platform_, props)
    context.setState(state)
    pos, frc = [], []
    for _ in range(int(round(length_ps * 1000 / every_fs)) + 1):
        s = engine.snapshot(context)
        pos.append(s.positions)
        frc.append(s.forces)
        verlet.step(every_fs)
    return np.array(pos), np.array(frc), engine.masses(system), engine.molecule_index(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[250.0, 300.0, 500.0, 700.0])
    ap.add_argument("--molecules", type=int, default=216)
    ap.add_argument("--length-ps", type=float, default=4.0)
    ap.add_argument("--spacings-fs", type=int, nargs="+", default=[5, 10, 20, 40, 80])
    ap.add_argument("--out", default="bench/results/units_check.json")
    args = ap.parse_args()
    from thermocg.reference.imported import com_acceleration_slope

    rows = []
    print(f"{'T (K)':>6} {'h (fs)':>7} {'slope':>7} {'plain':>7}")
    for t in args.temperatures:
        start = time.time()
        x, f, m, mol = nve_frames(t, args.molecules, min(args.spacings_fs), args.length_ps, seed=int(t))
        for h in args.spacings_fs:
            stride = h // min(args.spacings_fs)
            xs, fs = x[::stride], f[::stride]
            slope = com_acceleration_slope(xs, fs, m, mol, h)
            plain = com_acceleration_slope(xs, fs, m, mol, h, weights=(0.0, 1.0, 0.0))
            rows.append({"temperature_K": t, "spacing_fs": h, "slope": slope, "plain_slope": plain})
            print(f"{t:6.0f} {h:7d} {slope:7.3f} {plain:7.3f}")
        print(f"# {t:g} K: {time.time() - start:.0f} s")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"command": "python bench/units_check.py " + " ".join(f"{t:g}" for t in args.temperatures),
           "commit": commit, "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
