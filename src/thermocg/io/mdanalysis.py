"""thermocg's H5MD files as MDAnalysis Universes, with their frame interval.

MDAnalysis reads H5MD, but its reader sets no frame interval and assumes 1 ps (MDAnalysis issue
#2825, "Reader has no dt information, set to 1.0 ps"): an ``EinsteinMSD`` on an NVE segment
written every 50 fs then gives a D 20 times too small. :func:`universe` reads the interval from
the file's own time stamps and passes it on; it is the one line a user would otherwise have to
know to write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def frame_interval_ps(path) -> float:
    """The interval between the frames of an H5MD file (ps), from its position time stamps;
    a file whose frames are not evenly spaced is refused (an MSD needs one interval)."""
    import h5py

    with h5py.File(path, "r") as fh:
        time = np.asarray(fh["particles/all/position/time"][:], dtype=np.float64)
    if len(time) < 2:
        raise ValueError(f"{path}: {len(time)} frame(s): no interval between frames")
    step = np.diff(time)
    if np.ptp(step) > 1e-6 * abs(step.mean()) or step.mean() <= 0:
        raise ValueError(f"{path}: frames are not evenly spaced in time ({step.min():g} .. {step.max():g} ps)")
    return float(step.mean())


def universe(path, topology=None):
    """An ``MDAnalysis.Universe`` of a thermocg H5MD file (a reference, targets or CG trajectory),
    its ``dt`` the file's frame interval. ``topology``: a PDB; default the one beside the file
    (``beads.pdb`` of the simulate stage, ``system.pdb`` of the reference stage)."""
    import MDAnalysis as mda

    path = Path(path)
    if topology is None:
        found = [path.parent / name for name in ("beads.pdb", "system.pdb") if (path.parent / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{path.parent}: no beads.pdb or system.pdb beside {path.name}; pass topology")
        topology = found[0]
    return mda.Universe(str(topology), str(path), dt=frame_interval_ps(path))
