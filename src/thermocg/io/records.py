"""What each stage hands to the next: typed records of its outputs.

A stage writes its files, then its record into its ``manifest.json`` (key ``record``);
the next stage reads the record, never the upstream stage's config or file-name
conventions. Temperatures are floats here; labels (``T300K``) exist only in the file
names, made by :func:`thermocg.labels.temperature_label`.

=================  ==========  ==========================================================
record             stage       what it says
=================  ==========  ==========================================================
ReferenceRun       reference   per temperature: the NVT file and its NVE segments
TargetSet          targets     per temperature: the targets file (:class:`TargetFrames`)
TrainedModels      train       every saved model: variant, order, T0, training temperatures
Trajectories       simulate    per model and temperature: the Langevin file, NVE segments
Results            evaluate    every number of the evaluation (``results.json``)
=================  ==========  ==========================================================

Each stage's record has ``read(directory)``: the finished stage's record, or a
DataFormatError naming the directory and the command to run. ``ReferenceRun``,
``TargetSet``, ``TrainedModels`` and ``Trajectories`` live in the stage's manifest
(``to_json``/``from_json``; file names relative to the stage's directory); ``Results`` is
its own file, ``results.json`` (``write``/``read``), and ``TargetFrames`` is one targets
file (``write``/``read``). This module imports neither OpenMM nor torch nor any stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from thermocg.errors import DataFormatError
from thermocg.labels import temperature_label


def _manifest_record(directory: Path, stage: str) -> dict:
    """The record in a finished stage's manifest."""
    path = Path(directory) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{directory}: no {stage} stage here; run `thermocg {stage}` first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{path}: unreadable stage manifest ({err}); run `thermocg {stage} --force`") from err
    if not isinstance(manifest, dict):
        raise DataFormatError(f"{path}: not a stage manifest (expected a JSON object); run "
                              f"`thermocg {stage} --force`")
    if not manifest.get("complete"):
        raise DataFormatError(f"{directory}: the {stage} stage is not finished; run `thermocg {stage}`")
    if "record" not in manifest:
        raise DataFormatError(f"{directory}: made by an older thermocg (no record in its manifest); run "
                              f"`thermocg {stage}` again to write one")
    return manifest["record"]


def _same_temperature(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _find(temperatures, temperature_K: float, where) -> float:
    for t in temperatures:
        if _same_temperature(t, temperature_K):
            return t
    raise DataFormatError(f"{where}: no data at {temperature_K:g} K (have {list(temperatures)})")


# -- reference -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceRun:
    """The reference stage's outputs: at each temperature ``T300K.h5md`` (NVT frames) and
    ``T300K-nve00.h5md``... (NVE segments)."""

    directory: Path
    temperatures_K: tuple[float, ...]
    nve_segments: int

    STAGE = "reference"

    def has(self, temperature_K: float) -> bool:
        """Whether there are reference data at ``temperature_K``."""
        return any(_same_temperature(t, temperature_K) for t in self.temperatures_K)

    def nvt_path(self, temperature_K: float) -> Path:
        t = _find(self.temperatures_K, temperature_K, self.directory)
        return self.directory / f"{temperature_label(t)}.h5md"

    def nve_paths(self, temperature_K: float) -> list[Path]:
        t = _find(self.temperatures_K, temperature_K, self.directory)
        return [self.directory / f"{temperature_label(t)}-nve{k:02d}.h5md" for k in range(self.nve_segments)]

    def frames(self, temperature_K: float):
        """The NVT frames at one temperature (:class:`thermocg.frames.ReferenceFrames`)."""
        from thermocg.frames import read_reference
        return read_reference(self.nvt_path(temperature_K))

    def cg_frames(self, temperature_K: float):
        """The NVT frames mapped to one bead per molecule (:class:`thermocg.mapping.CGFrames`)."""
        from thermocg.mapping import map_reference
        return map_reference(self.frames(temperature_K))

    def to_json(self) -> dict:
        return {"temperatures_K": list(self.temperatures_K), "nve_segments": self.nve_segments}

    @classmethod
    def from_json(cls, directory, data: dict) -> "ReferenceRun":
        return cls(Path(directory), tuple(float(t) for t in data["temperatures_K"]), int(data["nve_segments"]))

    @classmethod
    def read(cls, directory) -> "ReferenceRun":
        return cls.from_json(directory, _manifest_record(directory, cls.STAGE))


# -- targets ---------------------------------------------------------------------------

#: the per-bead vector targets, per-bead scalars and per-frame scalars of a targets file
_TARGET_VECTORS = ("t1", "t2", "t1_global", "t2_global", "f0")
_TARGET_SCALARS = ("u_loc", "c", "v", "u_baseline", "bead_energy")
_TARGET_GLOBALS = ("u_global", "c_global")
#: optional: standard errors of the order-0, 1, 2 targets (restrained targets; usable as loss weights)
_TARGET_ERRORS = ("t0_se", "t1_se", "t2_se")


@dataclass(frozen=True)
class TargetFrames:
    """CG training data at one temperature: bead frames and their thermal-response targets.

    positions (F, N, 3) Å; forces (F, N, 3) the mapped forces (order-0 target), kcal/(mol Å);
    box (F, 3) Å; potential_energy (F,) kcal/mol; bead_masses (N,) amu; step (F,);
    ``targets``: t1, t2 (local, order 1 and centred order 2), t1_global, t2_global, f0 (F, N, 3);
    u_loc, c, v, u_baseline, bead_energy (F, N); u_global, c_global (F,); optionally t0_se,
    t1_se, t2_se (F, N, 3), the standard errors of restrained targets; ``attrs``: r_e_A,
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
                     "t0_se": units.FORCE, "t1_se": f1_unit, "t2_se": f2_unit}
        extras = {name: ((n, 3), vec_units[name]) for name in _TARGET_VECTORS}
        extras.update({name: ((n, 3), vec_units[name]) for name in _TARGET_ERRORS if name in self.targets})
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
            targets.update({name: el[f"thermocg/{name}"] for name in _TARGET_ERRORS if f"thermocg/{name}" in el})
            return cls(temperature_K=float(d.attrs["temperature_K"]), positions=el["particles/all/position"],
                       forces=el["particles/all/force"], box=el["particles/all/box/edges"],
                       potential_energy=el["observables/potential_energy"], bead_masses=d.particles["mass"],
                       step=d.step, targets=targets, attrs=d.attrs, bead_type=d.particles["species"],
                       bead_types=tuple(d.attrs.get("bead_types", ("molecule",))))
        except KeyError as err:
            raise DataFormatError(f"{path}: missing {err}; not a targets-stage file") from err


@dataclass(frozen=True)
class TargetSet:
    """The targets stage's outputs: a :class:`TargetFrames` file per temperature (``T300K.h5md``)."""

    directory: Path
    temperatures_K: tuple[float, ...]

    STAGE = "targets"

    def path(self, temperature_K: float) -> Path:
        t = _find(self.temperatures_K, temperature_K, self.directory)
        return self.directory / f"{temperature_label(t)}.h5md"

    def frames(self, temperature_K: float, frames: slice | None = None) -> TargetFrames:
        return TargetFrames.read(self.path(temperature_K), frames)

    def to_json(self) -> dict:
        return {"temperatures_K": list(self.temperatures_K)}

    @classmethod
    def from_json(cls, directory, data: dict) -> "TargetSet":
        return cls(Path(directory), tuple(float(t) for t in data["temperatures_K"]))

    @classmethod
    def read(cls, directory) -> "TargetSet":
        return cls.from_json(directory, _manifest_record(directory, cls.STAGE))


# -- train -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """One saved model: its file name (without ``.pt``), variant, expansion order, reference
    temperature, training temperatures, training seed and group (the name without the seed
    suffix: the models a study averages over seeds, e.g. ``fm-each-T250K``)."""

    name: str
    variant: str
    order: int
    T0_K: float
    training_temperatures_K: tuple[float, ...]
    seed: int = 0
    group: str = ""

    def __post_init__(self):
        if not self.group:
            object.__setattr__(self, "group", self.name)

    @property
    def single_temperature(self) -> bool:
        """A model without temperature transfer (``fm-each``): meaningful at its own temperature only."""
        return self.variant == "fm-each"

    def to_json(self) -> dict:
        return {"name": self.name, "variant": self.variant, "order": self.order, "T0_K": self.T0_K,
                "training_temperatures_K": list(self.training_temperatures_K), "seed": self.seed,
                "group": self.group}

    @classmethod
    def from_json(cls, data: dict) -> "ModelEntry":
        return cls(str(data["name"]), str(data["variant"]), int(data["order"]), float(data["T0_K"]),
                   tuple(float(t) for t in data["training_temperatures_K"]), int(data.get("seed", 0)),
                   str(data.get("group", "")))


@dataclass(frozen=True)
class TrainedModels:
    """The train stage's outputs: every model (``<name>.pt``) and the reference frames held out
    from training (``test_frames``: frame indices [start, stop) of every temperature)."""

    directory: Path
    models: tuple[ModelEntry, ...]
    test_frames: tuple[int, int] = (0, 0)

    STAGE = "train"

    def __post_init__(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names repeat: {names}")

    def __getitem__(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"{self.directory}: no model {name!r} (have {[m.name for m in self.models]})")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def path(self, name: str) -> Path:
        return self.directory / f"{self[name].name}.pt"

    def floor(self, temperature_K: float) -> list[str]:
        """The ``fm-each`` models trained at ``temperature_K`` (the force-error floor there; one
        per training seed), possibly none."""
        return [m.name for m in self.models
                if m.single_temperature and any(_same_temperature(t, temperature_K) for t in m.training_temperatures_K)]

    @property
    def held_out(self) -> slice:
        return slice(*self.test_frames)

    def to_json(self) -> dict:
        return {"models": [m.to_json() for m in self.models], "test_frames": list(self.test_frames)}

    @classmethod
    def from_json(cls, directory, data: dict) -> "TrainedModels":
        return cls(Path(directory), tuple(ModelEntry.from_json(m) for m in data["models"]),
                   tuple(int(x) for x in data["test_frames"]))

    @classmethod
    def read(cls, directory) -> "TrainedModels":
        return cls.from_json(directory, _manifest_record(directory, cls.STAGE))


# -- simulate --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrajectoryRun:
    """One simulated system: model, temperature, replica; its Langevin file and NVE segments
    (paths relative to the simulate stage's directory)."""

    model: str
    temperature_K: float
    replica: int
    file: str
    nve_files: tuple[str, ...]

    def to_json(self) -> dict:
        return {"model": self.model, "temperature_K": self.temperature_K, "replica": self.replica,
                "file": self.file, "nve_files": list(self.nve_files)}

    @classmethod
    def from_json(cls, data: dict) -> "TrajectoryRun":
        return cls(str(data["model"]), float(data["temperature_K"]), int(data["replica"]), str(data["file"]),
                   tuple(data["nve_files"]))


@dataclass(frozen=True)
class Trajectories:
    """The simulate stage's outputs: every (model, temperature, replica) run."""

    directory: Path
    runs: tuple[TrajectoryRun, ...]

    STAGE = "simulate"

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.runs})

    def temperatures(self, model: str) -> list[float]:
        return sorted({r.temperature_K for r in self.runs if r.model == model})

    def run(self, model: str, temperature_K: float, replica: int = 0) -> TrajectoryRun:
        for r in self.runs:
            if r.model == model and r.replica == replica and _same_temperature(r.temperature_K, temperature_K):
                return r
        raise DataFormatError(f"{self.directory}: no simulation of {model} at {temperature_K:g} K "
                              f"(replica {replica})")

    def nvt_path(self, model: str, temperature_K: float, replica: int = 0) -> Path:
        return self.directory / self.run(model, temperature_K, replica).file

    def nve_paths(self, model: str, temperature_K: float, replica: int = 0) -> list[Path]:
        return [self.directory / f for f in self.run(model, temperature_K, replica).nve_files]

    def to_json(self) -> dict:
        return {"runs": [r.to_json() for r in self.runs]}

    @classmethod
    def from_json(cls, directory, data: dict) -> "Trajectories":
        return cls(Path(directory), tuple(TrajectoryRun.from_json(r) for r in data["runs"]))

    @classmethod
    def read(cls, directory) -> "Trajectories":
        return cls.from_json(directory, _manifest_record(directory, cls.STAGE))


# -- evaluate --------------------------------------------------------------------------


def _json_number(x):
    """Strict JSON: a non-finite number is written as null."""
    return float(x) if x is not None and math.isfinite(x) else None


def _number(x) -> float:
    return float("nan") if x is None else float(x)


@dataclass(frozen=True)
class Estimate:
    """A measured value and its standard error (NaN: unknown, e.g. from a single block)."""

    value: float
    error: float = float("nan")

    def to_json(self) -> dict:
        return {"value": _json_number(self.value), "error": _json_number(self.error)}

    @classmethod
    def from_json(cls, data: dict) -> "Estimate":
        return cls(_number(data["value"]), _number(data.get("error")))


@dataclass(frozen=True)
class Curve:
    """A sampled function: x and y of equal length (RDF, ADF, MSD)."""

    x: np.ndarray
    y: np.ndarray


#: the JSON keys of the curves' x and y
_CURVE_KEYS = {"rdf": ("r_A", "g"), "adf": ("theta_rad", "p"), "msd": ("lag_ps", "msd_A2")}


@dataclass(frozen=True)
class Measures:
    """What the evaluation measured for one set of bead frames (the reference or one model) at
    one temperature. Each is None when it was not measured (no NVE segments, no held-out frames,
    not simulated there). Units: Å, ps, rad, (kcal/mol/Å)², kB."""

    rdf: Curve | None = None
    adf: Curve | None = None
    s2_kB: Estimate | None = None
    rdf_peak_position: Estimate | None = None
    rdf_peak_height: Estimate | None = None
    adf_peak_position: Estimate | None = None
    adf_peak_height: Estimate | None = None
    rdf_iae: Estimate | None = None
    adf_iae: Estimate | None = None
    mean_kinetic_temperature_K: float | None = None
    D_A2_per_ps: Estimate | None = None
    segments: int | None = None
    msd: Curve | None = None
    yeh_hummer_times_viscosity: float | None = None
    yeh_hummer_correction_A2_per_ps: float | None = None
    D_ratio_CG_over_FG: Estimate | None = None
    force_mse: Estimate | None = None
    force_mse_excess: float | None = None
    #: mixtures (several bead types): per type pair "A-B", the partial g_AB(r) and its IAE; per
    #: bead type, D (Å²/ps) and D_CG/D_FG
    rdf_partial: dict[str, Curve] | None = None
    rdf_partial_iae: dict[str, Estimate] | None = None
    D_by_type_A2_per_ps: dict[str, Estimate] | None = None
    D_ratio_by_type: dict[str, Estimate] | None = None

    @property
    def simulated(self) -> bool:
        """Structure was measured (the model was simulated at this temperature)."""
        return self.rdf is not None

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            if isinstance(v, Estimate):
                out[f.name] = v.to_json()
            elif isinstance(v, Curve):
                kx, ky = _CURVE_KEYS[f.name]
                out[f.name] = {kx: np.asarray(v.x, dtype=float).tolist(), ky: np.asarray(v.y, dtype=float).tolist()}
            elif isinstance(v, dict):  # by type pair or bead type: curves (g_AB) or estimates
                kx, ky = _CURVE_KEYS["rdf"]
                out[f.name] = {k: e.to_json() if isinstance(e, Estimate) else
                               {kx: np.asarray(e.x, dtype=float).tolist(), ky: np.asarray(e.y, dtype=float).tolist()}
                               for k, e in v.items()}
            elif isinstance(v, int):
                out[f.name] = v
            else:
                out[f.name] = _json_number(v)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Measures":
        kwargs = {}
        known = {f.name: f for f in fields(cls)}
        for key, v in data.items():
            if key not in known:
                raise DataFormatError(f"results: unknown measure {key!r}")
            if key in _CURVE_KEYS:
                kx, ky = _CURVE_KEYS[key]
                kwargs[key] = Curve(np.asarray(v[kx], dtype=float), np.asarray(v[ky], dtype=float))
            elif key == "rdf_partial":
                kx, ky = _CURVE_KEYS["rdf"]
                kwargs[key] = {k: Curve(np.asarray(c[kx], dtype=float), np.asarray(c[ky], dtype=float))
                               for k, c in v.items()}
            elif key in ("rdf_partial_iae", "D_by_type_A2_per_ps", "D_ratio_by_type"):
                kwargs[key] = {k: Estimate.from_json(e) for k, e in v.items()}
            elif isinstance(v, dict):
                kwargs[key] = Estimate.from_json(v)
            elif key == "segments":
                kwargs[key] = int(v)
            else:
                kwargs[key] = _number(v)
        return cls(**kwargs)


@dataclass(frozen=True)
class TemperatureResults:
    """The reference's and every model's measures at one temperature (``reference`` is None at a
    temperature without reference data)."""

    temperature_K: float
    reference: Measures | None
    models: dict[str, Measures]


@dataclass(frozen=True)
class Results:
    """The evaluate stage's output (``results.json``): every model at every temperature."""

    temperatures_K: tuple[float, ...]
    models: tuple[str, ...]
    T0_K: float
    training_temperatures_K: dict[str, tuple[float, ...]]
    by_temperature: dict[float, TemperatureResults]
    variants: dict[str, str] = field(default_factory=dict)
    #: what was not computed, and why (a null in the file is explained here)
    notes: tuple[str, ...] = ()
    #: model name -> its group (the name without the seed suffix) and training seed
    groups: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)

    STAGE = "evaluate"
    FILE = "results.json"

    def to_json(self) -> dict:
        return {"temperatures_K": list(self.temperatures_K), "models": list(self.models), "T0_K": self.T0_K,
                "training_temperatures_K": {m: list(t) for m, t in self.training_temperatures_K.items()},
                "variants": dict(self.variants), "notes": list(self.notes),
                "groups": dict(self.groups), "seeds": dict(self.seeds),
                "by_temperature": {temperature_label(t): {
                    "temperature_K": t, "reference": None if e.reference is None else e.reference.to_json(),
                    "models": {m: v.to_json() for m, v in e.models.items()}} for t, e in self.by_temperature.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "Results":
        by_t = {}
        for entry in data["by_temperature"].values():
            t = float(entry["temperature_K"])
            ref = entry.get("reference")
            by_t[t] = TemperatureResults(t, None if ref is None else Measures.from_json(ref),
                                         {m: Measures.from_json(v) for m, v in entry["models"].items()})
        return cls(tuple(float(t) for t in data["temperatures_K"]), tuple(data["models"]), float(data["T0_K"]),
                   {m: tuple(float(x) for x in (t or ())) for m, t in data["training_temperatures_K"].items()},
                   by_t, dict(data.get("variants", {})), tuple(data.get("notes", ())),
                   {m: str(g) for m, g in data.get("groups", {}).items()},
                   {m: int(x) for m, x in data.get("seeds", {}).items()})

    def write(self, path: Path) -> None:
        """Strict JSON (no NaN: unknown numbers are null), written to a temporary name, then renamed."""
        from thermocg.stagedir import atomic_write_text
        from thermocg.io.strict import dumps
        atomic_write_text(path, dumps(self.to_json(), indent=1))

    @classmethod
    def read(cls, directory) -> "Results":
        """The results of a finished evaluate stage in ``directory`` (or a ``results.json`` path)."""
        path = Path(directory)
        if path.is_dir():
            _manifest_record(path, cls.STAGE)
            path = path / cls.FILE
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"{path}: not a readable results file ({err!r})") from err

    def model(self, name: str, temperature_K: float) -> Measures:
        """One model's measures at one temperature (empty Measures when it has none there)."""
        t = _find(self.by_temperature, temperature_K, "results")
        return self.by_temperature[t].models.get(name, Measures())

    def group_of(self, name: str) -> str:
        return self.groups.get(name, name)

    @property
    def group_names(self) -> list[str]:
        """The model groups (a model trained with several seeds is one group), in model order."""
        return list(dict.fromkeys(self.group_of(m) for m in self.models))

    def members(self, group: str) -> list[str]:
        """The models of ``group``, one per training seed."""
        return [m for m in self.models if self.group_of(m) == group]

    def over_seeds(self, group: str, temperature_K: float, measure: str) -> "SeedStatistics | None":
        """``measure`` (a :class:`Measures` field) of the models of ``group`` at one temperature:
        mean and spread over the training seeds that measured it; None when none did."""
        values, errors = [], []
        for m in self.members(group):
            v = getattr(self.model(m, temperature_K), measure)
            if v is None:
                continue
            est = v if isinstance(v, Estimate) else Estimate(float(v))
            if math.isfinite(est.value):
                values.append(est.value)
                errors.append(est.error)
        return SeedStatistics.of(values, errors) if values else None


@dataclass(frozen=True)
class SeedStatistics:
    """One measure over training seeds: the mean, the standard deviation over seeds (NaN with
    one seed), and the within-run standard error of that mean (from each run's own error:
    sqrt(sum e_i^2)/n; NaN when a run has none)."""

    mean: float
    spread: float
    within: float
    n: int

    @classmethod
    def of(cls, values, errors) -> "SeedStatistics":
        v, e = np.asarray(values, dtype=float), np.asarray(errors, dtype=float)
        spread = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
        within = float(np.sqrt(np.sum(e ** 2)) / len(e)) if np.all(np.isfinite(e)) else float("nan")
        return cls(float(v.mean()), spread, within, len(v))

    def to_json(self) -> dict:
        return {"mean": _json_number(self.mean), "seed_spread": _json_number(self.spread),
                "within_run_error": _json_number(self.within), "n_seeds": self.n}
