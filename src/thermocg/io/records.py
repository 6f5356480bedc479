"""What each stage hands to the next: typed records of its outputs.

A stage writes its files, then its record into its ``manifest.json`` (key ``record``);
the next stage reads the record, never the upstream stage's config or file-name
conventions. Temperatures are floats here; labels (``T300K``) exist only in the file
names, made by :func:`thermocg.labels.temperature_label`.

=================  ==========  ==========================================================
record             stage       what it says
=================  ==========  ==========================================================
ReferenceRun       reference   per temperature: the NVT file and its NVE segments; the system
TargetSet          targets     per temperature: the targets file
                               (:class:`thermocg.io.targets_file.TargetFrames`)
TrainedModels      train       every saved model: variant, order, T0, training temperatures
Trajectories       simulate    per model and temperature: the Langevin file, NVE segments
Results            evaluate    every number of the evaluation (``results.json``,
                               :mod:`thermocg.io.results`)
=================  ==========  ==========================================================

Each stage's record has ``read(directory)``: the finished stage's record, or a
DataFormatError naming the directory and the command to run. ``ReferenceRun``,
``TargetSet``, ``TrainedModels`` and ``Trajectories`` live in the stage's manifest
(``to_json``/``from_json``; file names relative to the stage's directory); ``Results`` is
its own file, ``results.json`` (``write``/``read``; its schema is :mod:`thermocg.io.results`),
and ``TargetFrames`` is one targets file (``write``/``read``; :mod:`thermocg.io.targets_file`).
These modules import neither OpenMM nor torch nor any stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


from thermocg.errors import DataFormatError
from thermocg.io.targets_file import TargetFrames
from thermocg.labels import temperature_label


def manifest_record(directory: Path, stage: str) -> dict:
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


def find_temperature(temperatures, temperature_K: float, where) -> float:
    for t in temperatures:
        if _same_temperature(t, temperature_K):
            return t
    raise DataFormatError(f"{where}: no data at {temperature_K:g} K (have {list(temperatures)})")


# -- reference -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceRun:
    """The reference stage's outputs: at each temperature ``T300K.h5md`` (NVT frames) and
    ``T300K-nve00.h5md``... (NVE segments); the OpenMM system that made them (``system.xml``;
    None for imported frames, which have none)."""

    directory: Path
    temperatures_K: tuple[float, ...]
    nve_segments: int
    system_xml: str | None = None

    STAGE = "reference"

    def has(self, temperature_K: float) -> bool:
        """Whether there are reference data at ``temperature_K``."""
        return any(_same_temperature(t, temperature_K) for t in self.temperatures_K)

    def nvt_path(self, temperature_K: float) -> Path:
        t = find_temperature(self.temperatures_K, temperature_K, self.directory)
        return self.directory / f"{temperature_label(t)}.h5md"

    def nve_paths(self, temperature_K: float) -> list[Path]:
        t = find_temperature(self.temperatures_K, temperature_K, self.directory)
        return [self.directory / f"{temperature_label(t)}-nve{k:02d}.h5md" for k in range(self.nve_segments)]

    def frames(self, temperature_K: float):
        """The NVT frames at one temperature (:class:`thermocg.frames.ReferenceFrames`)."""
        from thermocg.frames import read_reference
        return read_reference(self.nvt_path(temperature_K))

    def cg_frames(self, temperature_K: float):
        """The NVT frames mapped to one bead per molecule (:class:`thermocg.mapping.CGFrames`)."""
        from thermocg.mapping import map_reference
        return map_reference(self.frames(temperature_K))

    @property
    def system_xml_path(self) -> Path | None:
        """The serialized OpenMM system, or None (imported frames)."""
        return None if self.system_xml is None else self.directory / self.system_xml

    def to_json(self) -> dict:
        return {"temperatures_K": list(self.temperatures_K), "nve_segments": self.nve_segments,
                "system_xml": self.system_xml}

    @classmethod
    def from_json(cls, directory, data: dict) -> "ReferenceRun":
        # a record from before the field: its own system wrote system.xml, an import did not
        system = data.get("system_xml", "system.xml" if (Path(directory) / "system.xml").exists() else None)
        return cls(Path(directory), tuple(float(t) for t in data["temperatures_K"]), int(data["nve_segments"]),
                   system)

    @classmethod
    def read(cls, directory) -> "ReferenceRun":
        return cls.from_json(directory, manifest_record(directory, cls.STAGE))


@dataclass(frozen=True)
class TargetSet:
    """The targets stage's outputs: a :class:`TargetFrames` file per temperature (``T300K.h5md``)."""

    directory: Path
    temperatures_K: tuple[float, ...]

    STAGE = "targets"

    def path(self, temperature_K: float) -> Path:
        t = find_temperature(self.temperatures_K, temperature_K, self.directory)
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
        return cls.from_json(directory, manifest_record(directory, cls.STAGE))


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
        return cls.from_json(directory, manifest_record(directory, cls.STAGE))


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
    """The simulate stage's outputs: every (model, temperature, replica) run; ``unstable``: the
    systems that failed the MD's checks (``[simulate] unstable = "record"``), each a dict with
    model, temperature_K, replica, phase ("nvt": no run at all; "nve": no NVE segments), step
    and reason."""

    directory: Path
    runs: tuple[TrajectoryRun, ...]
    unstable: tuple[dict, ...] = ()

    STAGE = "simulate"

    @property
    def models(self) -> list[str]:
        return sorted({r.model for r in self.runs})

    def temperatures(self, model: str) -> list[float]:
        return sorted({r.temperature_K for r in self.runs if r.model == model})

    def _find(self, model: str, temperature_K: float, replica: int) -> TrajectoryRun | None:
        return next((r for r in self.runs if r.model == model and r.replica == replica
                     and _same_temperature(r.temperature_K, temperature_K)), None)

    def has(self, model: str, temperature_K: float, replica: int = 0) -> bool:
        """Whether ``model`` was simulated at ``temperature_K`` in ``replica`` (not if it was unstable there)."""
        return self._find(model, temperature_K, replica) is not None

    def run(self, model: str, temperature_K: float, replica: int = 0) -> TrajectoryRun:
        found = self._find(model, temperature_K, replica)
        if found is not None:
            return found
        raise DataFormatError(f"{self.directory}: no simulation of {model} at {temperature_K:g} K "
                              f"(replica {replica})")

    @property
    def nve_segments(self) -> int:
        """The NVE segments of each run (0: none were simulated)."""
        return max((len(r.nve_files) for r in self.runs), default=0)

    def nvt_path(self, model: str, temperature_K: float, replica: int = 0) -> Path:
        return self.directory / self.run(model, temperature_K, replica).file

    def nve_paths(self, model: str, temperature_K: float, replica: int = 0) -> list[Path]:
        return [self.directory / f for f in self.run(model, temperature_K, replica).nve_files]

    def to_json(self) -> dict:
        return {"runs": [r.to_json() for r in self.runs], "unstable": [dict(u) for u in self.unstable]}

    @classmethod
    def from_json(cls, directory, data: dict) -> "Trajectories":
        return cls(Path(directory), tuple(TrajectoryRun.from_json(r) for r in data["runs"]),
                   tuple(dict(u) for u in data.get("unstable", ())))  # records before it had none

    @classmethod
    def read(cls, directory) -> "Trajectories":
        return cls.from_json(directory, manifest_record(directory, cls.STAGE))
