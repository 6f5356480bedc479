"""The frames container: all-atom reference frames as the later stages read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from thermocg.errors import DataFormatError
from thermocg.io.h5md import read_h5md


@dataclass(frozen=True)
class ReferenceFrames:
    """All-atom frames at one temperature, validated on construction.

    Attributes
    ----------
    positions : (F, N, 3) Å, unwrapped (molecules whole)
    velocities : (F, N, 3) Å/ps, or None (imported frames without velocities)
    forces : (F, N, 3) kcal/(mol Å), atomic forces without constraint forces
    box : (F, 3) Å, orthorhombic box edges
    potential_energy : (F,) kcal/mol, the engine's total
    molecule_energy : (F, N_mol) kcal/mol, per-molecule energies ``u_J`` (sum = potential energy)
    molecule_index : (N,) molecule of each atom
    masses : (N,) amu;  species : (N,) atomic numbers
    temperature_K : float
    step : (F,) MD step of each frame
    source : file the frames came from
    molecule_type : (N_mol,) bead type of each molecule, 0 .. len(bead_types) - 1 (None: all 0)
    bead_types : the type names (one per residue name or molecular formula)
    """

    positions: np.ndarray
    velocities: np.ndarray | None
    forces: np.ndarray
    box: np.ndarray
    potential_energy: np.ndarray
    molecule_energy: np.ndarray
    molecule_index: np.ndarray
    masses: np.ndarray
    species: np.ndarray
    temperature_K: float
    step: np.ndarray
    source: Path | None = None
    metadata: dict = field(default_factory=dict)
    molecule_type: np.ndarray | None = None
    bead_types: tuple[str, ...] = ("molecule",)

    def __post_init__(self):
        where = str(self.source) if self.source else "frames"
        n_mol = int(self.molecule_index.max()) + 1 if len(self.molecule_index) else 0
        object.__setattr__(self, "molecule_type", check_types(self.molecule_type, self.bead_types, n_mol, where,
                                                              "molecule_type"))
        f, n = self.positions.shape[:2] if self.positions.ndim == 3 else (None, None)
        if f is None or self.positions.shape[2] != 3:
            raise DataFormatError(f"{where}: positions have shape {self.positions.shape}, expected (F, N, 3)")
        n_mol = int(self.molecule_index.max()) + 1 if len(self.molecule_index) else 0
        expect = {"velocities": (f, n, 3), "forces": (f, n, 3), "box": (f, 3), "potential_energy": (f,),
                  "molecule_energy": (f, n_mol), "molecule_index": (n,), "masses": (n,), "species": (n,),
                  "step": (f,)}
        if self.velocities is None:
            del expect["velocities"]
        for name, shape in expect.items():
            found = getattr(self, name).shape
            if found != shape:
                raise DataFormatError(f"{where}: {name} has shape {found}, expected {shape}")
        for name in ("positions", "velocities", "forces", "box", "potential_energy", "molecule_energy"):
            if getattr(self, name) is None:
                continue
            bad = ~np.isfinite(getattr(self, name))
            if bad.any():
                frame = int(np.argwhere(bad)[0][0])
                raise DataFormatError(f"{where}: {name} is not finite in frame {frame}")
        if np.any(self.box <= 0):
            frame = int(np.argwhere(self.box <= 0)[0][0])
            raise DataFormatError(f"{where}: box edges must be positive, found {self.box[frame].tolist()} Å in "
                                  f"frame {frame}")
        if not self.temperature_K > 0:
            raise DataFormatError(f"{where}: temperature_K must be > 0, found {self.temperature_K}")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_molecules(self) -> int:
        return self.molecule_energy.shape[1]


def check_types(types, names, n: int, where: str, what: str) -> np.ndarray:
    """``types`` (n,) as int64 (None: every item of type 0), each naming one of ``names``."""
    types = np.zeros(n, dtype=np.int64) if types is None else np.asarray(types, dtype=np.int64)
    if types.shape != (n,):
        raise DataFormatError(f"{where}: {what} has shape {types.shape}, expected ({n},)")
    if n and (types.min() < 0 or types.max() >= len(names)):
        raise DataFormatError(f"{where}: {what} holds types {sorted(set(types.tolist()))}, but there are "
                              f"{len(names)} type names {list(names)}")
    return types


def read_reference(path) -> ReferenceFrames:
    """Read a reference-stage file (``T300K.h5md``) into a :class:`ReferenceFrames`."""
    d = read_h5md(path)
    try:
        return ReferenceFrames(
            positions=d.elements["particles/all/position"], velocities=d.elements.get("particles/all/velocity"),
            forces=d.elements["particles/all/force"], box=d.elements["particles/all/box/edges"],
            potential_energy=d.elements["observables/potential_energy"],
            molecule_energy=d.elements["thermocg/molecule_energy"], molecule_index=d.static["molecule_index"],
            masses=d.particles["mass"], species=d.particles["species"],
            temperature_K=float(d.attrs["temperature_K"]), step=d.step, source=Path(path), metadata=d.attrs,
            # files before bead types (issue 17) hold one kind of molecule
            molecule_type=d.static.get("molecule_type"), bead_types=tuple(d.attrs.get("bead_types", ("molecule",))))
    except KeyError as err:
        raise DataFormatError(f"{path}: missing {err}; not a reference-stage file") from err
