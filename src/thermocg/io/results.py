"""The evaluate stage's results schema: every number of ``results.json`` with its uncertainty
(:class:`Estimate`), the curves (:class:`Curve`), per temperature the reference's and every
model's :class:`Measures`, and their statistics over training seeds. Strict JSON: an unknown
number is ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from thermocg.errors import DataFormatError
from thermocg.io.records import find_temperature, manifest_record
from thermocg.labels import temperature_label


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
    #: the noise floor (issue 29): the IAE between the curves of the first and second half of
    #: these frames, and, for a model, the IAE against the reference its sampling noise and the
    #: reference's alone would give (``sqrt(h_model^2 + h_ref^2) / 2``; thermocg.evaluate.stage)
    rdf_halves_iae: float | None = None
    adf_halves_iae: float | None = None
    rdf_iae_floor: float | None = None
    adf_iae_floor: float | None = None
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
            manifest_record(path, cls.STAGE)
            path = path / cls.FILE
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(f"{path}: not a readable results file ({err!r})") from err

    def model(self, name: str, temperature_K: float) -> Measures:
        """One model's measures at one temperature (empty Measures when it has none there)."""
        t = find_temperature(self.by_temperature, temperature_K, "results")
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
