"""Restrained-bead targets on water (issue 15): how fast do the hidden degrees of freedom
decorrelate at fixed centres of mass, and how does the per-configuration error of each order
fall with the restrained time?

For ``--configs`` frames of a finished reference run (the first training frames at each
``--temperatures``), every centre of mass is put on a spring (``--k``, kcal/mol/Å²) and
``--samples`` samples are taken ``--interval-fs`` apart after ``--equilibration-fs``
(:class:`thermocg.reference.restrained.RestrainedSampler`). Per temperature it prints:

* the integrated autocorrelation times of the mapped force f_I and of the local energy
  u_loc,I at fixed R (fs), averaged over beads;
* per-configuration signal-to-noise of each order as the restrained time grows: the rms of
  the estimate over beads with its noise removed (``sqrt(<est^2> - <se^2>)``, 0 when
  negative) over the rms jackknife error; errors from
  :func:`thermocg.targets.restrained.conditional_moments`;
* beside it, the per-frame SNR of the regression targets of the same run's targets stage
  (``order1``/``order2`` ``snr_per_sample``), the number issue 15 asks to beat by 5x.

    python bench/restrained_targets.py examples/study-cpu.toml --temperatures 300 --configs 4

Writes ``--out`` (JSON). Record the table in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def autocorrelation_time(series: np.ndarray, dt: float) -> float:
    """Integrated autocorrelation time of (K, ...) series averaged over the trailing axes, in the
    units of ``dt`` (Sokal's window at the first negative value; bench/frame_spacing.py)."""
    from frame_spacing import acf, integrated_time  # bench/: one ACF for both scripts

    return integrated_time(acf(series, len(series) - 1), dt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--temperatures", default="300", help="K, comma-separated (reference temperatures)")
    ap.add_argument("--configs", type=int, default=4)
    ap.add_argument("--k", type=float, default=1000.0, help="spring constant, kcal/mol/Å²")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--interval-fs", type=float, default=10.0)
    ap.add_argument("--equilibration-fs", type=float, default=1000.0)
    ap.add_argument("--timestep-fs", type=float, default=2.0)
    ap.add_argument("--out", default="bench/results/restrained_targets.json")
    ap.add_argument("--save-samples", default=None, metavar="DIR",
                    help="also keep every configuration's raw samples (forces, molecule energies, offsets) "
                         "as DIR/<T>-k<k>-c<i>.npz, for other estimators (bench/restrained_bias.py)")
    args = ap.parse_args()

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.labels import temperature_label
    from thermocg.reference.restrained import RestrainedSampler
    from thermocg.stagedir import atomic_write_text
    from thermocg.targets.local import neighbour_matrix
    from thermocg.targets.restrained import conditional_moments

    config = load_config(args.config)
    ref = pipeline.read(config, "reference")
    system_xml = (ref.directory / "system.xml").read_text()
    try:
        regression = pipeline.read(config, "targets")
        reg_summary = {t: regression.frames(t, slice(0, 1)).attrs["summary"] for t in config.reference.temperatures_K}
    except Exception as err:  # noqa: BLE001 - the comparison is optional
        print(f"(no regression targets to compare with: {err})")
        reg_summary = {}
    r_e = config.targets.r_e_A
    results = {"machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
               "args": vars(args), "r_e_A": r_e, "temperatures": {}}
    for temp in (float(t) for t in args.temperatures.split(",")):
        frames = ref.frames(temp)
        sampler = RestrainedSampler(system_xml, frames.molecule_index, temp, args.k, args.timestep_fs,
                                    config.reference.friction_per_ps, device=config.run.device)
        taus, per_k = {"f": [], "u_loc": []}, {}
        start = time.perf_counter()
        for c in range(args.configs):
            s = sampler.sample(frames.positions[c], frames.box[c], args.equilibration_fs, args.samples,
                               args.interval_fs, seed=1000 + c, where=f"restrained {temperature_label(temp)} #{c}")
            u = (neighbour_matrix(s.centres, s.box, r_e) @ s.molecule_energies.T).T
            if args.save_samples:
                os.makedirs(args.save_samples, exist_ok=True)
                np.savez(os.path.join(args.save_samples, f"{temperature_label(temp)}-k{args.k:g}-c{c}.npz"),
                         forces=s.forces, molecule_energies=s.molecule_energies, offsets=s.offsets,
                         centres=s.centres, box=s.box, k=args.k, temperature_K=temp, interval_fs=args.interval_fs)
            taus["f"].append(autocorrelation_time(s.forces, args.interval_fs))
            taus["u_loc"].append(autocorrelation_time(u, args.interval_fs))
            for k in sorted({args.samples // 8, args.samples // 4, args.samples // 2, args.samples}):
                m = conditional_moments(s.forces[:k], u[:k], blocks=min(10, k // 3))
                row = per_k.setdefault(k, {o: [] for o in ("F", "F1", "F2")})
                for name, est, se in (("F", m.F, m.F_se), ("F1", m.F1, m.F1_se), ("F2", m.F2, m.F2_se)):
                    signal = np.sqrt(max(np.mean(est**2) - np.mean(se**2), 0.0))
                    row[name].append((float(signal), float(np.sqrt(np.mean(se**2)))))
        seconds = time.perf_counter() - start
        reg = reg_summary.get(temp, {})
        out = {"tau_fs": {k: float(np.mean(v)) for k, v in taus.items()}, "seconds": seconds,
               "md_ps_per_config": (args.equilibration_fs + args.samples * args.interval_fs) / 1000,
               "regression_snr_per_sample": {o: reg.get(f"order{o}", {}).get("snr_per_sample") for o in (1, 2)},
               "by_samples": {}}
        print(f"\n{temperature_label(temp)}: {args.configs} configurations, k = {args.k:g} kcal/mol/Å², samples "
              f"{args.interval_fs:g} fs apart after {args.equilibration_fs:g} fs; {seconds:.0f} s "
              f"({seconds / args.configs:.0f} s per configuration)")
        print(f"integrated autocorrelation time at fixed R: f {out['tau_fs']['f']:.0f} fs, "
              f"u_loc {out['tau_fs']['u_loc']:.0f} fs")
        print(f"{'samples':>8}{'ps':>7}" + "".join(f"{o + ' signal':>12}{o + ' error':>11}{o + ' SNR':>9}"
                                                   for o in ("F", "F1", "F2")))
        for k, row in per_k.items():
            cells, rec = "", {}
            for o in ("F", "F1", "F2"):
                sig = float(np.mean([a for a, _ in row[o]]))
                err = float(np.mean([b for _, b in row[o]]))
                rec[o] = {"signal_rms": sig, "error_rms": err, "snr": sig / err if err else None}
                cells += f"{sig:>12.3g}{err:>11.3g}{sig / err:>9.2f}"
            out["by_samples"][str(k)] = rec
            print(f"{k:>8}{k * args.interval_fs / 1000:>7.2f}{cells}")
        snr = out["regression_snr_per_sample"]
        print(f"regression targets of this run, per frame: order-1 SNR {snr[1]}, order-2 SNR {snr[2]}")
        results["temperatures"][temperature_label(temp)] = out
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
