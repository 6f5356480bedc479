"""The LAMMPS import recipe against thermocg's OpenMM reference of the same model (issue 33): SPC/E
water, 216 molecules, 9 Å, PME/PPPM at 1e-5, rigid, at 300 K. Does data from the recipe give the
same centre-of-mass structure and diffusion as OpenMM's?

``--runs`` independent LAMMPS runs of examples/lammps (run.py with its own in.spce; seeds 1..runs),
each 20 ps of equilibration from the lattice, ``--frames`` frames 1 ps apart and one 8 ps NVE
segment with frames every 20 fs, are read by the import (thermocg.reference.imported.read_frames,
with its checks and the unit check) and mapped to centres of mass. The OpenMM side is the
reference stage of ``config`` (its frames and NVE segments at 300 K). Compared: the COM g(r) (IAE
and its noise floor from each side's halves, first peak with block errors) and D (mean and standard
error over NVE segments; no finite-size correction on either side: the same box).

    python bench/lammps_vs_openmm.py examples/study-cpu.toml --runs 4

Writes ``--out`` (JSON) and prints a table; the comparison goes in docs/results.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a config whose reference stage (OpenMM, 300 K among its temperatures) is done")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--frames", type=int, default=13, help="NVT frames per LAMMPS run, 1 ps apart")
    ap.add_argument("--work", default="runs/lammps-vs-openmm")
    ap.add_argument("--out", default="bench/results/issue33_lammps_vs_openmm.json")
    args = ap.parse_args()

    from thermocg.config import load_config
    from thermocg.evaluate.stage import Structure, diffusion, reference_nve_beads
    from thermocg.io.records import ReferenceRun
    from thermocg.mapping import LinearMap, map_reference
    from thermocg.pipeline import stage
    from thermocg.reference.imported import Reader, check_units, read_frames

    config = load_config(args.config)
    t = 300.0
    reader = Reader(format="lammps-dump", energy_unit="kcal/mol", lammps_pe_atom="c_peat", lammps_pe_total="v_pe")
    lmp_x, lmp_box, lmp_nve, slopes, seconds = [], [], [], [], []
    for seed in range(1, args.runs + 1):
        d = Path(args.work) / f"seed{seed}"
        start = time.time()
        subprocess.run([sys.executable, str(ROOT / "examples" / "lammps" / "run.py"), "--directory", str(d),
                        "--temperatures", f"{t:g}", "--seed", str(seed), "--equilibration", "10000",
                        "--frames", str(args.frames), "--every", "500", "--nve-frames", "400", "--nve-every", "10"],
                       check=True)
        seconds.append(time.time() - start)
        r = dataclasses.replace(reader, lammps_data=d / "system.data")
        frames = read_frames(d / "frames-300K.lammpstrj", args.frames, r)
        nve = read_frames(d / "nve-300K.lammpstrj", 0, r, require_energies=False)
        slopes.append(check_units(nve, 20.0, d / "nve-300K.lammpstrj", "kcal/mol"))
        cg_map = LinearMap.center_of_mass(frames.molecule_index, frames.masses)
        lmp_x.append(cg_map.positions(frames.positions))
        lmp_box.append(frames.box)
        lmp_nve.append(cg_map.positions(nve.positions))
    lmp = Structure(config, np.concatenate(lmp_x), np.concatenate(lmp_box))
    ref = ReferenceRun.read(stage("reference").directory(config))
    beads = map_reference(ref.frames(t))
    omm = Structure(config, beads.positions, beads.box)
    omm_nve, dt = reference_nve_beads(ref, t)
    edge = float(beads.box[0, 0])
    d_lmp = diffusion(config, lmp_nve, 0.02, t, edge)["D_A2_per_ps"]
    d_omm = diffusion(config, omm_nve, dt, t, edge)["D_A2_per_ps"]
    s_lmp, s_omm = lmp.summary(omm), omm.summary()
    out = {
        "command": "python bench/lammps_vs_openmm.py " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=ROOT).stdout.strip(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "lammps": {"runs": args.runs, "frames": int(sum(len(x) for x in lmp_x)),
                   "seconds_per_run": seconds, "unit_check_slopes": slopes,
                   "rdf_peak_position": s_lmp["rdf_peak_position"], "rdf_peak_height": s_lmp["rdf_peak_height"],
                   "rdf_halves_iae": s_lmp["rdf_halves_iae"], "D_A2_per_ps": d_lmp},
        "openmm": {"frames": len(beads.positions), "rdf_peak_position": s_omm["rdf_peak_position"],
                   "rdf_peak_height": s_omm["rdf_peak_height"], "rdf_halves_iae": s_omm["rdf_halves_iae"],
                   "D_A2_per_ps": d_omm, "nve_segments": len(omm_nve)},
        "rdf_iae": s_lmp["rdf_iae"], "rdf_iae_floor": s_lmp["rdf_iae_floor"],
        "adf_iae": s_lmp["adf_iae"], "adf_iae_floor": s_lmp["adf_iae_floor"],
    }
    Path(args.out).write_text(json.dumps(out, indent=1))

    def pm(e, digits=3):
        return f"{e['value']:.{digits}f} ± {e['error']:.{digits}f}"

    print(f"| 300 K, 216 SPC/E | LAMMPS ({args.runs} runs, {len(np.concatenate(lmp_x))} frames) | "
          f"OpenMM ({len(beads.positions)} frames) |")
    print("|---|---|---|")
    print(f"| g(r) first peak position (Å) | {pm(s_lmp['rdf_peak_position'])} | {pm(s_omm['rdf_peak_position'])} |")
    print(f"| g(r) first peak height | {pm(s_lmp['rdf_peak_height'])} | {pm(s_omm['rdf_peak_height'])} |")
    print(f"| D (Å²/ps), NVE segments | {pm(d_lmp, 4)} ({args.runs}) | {pm(d_omm, 4)} ({len(omm_nve)}) |")
    print(f"\nRDF IAE LAMMPS vs OpenMM {s_lmp['rdf_iae']['value']:.3f} (noise floor {s_lmp['rdf_iae_floor']:.3f}); "
          f"ADF IAE {s_lmp['adf_iae']['value']:.3f} (floor {s_lmp['adf_iae_floor']:.3f}); "
          f"unit-check slopes {', '.join(f'{s:.3f}' for s in slopes)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
