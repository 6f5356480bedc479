"""Cost of a CG MD step against the number of beads, 216 to 32 768: it must grow linearly.

Liquid configurations: SPC/E boxes of 216 and 512 waters equilibrated by OpenMM (as
bench/cg_md.py makes them), mapped to their centres of mass and tiled k x k x k times
(216, 512, 1728, 4096, 13 824, 32 768 beads). Each is stepped by the simulate stage's
default engine (the inference form, BAOAB at 4 fs, skin 1 Å, the safety check every 10
steps) with a trained model; the time per step is the median of interleaved blocks.
Linear cost means a constant time per bead per step: the table prints it, and the last
line the ratio of the largest system's to the smallest's.

    python bench/cg_scaling.py --model runs/quick/train/trf2.pt
    python bench/cg_scaling.py --model MODEL.pt --device cuda

Prints a table; record it in bench/RESULTS.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cg_md import CG_TIMESTEP_FS, all_atom, setup  # noqa: E402  (the same liquid set-up)

from thermocg.models.saved import load_model  # noqa: E402
from thermocg.simulate.engine import Integrator, Safety, model_force_function  # noqa: E402


def tiled(x: np.ndarray, box: np.ndarray, k: int):
    """x (N, 3) in a box (3,) repeated k times along each axis: (k^3 N, 3), k box."""
    shifts = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3) * box
    return (x[None] + shifts[:, None]).reshape(-1, 3), box * k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="a model saved by `thermocg train`")
    ap.add_argument("--sizes", default="216:1,512:1,216:2,512:2,216:4,512:4",
                    help="base box:tiles per axis, comma-separated (216:2 = 1728 beads)")
    ap.add_argument("--bead-steps", type=float, default=2e5, help="beads x steps per timed block")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    device, sync = setup(args)
    model = load_model(args.model, device=str(device))

    boxes = {}
    runs = []  # (beads, steps per block, integrator)
    for item in args.sizes.split(","):
        base, k = (int(v) for v in item.split(":"))
        if base not in boxes:
            _, _, x, box, masses = all_atom(base, 10, args.device, args.threads)
            boxes[base] = (x, box, masses)
        x, box, masses = boxes[base]
        xt, bt = tiled(x, box, k)
        md = Integrator(model_force_function(model, skin_A=1.0), np.tile(masses, k ** 3), bt, [300.0],
                        CG_TIMESTEP_FS, 1.0, seeds=[1], device=device, safety=Safety())
        md.set_state(xt[None])
        md.step(10)
        sync()
        runs.append((len(xt), max(10, int(round(args.bead_steps / len(xt)))), md))
    times = {n: [] for n, _, _ in runs}
    for _ in range(args.rounds):
        for n, steps, md in runs:
            t0 = time.perf_counter()
            md.step(steps)
            sync()
            times[n].append((time.perf_counter() - t0) / steps)

    print(f"# CG MD cost against size: model {args.model} ({model.metadata.get('variant', '?')}), "
          f"inference form, {CG_TIMESTEP_FS:g} fs BAOAB, skin 1 Å, safety check every 10 steps")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({device}, {torch.get_num_threads()} threads); median of {args.rounds} interleaved blocks")
    print()
    print("| beads | ms per step | µs per bead per step | ns/day |")
    print("|---|---|---|---|")
    per_bead = {}
    for n, _, _ in sorted(runs, key=lambda r: r[0]):
        t = float(np.median(times[n]))
        per_bead[n] = t / n
        print(f"| {n} | {t * 1e3:.2f} | {t / n * 1e6:.2f} | {CG_TIMESTEP_FS * 1e-6 / t * 86400:.2f} |")
    print()
    lo, hi = min(per_bead), max(per_bead)
    print(f"per-bead cost, {hi} beads over {lo} beads: {per_bead[hi] / per_bead[lo]:.2f}")


if __name__ == "__main__":
    main()
