"""H5MD (HDF5 for molecular data, version 1.1) trajectories: thermocg's file format.

Layout written here (``F`` frames, ``N`` particles)::

    h5md/                       version = [1, 1]; author/, creator/ (name, version)
    particles/all/
        species, mass, charge   (N,)  fixed in time
        box/                    dimension = 3, boundary = periodic x3
            edges/  step (F,), time (F,) [ps], value (F, 3) [Angstrom]
        position/   step, time, value (F, N, 3)  [Angstrom], unwrapped
        velocity/   ...                           [Angstrom ps-1]
        force/      ...                           [kcal mol-1 Angstrom-1]
    observables/<name>/         step, time, value (F, ...)   e.g. potential_energy
    thermocg/<name>/            step, time, value (F, ...)   thermocg's own per-frame data
                                (per-molecule energies, decomposition error)
    thermocg/                   attributes: metadata (temperature, seed, config hash, ...)
    thermocg/static/<name>      arrays fixed in time (molecule index of each atom, ...)

Every ``value`` carries a ``unit`` attribute (``thermocg.units``), so
MDAnalysis' H5MD reader converts correctly. This module is the only place that
knows the layout; the rest of thermocg calls :class:`H5MDWriter` and
:func:`read_h5md`.

Why our own writer: h5py is the library; the H5MD conventions on top of it are
a few dozen lines, and pyh5md/znh5md would add a dependency without handling
our resumable append-and-truncate.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from thermocg import units
from thermocg.errors import DataFormatError
from thermocg.io.strict import dumps

#: particle fields and their units
PARTICLE_UNITS = {"position": units.LENGTH, "velocity": units.VELOCITY, "force": units.FORCE}


def _attr(value):
    """An attribute value h5py stores: numbers and text as they are (numpy text as str,
    which h5py cannot store as a fixed-width unicode scalar), anything else as JSON."""
    if isinstance(value, str):
        return str(value)
    return value if isinstance(value, (int, float, np.number)) else dumps(value)


class H5MDWriter:
    """Append frames to an H5MD file, one frame at a time (resizable datasets).

    Parameters
    ----------
    path : path
        File to create (``mode="w"``, refuses an existing file) or to append to (``mode="a"``).
    species : (N,) int
        Atomic numbers (or bead types).
    mass : (N,) amu;  charge : (N,) e, optional
    particle_fields : names from ``position``, ``velocity``, ``force``
    observables : dict name -> (shape per frame, unit)
        Written under ``observables/``.
    extras : dict name -> (shape per frame, unit)
        Written under ``thermocg/``.
    attrs : dict
        Metadata stored as attributes of ``thermocg/`` (JSON for non-scalars).
    static : dict name -> array
        Arrays fixed in time under ``thermocg/static/``.
    """

    def __init__(self, path, species=None, mass=None, charge=None, particle_fields=("position",),
                 observables=None, extras=None, attrs=None, static=None, mode="w", creator_version="0"):
        self.path = Path(path)
        if mode == "w":
            if self.path.exists():
                raise FileExistsError(f"{self.path} exists; thermocg never overwrites a file silently")
            self._f = h5py.File(self.path, "w")
            self._create(species, mass, charge, particle_fields, observables or {}, extras or {},
                         attrs or {}, static or {}, creator_version)
        elif mode == "a":
            try:
                self._f = h5py.File(self.path, "a")
            except OSError as err:
                raise DataFormatError(f"{self.path}: not a readable HDF5 file ({err})") from err
        else:
            raise ValueError(f"mode must be 'w' or 'a', found {mode!r}")
        self._elements = self._find_elements()

    def _create(self, species, mass, charge, fields, observables, extras, attrs, static, version):
        # no modification times in the datasets (h5py records them by default): the same frames
        # give the same bytes, so two runs can be compared with cmp
        f = self._f
        h = f.create_group("h5md")
        h.attrs["version"] = np.array([1, 1], dtype=np.int32)
        h.create_group("author").attrs["name"] = os.environ.get("USER", "thermocg user")
        c = h.create_group("creator")
        c.attrs["name"] = "thermocg"
        c.attrs["version"] = version
        n = len(species)
        p = f.create_group("particles/all")
        p.create_dataset("species", track_times=False, data=np.asarray(species, dtype=np.int32))
        if mass is not None:
            p.create_dataset("mass", track_times=False,
                             data=np.asarray(mass, dtype=np.float64)).attrs["unit"] = units.MASS
        if charge is not None:
            p.create_dataset("charge", track_times=False,
                             data=np.asarray(charge, dtype=np.float64)).attrs["unit"] = units.CHARGE
        box = p.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        self._element(box, "edges", (3,), units.LENGTH)
        for name in fields:
            self._element(p, name, (n, 3), PARTICLE_UNITS[name])
        for name, (shape, unit) in observables.items():
            self._element(f.require_group("observables"), name, shape, unit)
        t = f.require_group("thermocg")
        for name, (shape, unit) in extras.items():
            self._element(t, name, shape, unit)
        for key, value in attrs.items():
            t.attrs[key] = _attr(value)
        for key, value in static.items():
            t.create_dataset(f"static/{key}", track_times=False, data=np.asarray(value))

    @staticmethod
    def _element(group, name, shape, unit):
        g = group.create_group(name)
        g.create_dataset("step", track_times=False, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        g.create_dataset("time", track_times=False, shape=(0,), maxshape=(None,), dtype=np.float64,
                         chunks=(1024,)).attrs["unit"] = units.TIME
        shape = tuple(shape)
        g.create_dataset("value", track_times=False, shape=(0,) + shape, maxshape=(None,) + shape, dtype=np.float64,
                         chunks=(1,) + shape if shape else (1024,)).attrs["unit"] = unit

    def _find_elements(self) -> dict[str, h5py.Group]:
        out = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "value" in obj and "step" in obj and "time" in obj:
                out[name] = obj
        self._f.visititems(visit)
        return out

    @property
    def n_frames(self) -> int:
        """Frames in the file: the length of the shortest element (a torn append counts as absent)."""
        return min((g["value"].shape[0] for g in self._elements.values()), default=0)

    def truncate(self, n: int) -> None:
        """Drop every frame after the first ``n`` (used when resuming an interrupted run)."""
        for g in self._elements.values():
            for key in ("step", "time", "value"):
                if g[key].shape[0] > n:
                    g[key].resize(n, axis=0)

    def append(self, step: int, time_ps: float, data: dict[str, np.ndarray]) -> None:
        """Append one frame. ``data`` maps element paths (``particles/all/position``,
        ``particles/all/box/edges``, ``observables/potential_energy``, ``thermocg/...``)
        to arrays; every element of the file must be given."""
        missing = set(self._elements) - set(data)
        unknown = set(data) - set(self._elements)
        if missing or unknown:
            raise ValueError(f"{self.path}: frame is missing {sorted(missing)} / has unknown {sorted(unknown)}")
        for name, g in self._elements.items():
            k = g["value"].shape[0]
            for key, value in (("step", step), ("time", time_ps), ("value", data[name])):
                g[key].resize(k + 1, axis=0)
                g[key][k] = value

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class H5MDData:
    """Everything in an H5MD file written by :class:`H5MDWriter`, in thermocg units.

    ``elements`` maps element paths (``particles/all/position``, ``observables/...``,
    ``thermocg/...``) to their values (F, ...); ``step`` (F,), ``time`` (F,) ps;
    ``particles`` maps ``species``, ``mass``, ``charge`` to (N,) arrays;
    ``static`` holds ``thermocg/static`` arrays; ``attrs`` the metadata.
    """

    path: Path
    step: np.ndarray
    time: np.ndarray
    elements: dict[str, np.ndarray]
    particles: dict[str, np.ndarray]
    static: dict[str, np.ndarray]
    attrs: dict


_EXPECTED_UNITS = {
    "particles/all/position": units.LENGTH, "particles/all/velocity": units.VELOCITY,
    "particles/all/force": units.FORCE, "particles/all/box/edges": units.LENGTH,
}


def read_attrs(path) -> dict:
    """Only the ``thermocg/`` metadata of a file (cheap: reads no frames)."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "thermocg" not in f:
                raise DataFormatError(f"{path}: no 'thermocg' group; not a thermocg file")
            return _decode_attrs(f["thermocg"].attrs)
    except OSError as err:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({err})") from err


def count_frames(path) -> int:
    """Frames in a thermocg H5MD file (the shortest element; reads no frames).

    Raises DataFormatError if the file is unreadable."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            lengths = []
            f.visititems(lambda name, obj: lengths.append(obj["value"].shape[0])
                         if isinstance(obj, h5py.Group) and "value" in obj else None)
            return min(lengths, default=0)
    except OSError as err:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({err})") from err


def _decode_attrs(attrs) -> dict:
    out = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def read_h5md(path, frames: slice | np.ndarray | None = None) -> H5MDData:
    """Read an H5MD file written by thermocg (all frames, or a selection).

    Raises
    ------
    DataFormatError
        If the file is unreadable, is missing a required group, has elements of
        different lengths, or carries units other than thermocg's.
    """
    path = Path(path)
    sel = slice(None) if frames is None else frames
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataFormatError(f"{path}: not a readable HDF5 file ({err})") from err
    with f:
        for required in ("h5md", "particles/all/box/edges", "particles/all/species", "thermocg"):
            if required not in f:
                raise DataFormatError(f"{path}: missing '{required}'; not an H5MD file written by thermocg")
        elements, lengths = {}, {}

        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "value" in obj:
                lengths[name] = obj["value"].shape[0]
                unit = obj["value"].attrs.get("unit", "")
                unit = unit.decode() if isinstance(unit, bytes) else unit
                want = _EXPECTED_UNITS.get(name)
                if want is not None and unit != want:
                    raise DataFormatError(f"{path}: '{name}' has unit '{unit}', expected '{want}'")
                elements[name] = obj["value"][sel]
        f.visititems(visit)
        if len(set(lengths.values())) > 1:
            raise DataFormatError(f"{path}: elements have different numbers of frames {lengths}; "
                                  "the file is incomplete")
        edges = f["particles/all/box/edges"]
        part = f["particles/all"]
        particles = {k: part[k][()] for k in ("species", "mass", "charge") if k in part}
        static = {k: v[()] for k, v in f["thermocg/static"].items()} if "thermocg/static" in f else {}
        return H5MDData(path=path, step=edges["step"][sel], time=edges["time"][sel], elements=elements,
                        particles=particles, static=static, attrs=_decode_attrs(f["thermocg"].attrs))
