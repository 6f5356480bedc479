"""The CG engine's timestep, measured: picks the [simulate] and [simulate.nve] timestep_fs defaults.

NVE: one start state (a mapped all-atom reference frame, thermalised by BAOAB at the
temperature for ``--equilibrate-ps``), then velocity Verlet from that same state at each
timestep for ``--length-ps``, in float32 (the engine's precision) with the skin pair list.
For each timestep: the drift of the total energy (least-squares slope, in kB T per
degree of freedom per ns) and its RMS fluctuation about that line relative to the RMS
fluctuation of the kinetic energy (the usual "energy conservation ratio"; < 0.05 is good,
> 0.2 is not usable).

Langevin (BAOAB, 1/ps): from the same state, ``--sample-ps`` of sampling at each of
``--langevin-timesteps``: the mean potential energy per bead (BAOAB's configurational
averages should not depend on h until it is large), the mean kinetic temperature, and the
RDF's integrated absolute error against the RDF at the smallest timestep, next to the
IAE between two halves of that run (the noise level).

    python bench/timestep.py --model runs/quick/train/fm.pt --reference runs/quick/reference/T300K.h5md
    python bench/timestep.py --model M.pt --reference R.h5md --timesteps 1 2 3 4 5 6 --length-ps 5

Multiple time stepping (``--substeps 1 2 4``): every timestep is run again with the repulsive
prior at k substeps (``[simulate] mts_substeps``); the timestep is then the network's. The
Langevin table adds the diffusion coefficient from the BAOAB run's mean squared displacement
(at friction 1/ps it is below the NVE value, but the same friction in every row).

    python bench/timestep.py --model M.pt --reference R.h5md --timesteps 4 6 8 --substeps 1 2 4

Prints a table; record it in bench/RESULTS.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from thermocg import units
from thermocg.analysis import RDF
from thermocg.analysis.structure import integrated_absolute_error
from thermocg.errors import SimulationError
from thermocg.frames import read_reference
from thermocg.mapping import map_reference
from thermocg.device import pick_device
from thermocg.models.saved import load_model
from thermocg.simulate.engine import Integrator, Safety, model_force_function, split_force_functions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="a model saved by `thermocg train`")
    ap.add_argument("--reference", required=True, type=Path, help="a reference-stage H5MD file (start frame)")
    ap.add_argument("--temperature-K", type=float, default=300.0)
    ap.add_argument("--timesteps", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    ap.add_argument("--length-ps", type=float, default=4.0)
    ap.add_argument("--equilibrate-ps", type=float, default=2.0)
    ap.add_argument("--sample-every-fs", type=float, default=12.0, help="energy read-out interval")
    ap.add_argument("--langevin-timesteps", type=float, nargs="*", default=[2.0, 4.0, 6.0])
    ap.add_argument("--substeps", type=int, nargs="+", default=[1],
                    help="multiple time stepping: prior substeps per network step (1: off)")
    ap.add_argument("--sample-ps", type=float, default=20.0)
    ap.add_argument("--rdf-r-max-A", type=float, default=8.0)
    ap.add_argument("--skin-A", type=float, default=1.0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args()
    warnings.filterwarnings("ignore", module="hippynn")
    device = pick_device(args.device)
    model = load_model(args.model, device=str(device))
    cg = map_reference(read_reference(args.reference))
    fn = model_force_function(model, skin_A=args.skin_A)
    split = split_force_functions(model, skin_A=args.skin_A) if max(args.substeps) > 1 else None

    def integrator(h, k, friction, seed, safety=Safety()):
        slow, fast = (fn, None) if k == 1 else split
        return Integrator(slow, cg.bead_masses, cg.box[-1], t, h, friction, seeds=[seed], device=device,
                          safety=safety, fast_fn=fast, substeps=k)
    t = args.temperature_K

    eq = Integrator(fn, cg.bead_masses, cg.box[-1], t, 2.0, 1.0, seeds=[1], device=device)
    eq.set_state(cg.positions[-1][None])
    eq.step(int(round(args.equilibrate_ps * 1000 / 2.0)))
    x0, v0 = eq.positions.clone(), eq.velocities.clone()
    v0 = v0 - (eq.masses[None, :, None] * v0).sum(1, keepdim=True) / eq.masses.sum()  # NVE: no net momentum

    n = len(cg.bead_masses)
    rows = []
    for h, k in [(h, k) for h in args.timesteps for k in args.substeps]:
        md = integrator(h, k, 0.0, 1, Safety(interval=50))
        md.set_state(x0, v0)
        every = max(1, int(round(args.sample_every_fs / h)))
        n_samples = int(round(args.length_ps * 1000 / h)) // every
        times, total, kinetic = [], [], []
        t0 = time.perf_counter()
        status = "ok"
        try:
            for sample in range(n_samples + 1):
                if sample:
                    md.step(every)
                ke = float(md.kinetic_energy()[0])
                times.append(md.step_count * h * 1e-3)
                total.append(float(md.potential[0]) + ke)
                kinetic.append(ke)
        except SimulationError as err:
            status = f"stopped: {err}"
        wall = time.perf_counter() - t0
        times, total, kinetic = map(np.asarray, (times, total, kinetic))
        slope, icpt = np.polyfit(times, total, 1) if len(times) > 2 else (np.nan, np.nan)
        kt_per_dof = units.KB * t
        drift = slope / 1e-3 / (md.n_dof * kt_per_dof)  # kB T per DOF per ns
        ratio = np.std(total - (slope * times + icpt)) / np.std(kinetic) if len(times) > 2 else np.nan
        temp = float(np.mean(units.kinetic_temperature(kinetic, md.n_dof)))
        rows.append((h, k, drift, ratio, temp, times[-1], 1e3 * wall / max(md.step_count, 1), status))
        print(f"  {h:g} fs x{k} done ({wall:.0f} s)", flush=True)

    runs = [(h, k) for h in args.langevin_timesteps for k in args.substeps]
    langevin = [langevin_run(integrator(h, k, 1.0, 7), cg, x0, v0, h, args) for h, k in runs]

    print(f"# NVE energy conservation vs timestep: {n} beads, model {args.model}, start {args.reference} "
          f"(last frame, {args.equilibrate_ps:g} ps BAOAB at {t:g} K), float32, skin {args.skin_A:g} Å")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({device})")
    print()
    print("| timestep (fs) | prior substeps | drift (kB T per DOF per ns) | RMS(E_tot) / RMS(E_kin) | mean T (K) | "
          "length (ps) | ms per step | status |")
    print("|---|---|---|---|---|---|---|---|")
    for h, k, drift, ratio, temp, length, ms, status in rows:
        print(f"| {h:g} | {k} | {drift:+.2e} | {ratio:.3f} | {temp:.1f} | {length:.2f} | {ms:.2f} | {status} |")
    if not langevin:
        return
    print()
    print(f"# BAOAB at {t:g} K, friction 1/ps, {args.sample_ps:g} ps sampled per timestep (4 blocks for the errors)")
    print()
    ref_rdf = langevin[0][4]
    print("| timestep (fs) | prior substeps | potential energy per bead (kcal/mol) | kinetic T (K) | RDF IAE vs "
          f"{runs[0][0]:g} fs x{runs[0][1]} | RDF IAE between halves of one run (noise) | D (1e-5 cm^2/s) | "
          "ms per step | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (h, k), (pe, pe_err, temp, noise, rdf, diff, ms, wall) in zip(runs, langevin):
        iae = integrated_absolute_error(rdf.bin_centers, rdf.rdf, ref_rdf.rdf)
        print(f"| {h:g} | {k} | {pe:.4f} ± {pe_err:.4f} | {temp:.1f} | {iae:.4f} | {noise:.4f} | "
              f"{diff[0]:.3f} ± {diff[1]:.3f} | {ms:.2f} | {wall:.0f} |")


def langevin_run(md, cg, x0, v0, h, args):
    """(<U>/bead, its block error, <T_kin>, RDF IAE between the run's halves, RDF, (D, its block
    error) in 1e-5 cm^2/s, ms per step, wall seconds) of a BAOAB run of ``md`` from (x0, v0)."""
    md.set_state(x0, v0)
    t0 = time.perf_counter()
    md.step(int(round(2000 / h)))  # 2 ps at this timestep first
    every = max(1, int(round(200 / h)))  # frames 0.2 ps apart
    xs, pes, temps = [], [], []
    for _ in range(int(round(args.sample_ps * 1000 / (every * h)))):
        md.step(every)
        xs.append(md.positions[0].cpu().numpy().astype(np.float64))
        pes.append(float(md.potential[0]) / len(cg.bead_masses))
        temps.append(float(md.kinetic_temperature()[0]))
    wall = time.perf_counter() - t0
    ms = 1e3 * wall / md.step_count
    xs, box = np.array(xs), np.repeat(cg.box[-1][None], len(xs), axis=0)
    half = len(xs) // 2
    rdf_a, rdf_b = (RDF(args.rdf_r_max_A, 160).compute(xs[s], box[s]) for s in (slice(0, half), slice(half, None)))
    noise = integrated_absolute_error(rdf_a.bin_centers, rdf_a.rdf, rdf_b.rdf)
    blocks = np.array([b.mean() for b in np.array_split(np.array(pes), 4)])
    print(f"  BAOAB {h:g} fs x{md.substeps} done ({wall:.0f} s)", flush=True)
    return (float(np.mean(pes)), float(blocks.std(ddof=1) / 2), float(np.mean(temps)), noise,
            RDF(args.rdf_r_max_A, 160).compute(xs, box), diffusion(xs, every * h * 1e-3), ms, wall)


def diffusion(xs, dt_ps, lags_ps=(0.5, 2.0), blocks=4):
    """D from the slope of the MSD (unwrapped positions (F, N, 3)) between two lags, per block of
    frames; (mean, standard error) in 1e-5 cm^2/s (1 Å^2/ps = 1e-4 cm^2/s)."""
    lo, hi = (max(1, int(round(lag / dt_ps))) for lag in lags_ps)
    out = []
    for part in np.array_split(xs, blocks):
        msd = [np.mean(np.sum((part[k:] - part[:-k]) ** 2, axis=-1)) for k in (lo, hi)]
        out.append((msd[1] - msd[0]) / ((hi - lo) * dt_ps) / 6.0 * 10.0)
    return float(np.mean(out)), float(np.std(out, ddof=1) / np.sqrt(blocks))


if __name__ == "__main__":
    main()
