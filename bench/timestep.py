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

The timestep study of issue 32 (the largest timestep each form can take): several temperatures,
each started from the reference frame at the nearest temperature of a reference stage's
directory, the ADF beside the RDF, and a verdict per Langevin timestep against the smallest:
g(r) and the ADF within ``--noise-units`` of their noise floor (the IAE two runs of this length
show from sampling alone, :func:`thermocg.evaluate.stage.iae_floor`) and D within its noise
(Student's t at 95 % on the two runs' 4-block errors, :func:`d_limit_sigma`), at every temperature
and pooled over them (:func:`pooled_d_shift`: a shift common to every temperature); NVE drift below ``--drift-max`` kB T per DOF per ns.
``--form distilled`` runs the distilled form (pair + three-body) fitted on ``--distill-frames``
reference frames at the model's T0, as the simulate stage's ``engine = "distilled"``:

    python bench/timestep.py --model runs/quick/train/trf2.pt --reference runs/study-cpu/reference \
        --temperature-K 250 300 500 700 --timesteps 2 4 6 8 10 --langevin-timesteps 2 4 6 8 10 \
        --form distilled --out bench/results/issue32_timestep_distilled.json

Prints tables (and writes ``--out`` as JSON); record them in bench/RESULTS.md with the machine,
date and command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from thermocg import units
from thermocg.analysis import ADF, RDF
from thermocg.analysis.structure import integrated_absolute_error
from thermocg.errors import SimulationError
from thermocg.evaluate.stage import iae_floor
from thermocg.frames import read_reference
from thermocg.io.records import ReferenceRun
from thermocg.mapping import map_reference
from thermocg.device import pick_device
from thermocg.models.saved import load_model
from thermocg.simulate.engine import Integrator, Safety, model_force_function, split_force_functions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a model saved by `thermocg train`")
    ap.add_argument("--reference", type=Path,
                    help="a reference-stage H5MD file, or the reference stage's directory (T<t>K.h5md per temperature)")
    ap.add_argument("--temperature-K", type=float, nargs="+", default=[300.0])
    ap.add_argument("--form", choices=["network", "distilled"], default="network")
    ap.add_argument("--distill-frames", type=int, default=30, help="reference frames at T0 the distilled form is fitted on")
    ap.add_argument("--timesteps", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    ap.add_argument("--length-ps", type=float, default=4.0)
    ap.add_argument("--equilibrate-ps", type=float, default=2.0)
    ap.add_argument("--sample-every-fs", type=float, default=12.0, help="energy read-out interval")
    ap.add_argument("--langevin-timesteps", type=float, nargs="*", default=[2.0, 4.0, 6.0])
    ap.add_argument("--substeps", type=int, nargs="+", default=[1],
                    help="multiple time stepping: prior substeps per network step (1: off)")
    ap.add_argument("--sample-ps", type=float, default=20.0)
    ap.add_argument("--rdf-r-max-A", type=float, default=8.0)
    ap.add_argument("--adf-r-cut-A", type=float, default=3.4)
    ap.add_argument("--noise-units", type=float, default=2.0, help="g(r)/ADF IAE allowed, in noise floors")
    ap.add_argument("--drift-max", type=float, default=0.01, help="NVE drift allowed, kB T per DOF per ns")
    ap.add_argument("--skin-A", type=float, default=1.0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--out", type=Path, default=None, help="write the measurements as JSON")
    ap.add_argument("--rejudge", type=Path, default=None,
                    help="read an --out JSON of an earlier run, judge it again with these --noise-units and "
                    "--drift-max, and write it back (no MD)")
    args = ap.parse_args()
    if args.rejudge:
        report = json.loads(args.rejudge.read_text())
        verdicts(report, args)
        args.rejudge.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.rejudge}")
        return
    if args.model is None or args.reference is None:
        ap.error("--model and --reference are needed (or --rejudge)")
    warnings.filterwarnings("ignore", module="hippynn")
    device = pick_device(args.device)
    model = load_model(args.model, device=str(device))
    t0_model = 1.0 / (units.KB * float(model.model.beta0))
    if args.form == "distilled":
        from thermocg.models.distilled import DistilledForceField

        if max(args.substeps) > 1:
            raise SystemExit("--substeps needs --form network (the distilled form has no separate prior step)")
        fit = map_reference(read_reference(reference_file(args.reference, t0_model)))
        form = DistilledForceField.fit(model, fit.positions[:args.distill_frames], fit.box[:args.distill_frames],
                                       skin_A=args.skin_A)
        fn = model_force_function(form, engine="distilled")
    else:
        fn = model_force_function(model, skin_A=args.skin_A)
    split = split_force_functions(model, skin_A=args.skin_A) if max(args.substeps) > 1 else None
    report = {"command": "python bench/timestep.py " + " ".join(sys.argv[1:]), "model": str(args.model),
              "form": args.form, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "temperatures": {}}
    for t in args.temperature_K:
        report["temperatures"][f"{t:g}"] = one_temperature(args, t, fn, split, device)
    verdicts(report, args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")


def reference_file(reference: Path, temperature_K: float) -> Path:
    """The H5MD file ``reference`` itself, or in a reference stage's directory the one at the
    temperature nearest ``temperature_K`` (as the simulate stage starts its runs)."""
    if not reference.is_dir():
        return reference
    run = ReferenceRun.read(reference)
    return run.nvt_path(min(run.temperatures_K, key=lambda u: abs(u - temperature_K)))


def one_temperature(args, t, fn, split, device) -> dict:
    """NVE rows and BAOAB runs at temperature t, printed as tables; returned as a dict."""
    start = reference_file(args.reference, t)
    cg = map_reference(read_reference(start))

    def integrator(h, k, friction, seed, safety=Safety()):
        slow, fast = (fn, None) if k == 1 else split
        return Integrator(slow, cg.bead_masses, cg.box[-1], t, h, friction, seeds=[seed], device=device,
                          safety=safety, fast_fn=fast, substeps=k)

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
        t_wall = time.perf_counter()
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
        wall = time.perf_counter() - t_wall
        times, total, kinetic = map(np.asarray, (times, total, kinetic))
        slope, icpt = np.polyfit(times, total, 1) if len(times) > 2 else (np.nan, np.nan)
        drift = slope / 1e-3 / (md.n_dof * units.KB * t)  # kB T per DOF per ns
        ratio = np.std(total - (slope * times + icpt)) / np.std(kinetic) if len(times) > 2 else np.nan
        temp = float(np.mean(units.kinetic_temperature(kinetic, md.n_dof)))
        rows.append({"timestep_fs": h, "substeps": k, "drift_kT_per_dof_per_ns": float(drift),
                     "fluctuation_ratio": float(ratio), "mean_T_K": temp, "length_ps": float(times[-1]),
                     "ms_per_step": 1e3 * wall / max(md.step_count, 1), "status": status})
        print(f"  {t:g} K: NVE {h:g} fs x{k} done ({wall:.0f} s)", flush=True)

    runs = [(h, k) for h in args.langevin_timesteps for k in args.substeps]
    langevin = [langevin_run(integrator(h, k, 1.0, 7), cg, x0, v0, h, args) for h, k in runs]

    print(f"# {t:g} K: NVE energy conservation vs timestep: {n} beads, model {args.model} ({args.form}), start "
          f"{start} (last frame, {args.equilibrate_ps:g} ps BAOAB), float32, skin {args.skin_A:g} Å")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({device})")
    print()
    print("| timestep (fs) | prior substeps | drift (kB T per DOF per ns) | RMS(E_tot) / RMS(E_kin) | mean T (K) | "
          "length (ps) | ms per step | status |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['timestep_fs']:g} | {r['substeps']} | {r['drift_kT_per_dof_per_ns']:+.2e} | "
              f"{r['fluctuation_ratio']:.3f} | {r['mean_T_K']:.1f} | {r['length_ps']:.2f} | {r['ms_per_step']:.2f} | "
              f"{r['status']} |")
    out = {"start": str(start), "nve": rows, "langevin": []}
    if not langevin:
        return out
    first = langevin[0]
    print()
    print(f"# BAOAB at {t:g} K, friction 1/ps, {args.sample_ps:g} ps sampled per timestep (4 blocks for the errors); "
          f"against {runs[0][0]:g} fs x{runs[0][1]}, IAE in units of the noise floor (pass: <= {args.noise_units:g})")
    print()
    print("| timestep (fs) | prior substeps | potential energy per bead (kcal/mol) | kinetic T (K) | RDF IAE (floors) | "
          "ADF IAE (floors) | D (1e-5 cm^2/s) | D vs first (sigma; allowed) | ms per step | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    if first["status"] != "ok":
        raise SystemExit(f"{t:g} K: the smallest BAOAB timestep ({runs[0][0]:g} fs) {first['status']}")
    for (h, k), run in zip(runs, langevin):
        if run["status"] != "ok":
            out["langevin"].append({"timestep_fs": h, "substeps": k, "status": run["status"]})
            print(f"| {h:g} | {k} | {run['status']} | | | | | | | |")
            continue
        rdf_iae = integrated_absolute_error(run["rdf"].bin_centers, run["rdf"].rdf, first["rdf"].rdf)
        adf_iae = integrated_absolute_error(run["adf"].bin_centers, run["adf"].adf, first["adf"].adf)
        rdf_floor = iae_floor(run["rdf_halves"], first["rdf_halves"])
        adf_floor = iae_floor(run["adf_halves"], first["adf_halves"])
        d, d_err = run["D"]
        d_sigma = abs(d - first["D"][0]) / max(math.hypot(d_err, first["D"][1]), 1e-12) if run is not first else 0.0
        entry = {"timestep_fs": h, "substeps": k, "U_per_bead": run["pe"], "U_error": run["pe_err"],
                 "kinetic_T_K": run["T"], "rdf_iae": rdf_iae, "rdf_floor": rdf_floor, "adf_iae": adf_iae,
                 "adf_floor": adf_floor, "D_1e-5_cm2_s": d, "D_error": d_err, "D_sigma_from_first": d_sigma,
                 "ms_per_step": run["ms"], "wall_s": run["wall"], "status": "ok"}
        out["langevin"].append(entry)
        print(f"| {h:g} | {k} | {run['pe']:.4f} ± {run['pe_err']:.4f} | {run['T']:.1f} | "
              f"{rdf_iae / rdf_floor:.2f} | {adf_iae / adf_floor:.2f} | {d:.3f} ± {d_err:.3f} | {d_sigma:.1f}; "
              f"{d_limit_sigma(d_err, first['D'][1]):.1f} | "
              f"{run['ms']:.2f} | {run['wall']:.0f} |")
    print()
    return out


def d_limit_sigma(err_a: float, err_b: float, blocks: int = 4) -> float:
    """How many combined standard errors two D estimates may differ by within their noise: the
    two-sided 95 % point of Student's t at the Welch-Satterthwaite degrees of freedom of two block
    errors of ``blocks`` blocks each (3 + 3 for 4 blocks: 2.45 at equal errors, against the 1.96 of
    a normal, which with errors from 4 blocks fails a timestep by chance about one time in eight)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, welch_dof(err_a, err_b, blocks)))


def welch_dof(err_a: float, err_b: float, blocks: int = 4) -> float:
    """Welch-Satterthwaite degrees of freedom of the difference of two block means' errors."""
    va, vb = err_a ** 2, err_b ** 2
    return (va + vb) ** 2 / (va ** 2 / (blocks - 1) + vb ** 2 / (blocks - 1)) if va + vb > 0 else blocks - 1.0


def pooled_d_shift(entries: list[tuple[dict, dict]]) -> tuple[float, float]:
    """A shift of D common to every temperature, which the per-temperature test is too weak to see:
    (the sum of the signed differences in combined errors over sqrt(n), and its 95 % limit,
    1.96 x the standard deviation of such a sum of t-distributed terms, sqrt(mean(dof / (dof - 2))))
    for (entry, the smallest timestep's entry) pairs at the temperatures."""
    z, var = [], []
    for entry, first in entries:
        err = math.hypot(entry["D_error"], first["D_error"])
        z.append((entry["D_1e-5_cm2_s"] - first["D_1e-5_cm2_s"]) / max(err, 1e-12))
        dof = welch_dof(entry["D_error"], first["D_error"])
        var.append(dof / (dof - 2) if dof > 2.5 else 5.0)  # t variance; capped where it diverges
    return float(sum(z) / math.sqrt(len(z))), float(1.96 * math.sqrt(np.mean(var)))


def verdicts(report: dict, args) -> None:
    """The largest timestep that passes at every temperature, as does every smaller one (without
    substeps, or with the fewest tested): BAOAB (g(r), ADF within ``noise_units`` floors, D within
    the noise of the smallest timestep's: :func:`d_limit_sigma`) and NVE (|drift| below
    ``drift_max``). Adds them to ``report`` and prints them."""
    temps = report["temperatures"].values()
    passing, pairs = {}, {}
    for t in temps:
        if not t["langevin"]:  # an NVE-only study
            continue
        first = t["langevin"][0]
        for entry in t["langevin"]:
            key = (entry["timestep_fs"], entry["substeps"])
            ok = entry["status"] == "ok"
            if ok:
                entry["D_limit_sigma"] = d_limit_sigma(entry["D_error"], first["D_error"])
                ok = (entry["rdf_iae"] <= args.noise_units * entry["rdf_floor"]
                      and entry["adf_iae"] <= args.noise_units * entry["adf_floor"]
                      and entry["D_sigma_from_first"] <= entry["D_limit_sigma"])
                if entry is not first:
                    pairs.setdefault(key, []).append((entry, first))
            passing[key] = passing.get(key, True) and ok
    report["D_pooled_shift"] = {}
    for key, entries in pairs.items():  # and no shift of D common to the temperatures
        shift, limit = pooled_d_shift(entries)
        report["D_pooled_shift"][f"{key[0]:g}x{key[1]}"] = {"sigma": shift, "limit": limit}
        passing[key] = passing[key] and abs(shift) <= limit
        print(f"D at {key[0]:g} fs x{key[1]} against the smallest, pooled over {len(entries)} temperatures: "
              f"{shift:+.2f} sigma (allowed {limit:.2f})")
    nve = {}
    for row in (r for t in temps for r in t["nve"]):
        key = (row["timestep_fs"], row["substeps"])
        nve[key] = nve.get(key, True) and row["status"] == "ok" and abs(row["drift_kT_per_dof_per_ns"]) < args.drift_max
    def largest(results):  # the largest h whose row and every smaller h's row (fewest substeps) pass
        fewest = min((k for _, k in results), default=None)
        best = None
        for h in sorted(h for h, k in results if k == fewest):
            if not results[(h, fewest)]:
                break
            best = h
        return best

    best, best_nve = largest(passing), largest(nve)
    report["langevin_pass"] = {f"{h:g}x{k}": ok for (h, k), ok in passing.items()}
    report["nve_pass"] = {f"{h:g}x{k}": ok for (h, k), ok in nve.items()}
    report["largest_langevin_timestep_fs"], report["largest_nve_timestep_fs"] = best, best_nve
    print("BAOAB, all temperatures: " + ", ".join(f"{h:g} fs x{k} {'pass' if ok else 'FAIL'}"
                                                 for (h, k), ok in passing.items()))
    print("NVE, all temperatures: " + ", ".join(f"{h:g} fs x{k} {'pass' if ok else 'FAIL'}" for (h, k), ok in nve.items()))
    print(f"largest-langevin-timestep-fs {best}")
    print(f"largest-nve-timestep-fs {best_nve}")


def langevin_run(md, cg, x0, v0, h, args) -> dict:
    """A BAOAB run of ``md`` from (x0, v0): <U>/bead ("pe") and its block error, <T_kin>, the RDF and
    ADF and the IAE between their halves (each curve's noise), (D, its block error) in 1e-5 cm^2/s,
    ms per step and wall seconds."""
    md.set_state(x0, v0)
    t0 = time.perf_counter()
    every = max(1, int(round(200 / h)))  # frames 0.2 ps apart
    xs, pes, temps = [], [], []
    try:
        md.step(int(round(2000 / h)))  # 2 ps at this timestep first
        for _ in range(int(round(args.sample_ps * 1000 / (every * h)))):
            md.step(every)
            xs.append(md.positions[0].cpu().numpy().astype(np.float64))
            pes.append(float(md.potential[0]) / len(cg.bead_masses))
            temps.append(float(md.kinetic_temperature()[0]))
    except SimulationError as err:  # this timestep is unstable: a failed row, not a failed study
        print(f"  BAOAB {h:g} fs x{md.substeps} stopped: {err}", flush=True)
        return {"status": f"stopped at {md.step_count * h / 1000:g} ps: {err}"}
    wall = time.perf_counter() - t0
    ms = 1e3 * wall / md.step_count
    xs, box = np.array(xs), np.repeat(cg.box[-1][None], len(xs), axis=0)
    halves = (slice(0, len(xs) // 2), slice(len(xs) // 2, None))
    rdf_a, rdf_b = (RDF(args.rdf_r_max_A, 160).compute(xs[s], box[s]) for s in halves)
    adf_a, adf_b = (ADF(args.adf_r_cut_A, 90).compute(xs[s], box[s]) for s in halves)
    blocks = np.array([b.mean() for b in np.array_split(np.array(pes), 4)])
    print(f"  BAOAB {h:g} fs x{md.substeps} done ({wall:.0f} s)", flush=True)
    return {"pe": float(np.mean(pes)), "pe_err": float(blocks.std(ddof=1) / 2), "T": float(np.mean(temps)),
            "rdf": RDF(args.rdf_r_max_A, 160).compute(xs, box), "adf": ADF(args.adf_r_cut_A, 90).compute(xs, box),
            "rdf_halves": integrated_absolute_error(rdf_a.bin_centers, rdf_a.rdf, rdf_b.rdf),
            "adf_halves": integrated_absolute_error(adf_a.bin_centers, adf_a.adf, adf_b.adf),
            "D": diffusion(xs, every * h * 1e-3), "ms": ms, "wall": wall, "status": "ok"}


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
