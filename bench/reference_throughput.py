"""Reference-stage throughput: the stage's sampling loop next to bare OpenMM stepping.

Both run the same system (SPC/E water, PME, Langevin middle, 2 fs) in the same
process on the same platform, one after the other:

* bare      ``integrator.step`` only;
* stage     the reference stage's loop: steps, then per frame the state read-out,
            per-molecule energy decomposition and its check, the H5MD append and
            flush, and the OpenMM checkpoint (the functions the stage itself calls).

It also times one decomposition and one OpenMM force+energy evaluation.

    python bench/reference_throughput.py                 # 512 waters, 2-core CPU default
    python bench/reference_throughput.py --device cuda --steps 20000

Prints a table; paste it into bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.unit as u

from thermocg.config import config_from_dict
from thermocg.io.trajectory import ResumableTrajectories
from thermocg.reference import engine, sampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-molecules", type=int, default=512)
    ap.add_argument("--cutoff-A", type=float, default=9.0)
    ap.add_argument("--steps", type=int, default=5000, help="MD steps per measurement")
    ap.add_argument("--frame-interval", type=int, default=500, help="steps between frames (500 = 1 ps)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    config = config_from_dict({"reference": {"n_molecules": args.n_molecules, "cutoff_A": args.cutoff_A}})
    ref = config.reference
    top, x0 = engine.build_water_box(ref.n_molecules, ref.density_g_cm3, ref.water_model)
    system = engine.create_system(top, ref.water_model, ref.cutoff_A, ref.ewald_error_tolerance)
    box = np.full(3, ref.box_length_A)
    x0 = engine.minimize(system, x0, box)
    plat, props = engine.choose_platform(args.device, args.threads)
    integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.002 * u.picosecond)
    ctx = mm.Context(system, integ, plat, props)
    engine.set_state(ctx, x0, box_A=box)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    integ.step(200)  # warm-up (kernels, neighbour lists)
    dec = engine.decomposition_for(system, ctx, engine.molecule_index(top))
    n_frames = args.steps // args.frame_interval
    steps = n_frames * args.frame_interval

    def ns_per_day(seconds):
        return steps * 0.002e-3 / seconds * 86400

    t0 = time.perf_counter()
    for _ in range(n_frames):
        integ.step(args.frame_interval)
    ctx.getState(getEnergy=True)  # wait for the GPU
    bare = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        task = sampler.TemperatureTask(
            temperature_K=300.0, seed=1, out_dir=Path(tmp), system_xml="", initial_positions_A=x0, box_A=box,
            molecule_index=engine.molecule_index(top),
            species=np.array([a.element.atomic_number for a in top.atoms()]),
            reference=ref, config_hash="bench", config_text="")
        out = ResumableTrajectories([Path(tmp) / "bench.h5md"], Path(tmp) / "bench.chk", "bench")
        out.start(lambda part, _: sampler._new_nvt_writer(part, task, ctx, system))
        t0 = time.perf_counter()
        for _ in range(n_frames):  # what the stage does per frame, through the stage's own writer
            integ.step(args.frame_interval)
            sampler._write_frame(out, ctx, dec, ref.energy_check_rtol, "bench")
            out.save_checkpoint(lambda path: sampler._save_checkpoint(path, ctx, "bench"))
        stage = time.perf_counter() - t0
        out.close()

    s = engine.snapshot(ctx)
    dec(s.positions, s.box)
    t_dec = _median_time(lambda: dec.with_cutoff_ambiguity(s.positions, s.box), 10)
    t_force = _median_time(lambda: ctx.getState(getForces=True, getEnergy=True), 10)

    print(f"# reference-stage throughput: {args.n_molecules} SPC/E waters, PME {args.cutoff_A:g} Å, tol "
          f"{ref.ewald_error_tolerance:g}, 2 fs, frame every {args.frame_interval} steps, {steps} steps")
    print(f"# platform {ctx.getPlatform().getName()} {props}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, OpenMM {mm.__version__}")
    print()
    print("| what | value |")
    print("|---|---|")
    print(f"| bare OpenMM stepping | {ns_per_day(bare):.1f} ns/day |")
    print(f"| stage loop (frames, decomposition, H5MD, checkpoint) | {ns_per_day(stage):.1f} ns/day |")
    print(f"| overhead ratio stage/bare time | {stage / bare:.3f} |")
    print(f"| decomposition per frame | {t_dec * 1e3:.1f} ms |")
    print(f"| one OpenMM force+energy evaluation | {t_force * 1e3:.2f} ms |")
    print(f"| decomposition / force evaluation | {t_dec / t_force:.1f} x |")


def _median_time(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


if __name__ == "__main__":
    main()
