"""The user's own all-atom frames as the reference stage (``[reference] source = "files"``).

Every later stage reads the reference stage's H5MD files (``T300K.h5md``, ``T300K-nve00.h5md``)
and nothing else of it, so frames from anywhere can feed the method once they are written in
that form with what the thermal targets need: positions, atomic forces, the total potential
energy and the per-molecule energies u_J (THEORY.md §2), which here are the sums of per-atom
energies over each molecule's atoms. Reading is ASE's (``ase.io.iread``: extended XYZ with a
SinglePointCalculator's ``energy``, ``forces`` and per-atom ``energies``); what is ours is the
checks a careful user would make before trusting a month of their data to a fit:

* every frame has forces, a total energy, per-atom energies and molecule ids, and the same
  atoms and molecules in the same order as the first;
* the per-atom energies sum to the total energy (``energy_check_rtol``, as the OpenMM
  decomposition is held to): otherwise u_J is not a decomposition of the energy, and the
  thermal targets built from it are wrong;
* the box is orthorhombic and periodic, and every cutoff of the config is below half of it;
* a molecule spans less than half the box, so it can be made whole by the minimum image.
* in an NVE segment with forces and frames at most 40 fs apart, the centres of mass accelerate
  as their forces say (:func:`check_units`): energies in another unit than ``energy_unit``, or
  frames at another spacing than ``nve.frame_interval_fs``, would scale every energy, force or D
  downstream without a word.

Units: the files' energies are in ``energy_unit`` (ASE's eV by default), forces in that unit
per Å; velocities, where present, in ASE's unit (Å per ASE time unit), as ASE writes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from thermocg import __version__, units
from thermocg.errors import ConfigError, DataFormatError
from thermocg.geometry import minimum_image
from thermocg.io.h5md import H5MDWriter

log = logging.getLogger(__name__)

#: the per-atom molecule id columns read, in this order (ASE's LAMMPS readers write "mol-id")
MOLECULE_KEYS = ("mol-id", "molecule_id")
_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".lammpstrj": "lammps-dump", ".dump": "lammps-dump"}


def energy_factor(unit: str) -> float:
    """kcal/mol per ``unit`` (ASE's own constants, so eV agrees with ASE to the last digit)."""
    import ase.units as au

    kcal_mol = au.kcal / au.mol  # in eV
    return {"eV": 1.0 / kcal_mol, "kcal/mol": 1.0, "kJ/mol": (au.kJ / au.mol) / kcal_mol}[unit]


def file_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(f"{path}: cannot tell the format from the suffix {path.suffix!r} (known: "
                          f"{', '.join(sorted(_FORMATS))}); set [reference] format") from None


@dataclass(frozen=True)
class ImportedFrames:
    """Frames read from a user's file, in thermocg's units, molecules whole."""

    positions: np.ndarray  # (F, N, 3) Å
    forces: np.ndarray | None  # (F, N, 3) kcal/mol/Å; an NVE segment's: None when its file has none
    box: np.ndarray  # (F, 3) Å
    potential_energy: np.ndarray  # (F,) kcal/mol
    molecule_energy: np.ndarray  # (F, M) kcal/mol
    molecule_index: np.ndarray  # (N,) 0 .. M-1, in order of first appearance
    masses: np.ndarray  # (N,) amu
    species: np.ndarray  # (N,) atomic numbers
    velocities: np.ndarray | None  # (F, N, 3) Å/ps
    max_decomposition_rel_error: float

    @cached_property
    def _types(self) -> tuple[np.ndarray, tuple[str, ...]]:
        return molecule_types(self.species, self.molecule_index)

    @property
    def static(self) -> dict:
        """What the H5MD files hold fixed in time: each atom's molecule, each molecule's bead type."""
        return {"molecule_index": self.molecule_index, "molecule_type": self._types[0]}

    @property
    def bead_types(self) -> tuple[str, ...]:
        return self._types[1]


@dataclass(frozen=True)
class Reader:
    """How to read a user's files: ``[reference]``'s format keys (``from_config``)."""

    format: str = "auto"
    energy_unit: str = "eV"
    lammps_data: Path | None = None
    lammps_atom_style: str = "full"
    lammps_pe_atom: str = "c_pe"
    lammps_pe_total: str = "v_pe"

    @classmethod
    def from_config(cls, config) -> "Reader":
        r = config.reference
        return cls(r.format, r.energy_unit, None if r.lammps_data is None else config.path(r.lammps_data),
                   r.lammps_atom_style, r.lammps_pe_atom, r.lammps_pe_total)


def read_frames(path: Path, n_frames: int, reader: Reader = Reader(), rtol: float = 1e-5,
                require_energies: bool = True) -> ImportedFrames:
    """The first ``n_frames`` frames of ``path`` (all of them with ``n_frames = 0``), checked
    (module docstring). ``require_energies=False`` (NVE segments, for the MSD): energies are not
    read, forces are kept when every frame has them (for :func:`check_units`), and the positions are unwrapped in time (each atom's step from one
    frame to the next by the minimum image: frames must be close enough in time that no atom
    moves half the box between them)."""
    import ase.io
    import ase.units as au

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file ([[reference.data]])")
    fmt = file_format(path, reader.format)
    extract = _lammps(path, reader) if fmt == "lammps-dump" else _extxyz(reader)
    first, rows = None, {"x": [], "f": [], "box": [], "e": [], "u": [], "v": []}
    try:
        frames = ase.io.iread(path, index=f":{n_frames}" if n_frames else ":",
                              **({"format": "lammps-dump-text", "units": _LAMMPS_UNITS[reader.energy_unit]}
                                 if fmt == "lammps-dump" else {"format": fmt}))
        for k, atoms in enumerate(frames):
            where = f"{path}: frame {k}"
            numbers, mol, masses, energies = extract(atoms, where, require_energies)
            if first is None:
                first = (numbers, mol, masses)
            elif not (np.array_equal(numbers, first[0]) and np.array_equal(mol, first[1])):
                raise DataFormatError(f"{where}: its atoms or molecule ids differ from frame 0's (every frame must "
                                      "hold the same atoms in the same order)")
            rows["box"].append(_orthorhombic_box(atoms, where))
            rows["x"].append(atoms.positions.copy())
            rows["v"].append(atoms.get_velocities() * au.fs * 1000.0 if atoms.has("momenta") else None)
            if require_energies:
                for key, value in zip("feu", energies):
                    rows[key].append(value)
            else:  # an NVE segment: its forces when every frame has them
                rows["f"].append(None if energies is None else energies[0])
    except (DataFormatError, ConfigError):
        raise
    except Exception as err:  # ASE's parsers raise anything from ValueError to IndexError on a bad file
        raise DataFormatError(f"{path}: cannot be read as {fmt} ({type(err).__name__}: {err})") from err
    n = len(rows["x"])
    if n == 0 or (n_frames and n < n_frames):
        raise DataFormatError(f"{path}: {n} frame(s), but reference.n_frames = {n_frames} are needed")
    numbers, mol_ids, masses = first
    index = _renumber(mol_ids)
    box = np.array(rows["box"])
    x = _whole(np.array(rows["x"]), box, index, path)
    if not require_energies:
        x = x[:1] + np.concatenate([np.zeros_like(x[:1]), np.cumsum(minimum_image(np.diff(x, axis=0),
                                                                                  box[1:, None, :]), axis=0)])
    v = None if any(r is None for r in rows["v"]) else np.array(rows["v"])
    if require_energies:
        energies = np.array(rows["e"])
        m = int(index.max()) + 1
        u_mol = np.zeros((n, m))
        np.add.at(u_mol.T, index, np.array(rows["u"]).T)  # per-atom -> per-molecule energies
        err = np.abs(u_mol.sum(axis=1) - energies)
        bad = np.flatnonzero(err > rtol * np.abs(energies))
        if len(bad):
            k = int(bad[0])
            raise DataFormatError(
                f"{path}: frame {k}: the per-atom energies sum to {u_mol[k].sum():.6f} kcal/mol but the total "
                f"energy is {energies[k]:.6f} (relative error {err[k] / abs(energies[k]):.2e} > energy_check_rtol "
                f"{rtol:g}; {len(bad)} frame(s) off): the per-molecule energies must decompose the total (for "
                "LAMMPS: compute pe/atom with kspace included)")
        worst = float(np.max(err / np.abs(energies)))
        forces = np.array(rows["f"])
    else:
        energies, u_mol, worst = None, None, float("nan")
        forces = None if any(f is None for f in rows["f"]) else np.array(rows["f"])
    return ImportedFrames(positions=x, forces=forces, box=box, potential_energy=energies, molecule_energy=u_mol,
                          molecule_index=index, masses=np.asarray(masses, dtype=np.float64),
                          species=numbers.astype(np.int32), velocities=v, max_decomposition_rel_error=worst)


def _extxyz(reader: Reader):
    """Per frame of an extended XYZ file: atomic numbers, molecule ids, masses, and forces, total and
    per-atom energies in kcal/mol (ASE's SinglePointCalculator results)."""
    to_kcal = energy_factor(reader.energy_unit)

    def extract(atoms, where, require_energies):
        energies = None
        if require_energies:
            energies = tuple(x * to_kcal for x in _energies(atoms, where))
        elif _has_forces(atoms):  # an NVE segment's forces: for the unit check
            energies = (np.asarray(atoms.calc.results["forces"], dtype=np.float64) * to_kcal, None, None)
        return atoms.numbers.copy(), _molecule_ids(atoms, where), atoms.get_masses(), energies

    return extract


#: LAMMPS unit styles by the energy unit they imply (positions in Å in both)
_LAMMPS_UNITS = {"kcal/mol": "real", "eV": "metal"}


#: LAMMPS data file sections and the header count that gives their number of lines
_DATA_COUNTS = {"Masses": "atom types", "Atoms": "atoms", "Velocities": "atoms", "Bonds": "bonds",
                "Angles": "angles", "Dihedrals": "dihedrals", "Impropers": "impropers"}


def _short_data_section(path) -> str | None:
    """Why a LAMMPS data file cannot be read, when a section holds fewer lines than its header
    count says (a file cut short): None when the counts agree."""
    try:
        lines = [line.split("#")[0].strip() for line in Path(path).read_text().splitlines()]
    except (OSError, UnicodeDecodeError):
        return None
    counts = {}
    for line in lines:
        for key in set(_DATA_COUNTS.values()):
            parts = line.split()
            if len(parts) == len(key.split()) + 1 and " ".join(parts[1:]) == key and parts[0].isdigit():
                counts[key] = int(parts[0])
    for k, line in enumerate(lines):
        name = line.split()[0] if line else ""
        if name in _DATA_COUNTS and counts.get(_DATA_COUNTS[name]):
            want = counts[_DATA_COUNTS[name]]
            body, j = 0, k + 1
            while j < len(lines) and not lines[j]:
                j += 1
            while j < len(lines) and lines[j] and lines[j].split()[0] not in _DATA_COUNTS:
                body, j = body + 1, j + 1
            if body < want:
                return (f"the {name} section has {body} line(s), but the header says {want} "
                        f"{_DATA_COUNTS[name]} (a file cut short?)")
    return None


def _lammps(path: Path, reader: Reader):
    """Per frame of a LAMMPS text dump: elements, masses and molecule ids from the data file
    (``lammps_data``: the dump's types alone do not say which element an atom is), forces as
    ASE converts them (eV/Å), the per-atom energies from the ``lammps_pe_atom`` column (compute
    pe/atom) and the total from ``lammps_pe_total`` (an atom-style variable holding the global
    pe, the same on every atom), in the LAMMPS unit style's energy unit."""
    import ase.io

    if reader.energy_unit not in _LAMMPS_UNITS:
        raise ConfigError(f"{path}: reference.energy_unit = {reader.energy_unit!r}: LAMMPS dumps are read in units "
                          f"real (\"kcal/mol\") or metal (\"eV\")")
    if reader.lammps_data is None:
        raise ConfigError(f"{path}: a LAMMPS dump needs reference.lammps_data, the data file that says each atom's "
                          "molecule and element")
    try:
        topology = ase.io.read(reader.lammps_data, format="lammps-data", atom_style=reader.lammps_atom_style,
                               units=_LAMMPS_UNITS[reader.energy_unit])
    except Exception as err:
        short = _short_data_section(reader.lammps_data)
        raise DataFormatError(f"{reader.lammps_data}: " + (short or (
            f"cannot be read as a LAMMPS data file with atom_style {reader.lammps_atom_style!r} "
            f"({type(err).__name__}: {err})"))) from err
    if "mol-id" not in topology.arrays:
        raise DataFormatError(f"{reader.lammps_data}: no molecule ids (atom_style {reader.lammps_atom_style!r}; "
                              "use full, molecular, angle or bond)")
    types, mol, numbers, masses = (topology.arrays["type"], topology.arrays["mol-id"].astype(np.int64),
                                   topology.numbers.copy(), topology.get_masses())
    per_ev = energy_factor("eV")
    to_kcal = energy_factor(reader.energy_unit)

    def extract(atoms, where, require_energies):
        if len(atoms) != len(types) or ("type" in atoms.arrays and not np.array_equal(atoms.arrays["type"], types)):
            raise DataFormatError(f"{where}: {len(atoms)} atoms whose types differ from those of the data file "
                                  f"{reader.lammps_data} ({len(types)} atoms; both are read in order of atom id)")
        energies = None
        if require_energies:
            missing = [c for c in (reader.lammps_pe_atom, reader.lammps_pe_total) if c not in atoms.arrays]
            if atoms.calc is None or "forces" not in atoms.calc.results:
                missing = ["fx fy fz", *missing]
            if missing:  # name what is missing, and only that
                hints = {reader.lammps_pe_atom: "per-atom energies: compute pe/atom",
                         reader.lammps_pe_total: "the total on every atom: variable pe atom pe",
                         "fx fy fz": "the forces"}
                raise DataFormatError(f"{where}: missing the column(s) " + ", ".join(
                    f"{c} ({hints[c]})" for c in missing) + f"; found {sorted(atoms.arrays)}")
            total = np.asarray(atoms.arrays[reader.lammps_pe_total], dtype=np.float64)
            if np.ptp(total) > 1e-9 * max(1.0, np.abs(total).max()):
                raise DataFormatError(f"{where}: column {reader.lammps_pe_total} varies between atoms; it must hold "
                                      "the total potential energy on every atom")
            energies = (atoms.get_forces() * per_ev, float(total[0]) * to_kcal,
                        np.asarray(atoms.arrays[reader.lammps_pe_atom], dtype=np.float64) * to_kcal)
        elif _has_forces(atoms):  # an NVE segment's forces: for the unit check
            energies = (atoms.get_forces() * per_ev, None, None)
        return numbers, mol, masses, energies

    return extract


def _has_forces(atoms) -> bool:
    return atoms.calc is not None and "forces" in atoms.calc.results


def _molecule_ids(atoms, where: str) -> np.ndarray:
    for key in MOLECULE_KEYS:
        if key in atoms.arrays:
            return np.asarray(atoms.arrays[key]).astype(np.int64)
    raise DataFormatError(f"{where}: no molecule ids (a per-atom column named {' or '.join(MOLECULE_KEYS)}); "
                          f"found the columns {sorted(atoms.arrays)}")


def _energies(atoms, where: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Forces, the total energy and the per-atom energies of one frame, in the file's units."""
    results = atoms.calc.results if atoms.calc is not None else {}
    found = sorted(set(results) | set(atoms.arrays) | set(atoms.info))
    missing = [name for name in ("forces", "energy", "energies") if name not in results]
    if missing:
        need = {"forces": "atomic forces ('forces')", "energy": "the total potential energy ('energy')",
                "energies": "per-atom energies ('energies': the thermal targets need per-molecule energies)"}
        raise DataFormatError(f"{where}: no {'; no '.join(need[m] for m in missing)}; found {found}")
    f, e, u = (np.asarray(results[k], dtype=np.float64) for k in ("forces", "energy", "energies"))
    if f.shape != atoms.positions.shape or u.shape != (len(atoms),):
        raise DataFormatError(f"{where}: forces of shape {f.shape} and per-atom energies of shape {u.shape} for "
                              f"{len(atoms)} atoms")
    if not (np.all(np.isfinite(f)) and np.isfinite(e) and np.all(np.isfinite(u))):
        raise DataFormatError(f"{where}: forces or energies are not finite")
    return f, float(e), u


def _orthorhombic_box(atoms, where: str) -> np.ndarray:
    cell = np.asarray(atoms.cell[:])
    if not np.all(atoms.pbc):
        raise DataFormatError(f"{where}: the box must be periodic in x, y and z (pbc = {atoms.pbc.tolist()})")
    off = cell - np.diag(np.diag(cell))
    if np.any(np.abs(off) > 1e-8 * np.abs(np.diag(cell)).max()) or np.any(np.diag(cell) <= 0):
        raise DataFormatError(f"{where}: the box must be orthorhombic with positive edges; found the cell "
                              f"{cell.tolist()} Å")
    return np.diag(cell).copy()


def _renumber(ids: np.ndarray) -> np.ndarray:
    """Molecule ids -> 0 .. M-1 in order of first appearance."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each unique id by first appearance
    return order[inverse].astype(np.int64)


def molecule_types(numbers: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The bead type of each molecule (n_molecules,) and the type names: one type per molecular
    formula (Hill order, e.g. "H2O", "CH4O"), numbered in order of first appearance. Files have no
    residue names; isomers (the same formula) would share a type."""
    from ase.data import chemical_symbols
    from ase.formula import Formula

    formulas = [Formula("".join(chemical_symbols[z] for z in numbers[index == j])).format("hill")
                for j in range(int(index.max()) + 1)]
    kinds = tuple(dict.fromkeys(formulas))
    return np.array([kinds.index(f) for f in formulas], dtype=np.int64), kinds


def _whole(x: np.ndarray, box: np.ndarray, index: np.ndarray, path: Path) -> np.ndarray:
    """Each molecule's atoms moved to the periodic image nearest its first atom."""
    m = int(index.max()) + 1
    first_atom = np.full(m, -1)
    for i, j in enumerate(index):
        if first_atom[j] < 0:
            first_atom[j] = i
    anchor = x[:, first_atom[index]]
    d = minimum_image(x - anchor, box[:, None, :])
    # the minimum image folds any atom to within half a box edge of the first, so a molecule
    # longer than that cannot be told from coordinates alone; one reaching 0.45 of an edge is
    # refused (water-sized molecules are far below it)
    if np.any(np.abs(d) > 0.45 * box[:, None, :]):
        raise DataFormatError(f"{path}: an atom lies 0.45 of the box edge or more from its molecule's first atom; "
                              "molecules that long cannot be made whole from coordinates alone")
    return anchor + d


def com_acceleration_slope(positions, forces, masses, molecule_index, interval_fs: float,
                           weights=(1.0 / 12.0, 10.0 / 12.0, 1.0 / 12.0)) -> float:
    """How the centres of mass accelerate against what their forces say, in an NVE segment: the
    slope (through the origin) of each molecule's acceleration from its positions,
    ``(X(t+h) - 2 X(t) + X(t-h)) / h^2``, against ``(A(t-h) + 10 A(t) + A(t+h)) / 12`` with
    ``A = F_COM / M`` (the weights make the comparison exact for an acceleration quadratic in time:
    Numerov's formula). Right units and spacing give ~1, less at wide spacing where the forces
    change within h (bench/units_check.py measures it); forces read in the wrong energy unit
    scale it by the units' ratio, a wrong frame spacing by its square. Positions unwrapped in
    time (Å), forces kcal/mol/Å, masses amu; ``weights`` (0, 1, 0): the plain F_COM(t)/M."""
    x, f = np.asarray(positions, dtype=np.float64), np.asarray(forces, dtype=np.float64)
    m = np.asarray(masses, dtype=np.float64)
    n_mol = int(molecule_index.max()) + 1
    big_m = np.bincount(molecule_index, m, n_mol)
    com = np.stack([np.stack([np.bincount(molecule_index, m * xf[:, k], n_mol) for k in range(3)], 1)
                    for xf in x]) / big_m[None, :, None]
    f_com = np.stack([np.stack([np.bincount(molecule_index, ff[:, k], n_mol) for k in range(3)], 1) for ff in f])
    accel = f_com / big_m[None, :, None] / units.MVV_TO_KCAL  # Å/ps²
    h = interval_fs * units.FS_TO_PS
    from_positions = (com[2:] - 2.0 * com[1:-1] + com[:-2]) / h ** 2
    from_forces = weights[0] * accel[:-2] + weights[1] * accel[1:-1] + weights[2] * accel[2:]
    return float(np.sum(from_positions * from_forces) / np.sum(from_forces ** 2))


#: com_acceleration_slope's band for right units and frame spacing, up to UNITS_CHECK_SPACING_FS
#: (bench/units_check.py: OpenMM's NVE runs of rigid SPC/E at 250-700 K give 0.995-1.000 at 10 fs,
#: 0.95-0.96 at 20 fs, 0.67-0.71 at 40 fs). A wrong energy unit scales the slope by 4.184 or 23.06
#: or their inverses, a spacing declared twice the true one by 1/4 (0.24-0.25 from 10 or 20 fs):
#: all outside the band, with a factor 1.5 or more to spare on either side.
UNITS_SLOPE_BAND = (0.45, 1.5)
UNITS_CHECK_SPACING_FS = 40.0


def check_units(frames: ImportedFrames, interval_fs: float, path: Path, energy_unit: str) -> float | None:
    """The NVE segment's centres of mass accelerate as their forces say (com_acceleration_slope
    within UNITS_SLOPE_BAND), or the import stops naming the slope and the likely cause; returns
    the slope, or None (one log line) when the segment cannot tell: no forces, frames too far apart
    or too few."""
    if frames.forces is None or interval_fs > UNITS_CHECK_SPACING_FS or len(frames.positions) < 3:
        why = ("has no forces" if frames.forces is None else f"has {len(frames.positions)} frame(s)"
               if len(frames.positions) < 3 else f"has frames {interval_fs:g} fs apart (the check needs "
               f"{UNITS_CHECK_SPACING_FS:g} fs or less)")
        log.info("%s: units not checked: the NVE segment %s", path, why)
        return None
    slope = com_acceleration_slope(frames.positions, frames.forces, frames.masses, frames.molecule_index,
                                   interval_fs)
    lo, hi = UNITS_SLOPE_BAND
    if lo <= slope <= hi:
        return slope
    causes = [f"energy_unit = {u!r}" for u in ("kcal/mol", "kJ/mol", "eV") if u != energy_unit
              and lo <= slope * energy_factor(energy_unit) / energy_factor(u) <= hi]
    h_fit = interval_fs * np.sqrt(slope)  # the spacing at which the slope would be ~1
    raise DataFormatError(
        f"{path}: the molecules' centres of mass accelerate {slope:.3g} times as fast as their forces say "
        f"(F/M; right units and frame spacing give {lo:g}-{hi:g} at {interval_fs:g} fs). Check reference.energy_unit "
        f"(now {energy_unit!r}" + (f"; the data fit {' or '.join(causes)}" if causes else "") + ") and "
        f"reference.nve.frame_interval_fs (now {interval_fs:g}; the positions fit about {h_fit:.3g} fs)")


def check_box(frames: ImportedFrames, cutoffs: dict[str, float], path: Path) -> None:
    """Every cutoff of the config below half the smallest box edge of the frames."""
    half = float(frames.box.min()) / 2.0
    for key, value in cutoffs.items():
        if value >= half:
            raise ConfigError(f"{path}: {key} = {value:g} Å must be below half the smallest box edge of these "
                              f"frames ({half:.2f} Å)")


def write_frames(path: Path, frames: ImportedFrames, temperature_K: float, source: Path, digest: str,
                 energy_unit: str, interval_ps: float, ensemble: str) -> None:
    """A reference-stage file (the NVT file's fields, or an NVE segment's) from imported frames."""
    from thermocg.stagedir import atomic_path

    nve = ensemble == "NVE"
    fields = ("position",) + (("velocity",) if frames.velocities is not None else ()) + (() if nve else ("force",))
    observables = {} if nve else {"potential_energy": ((), units.ENERGY)}
    extras = {} if nve else {"molecule_energy": ((frames.molecule_energy.shape[1],), units.ENERGY)}
    attrs = {"temperature_K": float(temperature_K), "ensemble": ensemble, "imported_from": str(source),
             "imported_sha256": digest, "energy_unit_of_source": energy_unit, "frame_interval_ps": interval_ps,
             "n_atoms": int(len(frames.species)), "n_molecules": int(frames.molecule_index.max()) + 1,
             "bead_types": list(frames.bead_types)}
    with atomic_path(path, ".h5md") as tmp:
        with H5MDWriter(tmp, species=frames.species, mass=frames.masses, particle_fields=fields,
                        observables=observables, extras=extras, attrs=attrs,
                        static=frames.static, creator_version=__version__) as out:
            for k in range(len(frames.positions)):
                data = {"particles/all/position": frames.positions[k], "particles/all/box/edges": frames.box[k]}
                if frames.velocities is not None:
                    data["particles/all/velocity"] = frames.velocities[k]
                if not nve:
                    data.update({"particles/all/force": frames.forces[k],
                                 "observables/potential_energy": frames.potential_energy[k],
                                 "thermocg/molecule_energy": frames.molecule_energy[k]})
                out.append(k, k * interval_ps, data)


def import_reference(config, stage, show_progress: bool = True) -> tuple[dict, dict]:
    """Read every [[reference.data]] file and write the stage's files; returns the outputs by
    temperature label and the summary (per temperature: frames, sources and their sha256,
    the worst decomposition error). NVE segments need positions only (D from the MSD)."""
    from thermocg.progress import tqdm

    from thermocg.labels import temperature_label

    ref = config.reference
    reader = Reader.from_config(config)
    outputs, summary = {}, {}
    first = None  # (source, its molecules' types and names): every temperature must have the same
    for t in tqdm(ref.temperatures_K, desc="import", unit="temperature", disable=not show_progress):
        entry, label = ref.data_at(t), temperature_label(t)
        src = config.path(entry.frames)
        frames = read_frames(src, ref.n_frames, reader, ref.energy_check_rtol)
        check_box(frames, config.cutoffs_A(), src)
        kinds = (frames.static["molecule_type"], frames.bead_types)
        if first is None:
            first = (src, *kinds)
        elif kinds[1] != first[2] or not np.array_equal(kinds[0], first[1]):
            # a bead is one molecule at every temperature (its type in the model, MD and evaluation)
            raise DataFormatError(f"{src}: its molecules' types {list(kinds[1])} (in file order) differ from those "
                                  f"of {first[0]} ({list(first[2])}): every temperature must list the same kinds of "
                                  "molecule in the same order")
        segments = []  # read and checked (the units among them) before anything of this temperature is written
        for name in entry.nve:
            nve_src = config.path(name)
            seg = read_frames(nve_src, 0, reader, require_energies=False)
            if not np.array_equal(seg.molecule_index, frames.molecule_index) or \
                    not np.array_equal(seg.species, frames.species):
                raise DataFormatError(f"{nve_src}: its atoms or molecules differ from those of {src}")
            segments.append((nve_src, seg, check_units(seg, ref.nve.frame_interval_fs, nve_src, ref.energy_unit)))
        digest = stage.checksum(src)
        write_frames(stage.path / f"{label}.h5md", frames, t, src, digest, ref.energy_unit, ref.frame_interval_ps,
                     "imported")
        stage.add_outputs([f"{label}.h5md"])
        nve_summary = []
        for k, (nve_src, seg, slope) in enumerate(segments):
            out = f"{label}-nve{k:02d}.h5md"
            nve_digest = stage.checksum(nve_src)
            write_frames(stage.path / out, seg, t, nve_src, nve_digest, ref.energy_unit,
                         ref.nve.frame_interval_fs * units.FS_TO_PS, "NVE")
            stage.add_outputs([out])
            nve_summary.append({"source": str(nve_src), "sha256": nve_digest, "frames": len(seg.positions),
                                "com_acceleration_slope": slope})
        outputs[label] = [f"{label}.h5md"] + [f"{label}-nve{k:02d}.h5md" for k in range(len(entry.nve))]
        summary[label] = {"imported": {"source": str(src), "sha256": digest, "frames": len(frames.positions),
                                       "atoms": len(frames.species),
                                       "molecules": int(frames.molecule_index.max()) + 1,
                                       "max_decomposition_rel_error": frames.max_decomposition_rel_error,
                                       "velocities": frames.velocities is not None},
                          "nve": nve_summary}
        # the stage's summary (reference.stage.describe) says this once at the end: debug here
        log.debug("reference %s: %d frames of %d atoms in %d molecules from %s (worst |sum u_J - E|/|E| %.1e)", label,
                 len(frames.positions), len(frames.species), summary[label]["imported"]["molecules"], src,
                 frames.max_decomposition_rel_error)
    return outputs, summary
