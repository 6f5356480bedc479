"""One process of all cores against one process per core, for the simulate stage's batches.

Steps one batch of ``--systems`` systems (216 beads mapped from the reference's last 300 K frame,
BAOAB 4 fs, the simulate stage's engine) for ``--steps`` steps, first in one process with every
core's threads, then ``--processes`` copies side by side with one thread each, and prints ms per
step and the steps per second of all copies over the single process's. This is what decided that
the simulate stage runs its models in ``[run] processes`` workers (bench/RESULTS.md, issue 32):

    python bench/simulate_parallel.py --model runs/study-cpu/train/fm-each-T300K-seed1.pt \\
        --reference runs/study-cpu/reference --systems 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings


def one(args) -> float:
    """ms per step of one batch here (threads as set)."""
    import numpy as np
    import torch

    from thermocg.io.records import ReferenceRun
    from thermocg.mapping import map_reference
    from thermocg.models.saved import load_model
    from thermocg.simulate.engine import Integrator, Safety, model_force_function

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    beads = map_reference(ReferenceRun.read(args.reference).frames(300.0))
    fn = model_force_function(load_model(args.model), skin_A=1.0, engine="fast")
    n = args.systems
    md = Integrator(fn, beads.bead_masses, beads.box[-1], [300.0 + 10.0 * k for k in range(n)], 4.0, 1.0,
                    seeds=range(n), safety=Safety())
    md.set_state(np.repeat(beads.positions[-1][None], n, 0))
    md.step(30)
    t = time.perf_counter()
    md.step(args.steps)
    return (time.perf_counter() - t) / args.steps * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--reference", required=True, help="a reference stage's directory (300 K among its temperatures)")
    ap.add_argument("--systems", type=int, default=1)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)  # set for the copies
    args = ap.parse_args()
    if args.threads:
        print(f"MS_PER_STEP {one(args):.3f}", flush=True)
        return
    cmd = [sys.executable, __file__, "--model", args.model, "--reference", args.reference, "--systems",
           str(args.systems), "--steps", str(args.steps)]

    def run(n, threads):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
        procs = [subprocess.Popen(cmd + ["--threads", str(threads)], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(n)]
        return [float(p.communicate()[0].split("MS_PER_STEP")[1]) for p in procs]

    cores = os.cpu_count() or 1
    single = run(1, cores)[0]
    side = run(args.processes, max(1, cores // args.processes))
    print(f"| set-up | ms per step | steps per second, all |\n|---|---|---|\n"
          f"| 1 process x {cores} threads | {single:.2f} | {1e3 / single:.1f} |\n"
          f"| {args.processes} processes x {max(1, cores // args.processes)} thread(s) | "
          f"{', '.join(f'{s:.2f}' for s in side)} | {sum(1e3 / s for s in side):.1f} |")
    print(f"throughput-ratio {sum(1e3 / s for s in side) / (1e3 / single):.2f}")


if __name__ == "__main__":
    main()
