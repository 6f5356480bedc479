"""The targets file: one temperature's CG training data (bead frames, mapped forces and the
thermal-response targets), an H5MD file the targets stage writes and the train stage reads.

Its record is :class:`thermocg.io.records.TargetSet` (a file per temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thermocg.errors import DataFormatError


#: the per-bead vector targets, per-bead scalars and per-frame scalars of a targets file
_TARGET_VECTORS = ("t1", "t2", "t1_global", "t2_global", "f0")
_TARGET_SCALARS = ("u_loc", "c", "v", "u_baseline", "bead_energy")
_TARGET_GLOBALS = ("u_global", "c_global")
#: optional: standard errors of the order-0, 1, 2 targets (restrained targets; usable as loss weights)
_TARGET_ERRORS = ("t0_se", "t1_se", "t2_se")
#: optional: a restrained file's regression thermal targets too (local r_e, THEORY.md §3), for the
#: trf1-regression and trf2-regression variants
_TARGET_REGRESSION = ("t1_regression", "t2_regression")


@dataclass(frozen=True)
class TargetFrames:
    """CG training data at one temperature: bead frames and their thermal-response targets.

    positions (F, N, 3) Å; forces (F, N, 3) the mapped forces (order-0 target), kcal/(mol Å);
    box (F, 3) Å; potential_energy (F,) kcal/mol; bead_masses (N,) amu; step (F,);
    ``targets``: t1, t2 (local, order 1 and centred order 2), t1_global, t2_global, f0 (F, N, 3);
    u_loc, c, v, u_baseline, bead_energy (F, N); u_global, c_global (F,); optionally t0_se,
    t1_se, t2_se (F, N, 3), the standard errors of restrained targets, and t1_regression,
    t2_regression (F, N, 3), a restrained file's regression targets; ``attrs``: r_e_A,
    baseline (or method), summary and provenance; bead_type (N,) 0 .. len(bead_types) - 1 and the
    type names (None: one type; the file's species and its "bead_types" attribute). Units: t1
    kcal² mol⁻² Å⁻¹, t2 kcal³ mol⁻³ Å⁻¹.
    """

    temperature_K: float
    positions: np.ndarray
    forces: np.ndarray
    box: np.ndarray
    potential_energy: np.ndarray
    bead_masses: np.ndarray
    step: np.ndarray
    targets: dict[str, np.ndarray]
    attrs: dict = field(default_factory=dict)
    bead_type: np.ndarray | None = None
    bead_types: tuple[str, ...] = ("molecule",)

    def __post_init__(self):
        from thermocg.frames import check_types
        object.__setattr__(self, "bead_type", check_types(self.bead_type, self.bead_types, self.positions.shape[1],
                                                          "targets", "bead_type"))

    def write(self, path: Path, creator_version: str) -> None:
        """Write to ``path`` (temporary name, renamed when complete)."""
        from thermocg import units
        from thermocg.io.h5md import H5MDWriter
        from thermocg.stagedir import atomic_path

        n = self.positions.shape[1]
        f1_unit, f2_unit = "kcal2 mol-2 Angstrom-1", "kcal3 mol-3 Angstrom-1"  # F1 = dF/dbeta: force x energy
        vec_units = {"t1": f1_unit, "t2": f2_unit, "t1_global": f1_unit, "t2_global": f2_unit, "f0": units.FORCE,
                     "t0_se": units.FORCE, "t1_se": f1_unit, "t2_se": f2_unit, "t1_regression": f1_unit,
                     "t2_regression": f2_unit}
        extras = {name: ((n, 3), vec_units[name]) for name in _TARGET_VECTORS}
        extras.update({name: ((n, 3), vec_units[name]) for name in (*_TARGET_ERRORS, *_TARGET_REGRESSION)
                       if name in self.targets})
        extras.update({name: ((n,), "kcal2 mol-2" if name == "v" else units.ENERGY) for name in _TARGET_SCALARS})
        extras.update({name: ((), units.ENERGY) for name in _TARGET_GLOBALS})
        missing = set(extras) - set(self.targets)
        if missing:
            raise ValueError(f"{path}: targets {sorted(missing)} are missing")
        attrs = {"temperature_K": self.temperature_K, "beta_mol_per_kcal": 1.0 / (units.KB * self.temperature_K),
                 **self.attrs, "bead_types": list(self.bead_types)}
        with atomic_path(path, ".part") as tmp, H5MDWriter(
                tmp, species=self.bead_type.astype(np.int32), mass=self.bead_masses,
                particle_fields=("position", "force"), observables={"potential_energy": ((), units.ENERGY)},
                extras=extras, attrs=attrs, creator_version=creator_version) as w:
            for k in range(self.positions.shape[0]):
                frame = {"particles/all/position": self.positions[k], "particles/all/force": self.forces[k],
                         "particles/all/box/edges": self.box[k],
                         "observables/potential_energy": self.potential_energy[k]}
                frame.update({f"thermocg/{name}": self.targets[name][k] for name in extras})
                w.append(int(self.step[k]), float(k), frame)
            w.flush()

    @classmethod
    def read(cls, path, frames: slice | None = None) -> "TargetFrames":
        """Read a targets file (all frames, or ``frames``)."""
        from thermocg.io.h5md import read_h5md

        d = read_h5md(path, frames=frames)
        el = d.elements
        try:
            targets = {name: el[f"thermocg/{name}"] for name in (*_TARGET_VECTORS, *_TARGET_SCALARS,
                                                                  *_TARGET_GLOBALS)}
            targets.update({name: el[f"thermocg/{name}"] for name in (*_TARGET_ERRORS, *_TARGET_REGRESSION)
                            if f"thermocg/{name}" in el})
            return cls(temperature_K=float(d.attrs["temperature_K"]), positions=el["particles/all/position"],
                       forces=el["particles/all/force"], box=el["particles/all/box/edges"],
                       potential_energy=el["observables/potential_energy"], bead_masses=d.particles["mass"],
                       step=d.step, targets=targets, attrs=d.attrs, bead_type=d.particles["species"],
                       bead_types=tuple(d.attrs.get("bead_types", ("molecule",))))
        except KeyError as err:
            raise DataFormatError(f"{path}: missing {err}; not a targets-stage file") from err


