"""How long must CG MD run for a structural error to be resolved? (issue 29)

For each simulated model and temperature of a finished run (reference and simulate stages), the
RDF and ADF IAE against the all-atom reference and the noise floor of that IAE
(:func:`thermocg.evaluate.stage.iae_floor`: from the halves of the model's frames and of the
reference's) are computed on the first 1/8, 1/4, 1/2 and all of the model's Langevin frames. The
floor falls as one over the square root of the frames while they are independent; the IAE falls to
the model's own error plus what is left of the floor. The study's rule: at 250 K and 700 K the
floor must be at most a quarter of fm's IAE. The last column says how many frames (at this
spacing) would meet it, extrapolating the floor as 1/sqrt(frames) from the full run.

    thermocg simulate bench/configs/noise-floor.toml        # fm at 250 K and 700 K, long runs
    python bench/noise_floor.py bench/configs/noise-floor.toml

Writes ``--out`` (JSON) and prints a table; record it in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a config with finished reference and simulate stages")
    ap.add_argument("--fractions", default="0.125,0.25,0.5,1", help="fractions of the CG frames, comma-separated")
    ap.add_argument("--out", default="bench/results/noise_floor.json")
    args = ap.parse_args()

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.evaluate.stage import Structure
    from thermocg.io.h5md import read_h5md
    from thermocg.stagedir import atomic_write_text

    config = load_config(args.config)
    reference, trajectories = pipeline.read(config, "reference"), pipeline.read(config, "simulate")
    fractions = [float(f) for f in args.fractions.split(",")]
    start, rows, refs = time.monotonic(), [], {}
    for model in trajectories.models:
        for t in trajectories.temperatures(model):
            if t not in refs:
                cg = reference.cg_frames(t)
                refs[t] = Structure(config, cg.positions, cg.box)
            d = read_h5md(trajectories.nvt_path(model, t))
            x, box = d.elements["particles/all/position"], d.elements["particles/all/box/edges"]
            for frac in fractions:
                n = max(2, int(round(frac * len(x))))
                s = Structure(config, x[:n], box[:n]).summary(refs[t])
                row = {"model": model, "temperature_K": t, "frames": n,
                       "span_ps": n * config.simulate.frame_interval_ps}
                for name in ("rdf", "adf"):
                    iae, floor = s[f"{name}_iae"]["value"], s[f"{name}_iae_floor"]
                    row[name] = {"iae": iae, "floor": floor, "halves": s[f"{name}_halves_iae"],
                                 "reference_halves": refs[t].halves[name]}
                    # the frames at which the floor would be a quarter of the IAE's excess over it
                    # (the model's own error), the floor scaling as 1/sqrt(frames) from here
                    own = max(iae - floor, 0.0)
                    row[name]["frames_for_quarter"] = (None if own == 0 else
                                                       float(n * (floor / (own / 4)) ** 2))
                rows.append(row)
    print("| model | T (K) | frames | span (ps) | RDF IAE | RDF floor | RDF halves (model, ref) | ADF IAE | "
          "ADF floor | frames for floor <= IAE/4 (RDF) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        q = r["rdf"]["frames_for_quarter"]
        print(f"| {r['model']} | {r['temperature_K']:g} | {r['frames']} | {r['span_ps']:.0f} | {r['rdf']['iae']:.3f} | "
              f"{r['rdf']['floor']:.3f} | {r['rdf']['halves']:.3f}, {r['rdf']['reference_halves']:.3f} | "
              f"{r['adf']['iae']:.3f} | {r['adf']['floor']:.3f} | {'-' if q is None else f'{q:.0f}'} |")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"config": args.config, "command": "python bench/noise_floor.py " + args.config, "commit": commit,
           "machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": time.monotonic() - start,
           "frame_interval_ps": config.simulate.frame_interval_ps, "rows": rows}
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
