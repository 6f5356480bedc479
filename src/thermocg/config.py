"""The configuration: one TOML file read into frozen, validated pydantic models.

Sections follow the pipeline stages; key names carry their units
(``temperatures_K``, ``timestep_fs``, ``cutoff_A``). Unknown keys are rejected.
Relative paths are taken relative to the directory of the config file.

A configuration error becomes a :class:`~thermocg.errors.ConfigError` whose
message names the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from thermocg.errors import ConfigError
from thermocg.labels import temperature_label
from thermocg.reference.water import WATER_MODELS, box_length_A

# Strict: a TOML boolean is not a number (``n_frames = true`` is an error, not 1), nor a
# string a number; integers are accepted where floats are expected. No field accepts inf or
# NaN (``allow_inf_nan=False`` below).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]


def _check_multiple(value_fs: float, step_fs: float, value_name: str, step_name: str,
                    at_least_one: bool = False, note: str = "") -> None:
    """Both arguments in fs; raise if value is not a whole number of steps (``at_least_one``:
    nor zero steps, for an interval between frames). ``note`` follows the step's value (where
    it came from)."""
    n = value_fs / step_fs
    if abs(n - round(n)) > 1e-6:
        raise ValueError(
            f"{value_name} ({value_fs:g} fs) must be a whole multiple of {step_name} ({step_fs:g} fs{note})"
        )
    if at_least_one and round(n) < 1:
        raise ValueError(f"{value_name} ({value_fs:g} fs) must be at least one {step_name} ({step_fs:g} fs{note})")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RunSection(_Section):
    """Settings shared by every stage (``[run]``)."""

    #: Directory that receives every stage's outputs (relative to the config file).
    directory: Path = Path("runs/default")
    #: Master seed; each temperature derives its own from it.
    seed: Int = Field(2026, ge=0, lt=2**31)
    #: Where to compute: ``auto`` picks a GPU when one is present.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Parallel local processes for the stages' tasks: temperatures (reference, restrained
    #: sampling), models (training, CG MD) (``auto``: one per core on CPU, up to the number of
    #: tasks, the cores shared out as threads; one on a GPU).
    processes: Int | Literal["auto"] = "auto"
    #: Per-temperature work (reference sampling, restrained sampling) on Dask distributed:
    #: "local:N" for a LocalCluster of N worker processes, or a scheduler address
    #: ("tcp://host:8786"; the workers need thermocg and the run directory). None: local processes.
    scheduler: str | None = None

    @model_validator(mode="after")
    def _check_processes(self):
        if self.processes != "auto" and self.processes < 1:
            raise ValueError(f"processes must be 'auto' or >= 1, found {self.processes}")
        if self.scheduler is not None:
            from thermocg.cluster import check_scheduler
            check_scheduler(self.scheduler)
        return self


class NVESection(_Section):
    """NVE (velocity Verlet) segments for dynamics: ``[reference.nve]``."""

    #: Number of segments per temperature, started from sampled NVT frames spread over the run.
    n_segments: Int = Field(4, ge=0)
    #: Length of each segment.
    length_ps: PositiveFloat = 20.0
    #: Interval between saved frames.
    frame_interval_fs: PositiveFloat = 100.0
    #: Velocity Verlet timestep.
    timestep_fs: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _check_intervals(self):
        if self.timestep_fs is not None:  # [simulate.nve] unset: [simulate] checks the engine's default
            _check_multiple(self.frame_interval_fs, self.timestep_fs, "frame_interval_fs", "timestep_fs", True)
        _check_multiple(self.length_ps * 1000.0, self.frame_interval_fs, "length_ps", "frame_interval_fs", True)
        return self


DEFAULT_TEMPERATURES_K = (250.0, 275.0, 300.0, 350.0, 400.0, 450.0, 500.0, 600.0, 700.0)


class ImportedTemperature(_Section):
    """The user's all-atom data at one temperature: ``[[reference.data]]`` (``source = "files"``)."""

    #: The temperature of these frames (K).
    temperature_K: PositiveFloat
    #: Equilibrium frames at this temperature (relative to the config file): positions, forces,
    #: the total potential energy, per-atom energies and molecule ids (reference.format).
    frames: Path
    #: NVE segments for the all-atom D (positions every reference.nve.frame_interval_fs; may be
    #: empty, then D_FG and D_CG/D_FG are not computed).
    nve: tuple[Path, ...] = ()


class ReferenceSection(_Section):
    """All-atom reference MD with OpenMM: ``[reference]``."""

    #: The built-in system (system = "water"): water model, molecules and density (g/cm³); and the
    #: temperatures of the run (K).
    water_model: Literal["spce"] = "spce"
    n_molecules: Int = Field(512, ge=2)
    density_g_cm3: PositiveFloat = 0.997
    temperatures_K: tuple[PositiveFloat, ...] = Field(DEFAULT_TEMPERATURES_K, min_length=1)
    #: Real-space cutoff of PME and of Lennard-Jones.
    cutoff_A: PositiveFloat = 9.0
    #: OpenMM's ewaldErrorTolerance (1e-5: PME energies within ~4e-6 of a converged Ewald sum).
    ewald_error_tolerance: Float = Field(1.0e-5, gt=0, lt=0.1)
    #: Langevin (LangevinMiddle) sampling: timestep, friction, equilibration before the first
    #: frame, frames per temperature and their interval.
    timestep_fs: PositiveFloat = 2.0
    friction_per_ps: PositiveFloat = 1.0
    equilibration_ps: Float = Field(100.0, ge=0)
    n_frames: Int = Field(100, ge=1)
    frame_interval_ps: PositiveFloat = 1.0
    #: Largest allowed |sum_J u_J - E_pot| / |E_pot| per frame; a frame above it stops the run.
    energy_check_rtol: Float = Field(1.0e-5, gt=0)
    #: The NVE segments for the all-atom D: ``[reference.nve]``.
    nve: NVESection = Field(default_factory=NVESection)
    #: Where the all-atom frames come from: "openmm", thermocg's own SPC/E water MD (the keys
    #: above), or "files", the user's frames of any liquid ([[reference.data]]; the first
    #: n_frames of each file are read, temperatures_K defaults to the data's temperatures).
    source: Literal["openmm", "files"] = "openmm"
    data: tuple[ImportedTemperature, ...] = ()
    #: files: "extxyz" (extended XYZ, read with ASE: forces, the total energy, per-atom
    #: "energies" and a "mol-id" or "molecule_id" column) or "lammps-dump" (a LAMMPS text dump
    #: with fx fy fz and the two energy columns below, plus lammps_data); "auto": from the file
    #: suffix (.xyz, .extxyz; .lammpstrj, .dump).
    format: Literal["auto", "extxyz", "lammps-dump"] = "auto"
    #: files: the unit of the energies in the files (forces: this unit per Å; ASE's is eV).
    #: LAMMPS: "kcal/mol" for units real, "eV" for units metal.
    energy_unit: Literal["eV", "kcal/mol", "kJ/mol"] = "eV"
    #: LAMMPS dumps: the data file (relative to the config file) with each atom's molecule and
    #: mass (element), its atom_style, and the dump's columns of per-atom energies (compute
    #: pe/atom) and of the total energy (an atom-style variable of the global pe).
    lammps_data: Path | None = None
    lammps_atom_style: Literal["full", "molecular", "angle", "bond"] = "full"
    lammps_pe_atom: str = "c_pe"
    lammps_pe_total: str = "v_pe"
    #: source = "openmm": "water" (water_model, n_molecules, density_g_cm3 build the box) or
    #: "pdb": any liquid from a PDB file (its molecules, positions and box; one bead per residue)
    #: and OpenMM force-field XML files (built-in names or paths relative to the config file).
    system: Literal["water", "pdb"] = "water"
    pdb: Path | None = None
    forcefield: tuple[str, ...] = ()
    #: system = "pdb": OpenMM's createSystem constraints, and rigid water models.
    constraints: Literal["none", "hbonds", "allbonds", "hangles"] = "hbonds"
    rigid_water: Bool = True

    @model_validator(mode="before")
    @classmethod
    def _temperatures_of_the_data(cls, data):
        """``source = "files"`` without temperatures_K: the temperatures of [[reference.data]]."""
        if isinstance(data, dict) and data.get("source") == "files" and "temperatures_K" not in data:
            entries = data.get("data") or ()
            if entries and all(isinstance(e, dict) and "temperature_K" in e for e in entries):
                data = {**data, "temperatures_K": [e["temperature_K"] for e in entries]}
        return data

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.temperatures_K)) != len(self.temperatures_K):
            raise ValueError(f"temperatures_K has duplicates: {list(self.temperatures_K)}")
        if self.source == "files":
            if self.system != "water":
                raise ValueError(f"system = {self.system!r} builds an OpenMM system, which source = \"files\" does "
                                 "not run")
            return self._check_files()
        if self.data:
            raise ValueError("data: [[reference.data]] is read only with source = \"files\" (source is "
                             f"{self.source!r})")
        _check_multiple(self.frame_interval_ps * 1000.0, self.timestep_fs, "frame_interval_ps", "timestep_fs", True)
        _check_multiple(self.equilibration_ps * 1000.0, self.timestep_fs, "equilibration_ps", "timestep_fs")
        if self.nve.n_segments > self.n_frames:
            raise ValueError(
                f"nve.n_segments = {self.nve.n_segments} exceeds n_frames = {self.n_frames}: "
                "each segment starts from a different sampled frame"
            )
        if self.system == "pdb":
            if self.pdb is None or not self.forcefield:
                raise ValueError("system = \"pdb\" needs pdb (the molecules, positions and box) and forcefield "
                                 f"(OpenMM XML files); found pdb = {self.pdb}, forcefield = {list(self.forcefield)}")
            return self
        box = self.box_length_A
        if self.cutoff_A >= box / 2:
            raise ValueError(
                f"cutoff_A = {self.cutoff_A:g} needs a box edge above {2 * self.cutoff_A:g} Å, but "
                f"{self.n_molecules} molecules at {self.density_g_cm3:g} g/cm3 give {box:.2f} Å; "
                "use more molecules or a smaller cutoff"
            )
        return self

    @property
    def builtin_water(self) -> bool:
        """Whether the frames are thermocg's own water box (its size and box known from the config)."""
        return self.source == "openmm" and self.system == "water"

    def _check_files(self):
        if not self.data:
            raise ValueError("source = \"files\" needs the data: one [[reference.data]] table per temperature "
                             "(temperature_K, frames, optionally nve)")
        temps = [d.temperature_K for d in self.data]
        if sorted(temps) != sorted(self.temperatures_K):
            raise ValueError(f"temperatures_K {list(self.temperatures_K)} differ from the temperatures of "
                             f"[[reference.data]] {temps}: leave temperatures_K out, or list the same ones")
        for d in self.data:
            if len(d.nve) != self.nve.n_segments:
                raise ValueError(f"data at {d.temperature_K:g} K lists {len(d.nve)} NVE file(s), but "
                                 f"nve.n_segments = {self.nve.n_segments}: every temperature needs that many "
                                 "(0 for none)")
        return self

    def data_at(self, temperature_K: float) -> ImportedTemperature:
        """``source = "files"``: the [[reference.data]] entry of one temperature."""
        return next(d for d in self.data if d.temperature_K == temperature_K)

    @property
    def box_length_A(self) -> float:
        """Edge of the cubic box in Å (source = "openmm"; the files' boxes are known only when read)."""
        return box_length_A(self.n_molecules, self.density_g_cm3, WATER_MODELS[self.water_model].molar_mass)


class TargetsSection(_Section):
    """CG mapping and thermal-response targets: ``[targets]``."""

    #: Local-regression radius: u_loc,I sums the per-molecule energies within r_e of bead I.
    r_e_A: PositiveFloat = 6.5
    #: Radii of the r_e convergence check (written to targets/convergence.json).
    r_e_check_A: tuple[PositiveFloat, ...] = (3.5, 4.5, 5.5, 6.5, 7.5, 8.5)
    #: Baseline models for F0, U_J and v: pairwise splines fitted by least squares in
    #: seconds, or HIP-NN-TS networks (cv_folds trainings per fit and temperature).
    baseline: Literal["pair-spline", "hipnn"] = "pair-spline"
    #: Pair cutoff of the baselines (splines and networks); number of spline hat functions.
    baseline_cutoff_A: PositiveFloat = 8.0
    baseline_n_basis: Int = Field(40, ge=2)
    #: HIP-NN-TS baselines: epochs per training (early stopping may end it sooner) and width.
    baseline_max_epochs: Int = Field(100, ge=1)
    baseline_n_features: Int = Field(32, ge=1)
    #: Cross-fitting folds (over frames): a frame's baselines never see that frame.
    cv_folds: Int = Field(5, ge=1)
    #: Ridge regularisation of the baseline fits, relative to the normal matrix's mean diagonal.
    ridge: Float = Field(1e-8, ge=0)
    #: How the thermal-response targets are estimated: "restrained" (the default since issue 29:
    #: every centre of mass held on a spring at a reference frame's configuration, the
    #: orientations sampled; per configuration the mean force, -Cov(f, u_loc) and the third
    #: cumulant, with block-jackknife errors; no baselines) or "regression" (the paper's: one
    #: sample per frame, the products of fluctuations about the baselines above; THEORY.md §3).
    #: On water restrained trf2 beats fm at every T != T0 and regression trf2 is worse than fm
    #: everywhere (docs/results.md); the variants trf1-regression and trf2-regression keep the
    #: paper's targets beside the restrained ones in one run. An imported reference
    #: (reference.source = "files": no OpenMM system to sample) falls back to "regression"
    #: when the key is not set.
    method: Literal["regression", "restrained"] = "restrained"
    #: restrained: spring constant (kcal/mol/Å²; its period must be at least ten reference time
    #: steps: for water 4000 gives 20.5 fs, so at most a 2 fs step, and a spread of 0.012 Å at
    #: 300 K), configurations per temperature (the first training frames; unset: 25, or every
    #: training frame when there are fewer), equilibration before
    #: sampling, samples and their interval, jackknife blocks. Defaults from
    #: bench/restrained_targets.py and bench/restrained_bias.py (bench/RESULTS.md): 4 ps per
    #: configuration gives an order-1 SNR of ~0.6 per configuration on water; the springs' bias
    #: of the order-1 targets falls as 1/k and is ~0.04 kcal²/mol²/Å rms at 4000 (300 K), against
    #: a signal of ~0.6 (at 1000 it is ~0.15).
    restraint_k: PositiveFloat = 4000.0
    restrained_configurations: Int = Field(25, ge=1)
    restrained_equilibration_ps: PositiveFloat = 1.0
    restrained_samples: Int = Field(400, ge=6)
    restrained_interval_fs: PositiveFloat = 10.0
    restrained_blocks: Int = Field(10, ge=2)
    #: restrained: regress each bead's force and local energy on the offsets (from their
    #: springs' points) of the beads within this radius (Å; 0: its own offset only) and take the
    #: moments at zero offset, which removes the springs' bias to first order (THEORY.md §5).
    #: Off (unset) by default: it needs samples that are nearly independent. Exact on the
    #: oracle's independent samples, but on water's MD samples (u_loc correlated over ~50 fs)
    #: the regression on tens of neighbours' offsets overfits and swallows the signal
    #: (bench/RESULTS.md); stiff springs are the remedy there.
    restrained_offset_radius_A: Annotated[float | None, Strict(), Field(ge=0)] = None
    #: restrained: the temperatures whose thermal targets are sampled (empty: every reference
    #: temperature). The others keep their frames' mapped forces as order-0 targets only, which
    #: is all fm, fm-each and em read; trf1/trf2 need T0 here, trf-multi its training temperatures.
    restrained_temperatures_K: tuple[PositiveFloat, ...] = ()

    @model_validator(mode="after")
    def _check_restrained(self):
        if self.restrained_blocks > self.restrained_samples // 3:
            raise ValueError(f"targets.restrained_blocks = {self.restrained_blocks}: at most restrained_samples / 3 "
                             f"= {self.restrained_samples // 3}")
        return self


class TrainSection(_Section):
    """Training of the CG force fields: ``[train]``."""

    #: Model variants: fm (order 0 at T0), fm-each (an order-0 model at every reference
    #: temperature), em (energy matching: W1 = (U - W0)/beta0), trf1, trf2 (thermal heads at
    #: T0), trf-multi (orders 0-2 fitted jointly at training_temperatures_K: Hermite
    #: interpolation in beta).
    #: trf1-regression, trf2-regression: trf1 and trf2 on the paper's regression thermal targets
    #: while targets.method = "restrained" (the comparison in one run; same W0 as fm).
    variants: tuple[Literal["fm", "fm-each", "em", "trf1", "trf2", "trf-multi", "trf1-regression",
                            "trf2-regression"], ...] = Field(("fm", "trf2"), min_length=1)
    #: Reference temperature T0 (one of reference.temperatures_K).
    T0_K: PositiveFloat = 300.0
    #: Training temperatures of trf-multi (a subset of reference.temperatures_K; empty: T0 only).
    training_temperatures_K: tuple[PositiveFloat, ...] = ()
    #: Temperature dependence: "beta" (W0 + dB W1 + dB^2/2 W2) or "energy-entropy"
    #: (W = U - T S - (T - T0)^2/2 C); both are trained from the same targets.
    form: Literal["beta", "energy-entropy"] = "beta"
    #: em: fit U(R) to the total potential energies (THEORY.md §4, the published baseline)
    #: or to the per-molecule energies (the same U, far less noise).
    em_energy: Literal["total", "per-molecule"] = "total"
    #: HIP-NN-TS network (hippynn HipnnQuad, see ``interaction``): pair cutoff and sizes.
    cutoff_A: PositiveFloat = 6.0
    dist_soft_min_A: PositiveFloat = 2.0
    dist_soft_max_A: PositiveFloat = 5.5
    n_features: Int = Field(32, ge=1)
    n_sensitivities: Int = Field(10, ge=1)
    n_interaction_layers: Int = Field(1, ge=1)
    n_atom_layers: Int = Field(2, ge=1)
    #: trf-multi: one HIP-NN-TS representation shared by its W0, W1, W2 heads (true) or a network
    #: per head. The other variants fit W0 first and the other heads on networks of their own.
    shared_representation: Bool = True
    #: Tensor order of the pair messages: "quad" (HIP-NN-TS with l = 2, the paper's), "vec"
    #: (l = 1) or "scalar" (plain HIP-NN): cheaper per MD step, accuracy in bench/RESULTS.md.
    interaction: Literal["quad", "vec", "scalar"] = "quad"
    #: Repulsive prior: width dr and onset fraction p (THEORY.md §7).
    prior_width_A: PositiveFloat = 0.15
    prior_p: Float = Field(0.05, gt=0, lt=1)
    #: Optimisation.
    max_epochs: Int = Field(200, ge=1)
    batch_frames: Int = Field(4, ge=1)
    learning_rate: PositiveFloat = 1e-3
    lr_patience: Int = Field(10, ge=1)
    early_stop_patience: Int = Field(30, ge=1)
    valid_fraction: Float = Field(0.2, gt=0, lt=1)
    #: The last test_frames frames of every reference temperature are never trained on (nor
    #: used for early stopping): the evaluate stage's held-out force errors come from them.
    test_frames: Int = Field(0, ge=0)
    #: Loss weights of the order-0, 1, 2 targets (em: the order-1 weight weighs its energy loss).
    loss_weights: tuple[Float, Float, Float] = (1.0, 1.0, 1.0)
    #: Training seeds: every model is trained once per seed (initial weights, validation split,
    #: batch order), named ``<model>-seed<s>``; the evaluation reports the mean and spread over
    #: seeds. Empty: one training per model with ``[run] seed``, named ``<model>``.
    seeds: tuple[Annotated[int, Strict(), Field(ge=0, lt=2**31)], ...] = ()
    #: How the thermal targets' elements weigh in the loss: "uniform", or "inverse-variance"
    #: (targets with standard errors, i.e. restrained ones: each component by 1/se^2, the weight
    #: capped at that of the 10th-percentile error so that an error estimated too small by
    #: chance does not dominate). Missing targets (frames not sampled) weigh 0 either way.
    target_weighting: Literal["uniform", "inverse-variance"] = "uniform"
    #: The order-0 target of a frame with a restrained configuration (targets.method =
    #: "restrained"): its mapped force ("mapped", one sample of the mean force, as for every
    #: other frame) or the conditional mean force sampled there with every bead held
    #: ("restrained": the same expectation with a fraction of the noise; issue 29,
    #: bench/RESULTS.md). Every other frame keeps its mapped force either way.
    w0_targets: Literal["mapped", "restrained"] = "mapped"

    @model_validator(mode="after")
    def _check_weights(self):
        if len(set(self.variants)) != len(self.variants):
            raise ValueError(f"variants has duplicates: {list(self.variants)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds has duplicates: {list(self.seeds)}")
        if self.loss_weights[0] <= 0 or min(self.loss_weights) < 0:
            raise ValueError(f"loss_weights must be >= 0 with the order-0 weight > 0 (every model fits forces), "
                             f"found {list(self.loss_weights)}")
        return self


#: The timesteps each form of the force field takes when the config names none, (Langevin, NVE)
#: in fs, from the timestep study of issue 32 (bench/timestep.py on the water study's trf2 at 250,
#: 300, 500 and 700 K; bench/RESULTS.md, "The timestep each form can take"): the largest BAOAB
#: timestep at which g(r), the ADF and D stay within the noise of the 2 fs run at every temperature,
#: among those that divide the usual frame intervals (0.1, 0.5, 1 ps), and the largest velocity
#: Verlet timestep whose energy drift stays below 0.01 kB T per degree of freedom per ns. The
#: network's 5 fs is chosen between 4 and 6 fs, which pass cleanly (8-10 fs pass the test by a
#: hair with D 5-11 % low at 250-300 K; a 5 fs run at the four temperatures passes too). The
#: distilled form (fitted with compressed frames) passes to 8 fs, which does not divide 0.1 or
#: 0.5 ps, so it takes 5 fs as well.
ENGINE_TIMESTEPS_FS = {"fast": (5.0, 1.0), "hippynn": (5.0, 1.0), "distilled": (5.0, 2.0)}


class SimulateNVESection(NVESection):
    """NVE (velocity Verlet) segments of the CG simulations, for dynamics: ``[simulate.nve]``
    (the keys of ``[reference.nve]``)."""

    #: Segments per model and temperature, started from frames spread over the Langevin run.
    n_segments: Int = Field(2, ge=0)
    #: Velocity Verlet timestep. Unset: the engine's measured default (the network 1 fs, the
    #: distilled form 2 fs: the largest with an energy drift below 0.01 kB T per degree of freedom
    #: per ns on water beads at 250-700 K; bench/RESULTS.md, bench/timestep.py).
    timestep_fs: PositiveFloat | None = None
    #: Multiple time stepping in the NVE segments, as ``[simulate] mts_substeps``.
    mts_substeps: Int = Field(1, ge=1)


class SimulateSection(_Section):
    """CG molecular dynamics with the trained models: ``[simulate]``."""

    #: Models to simulate, by file name in the train stage (``fm``, ``trf2``, ``fm-each-T300K``);
    #: empty: every trained model (an ``fm-each`` model only at its own temperature).
    models: tuple[str, ...] = ()
    #: Temperatures (empty: the reference temperatures). Any positive value works: a run starts
    #: from the last reference frame at the nearest reference temperature.
    temperatures_K: tuple[PositiveFloat, ...] = ()
    #: With several training seeds (``[train] seeds``): the temperatures at which the model of
    #: every seed is simulated; elsewhere only the first seed's. Empty: every seed everywhere.
    seed_temperatures_K: tuple[PositiveFloat, ...] = ()
    #: Independent runs per temperature (own random stream, same start).
    replicas: Int = Field(1, ge=1)
    #: Langevin (BAOAB) timestep. Unset: the engine's measured default, 5 fs (on water beads at
    #: 250-700 K, g(r), the ADF and D stay within their noise of the 2 fs run at 4-6 fs for the
    #: network and at 4-8 fs for the distilled form; bench/RESULTS.md, bench/timestep.py).
    timestep_fs: PositiveFloat | None = None
    #: Langevin friction, equilibration from the start frame, frames and their interval.
    friction_per_ps: Float = Field(1.0, ge=0)
    equilibration_ps: Float = Field(20.0, ge=0)
    n_frames: Int = Field(100, ge=1)
    frame_interval_ps: PositiveFloat = 1.0
    #: A run stops with an error when a force component exceeds this (kcal/(mol Å)) or two
    #: beads come closer than min_distance_A (checked every check_interval steps).
    max_force: PositiveFloat = 2000.0
    min_distance_A: PositiveFloat = 1.5
    check_interval: Int = Field(10, ge=1)
    #: What a system that fails those checks does. "record": it is a result, not a crash: the
    #: stage writes ``<model>/<T>.unstable.json`` (the step and the check), runs the model's
    #: other systems without it (a failure in NVE keeps its Langevin frames) and goes on with the
    #: other models; evaluate and the report name it. "stop": the stage stops with the error. Each
    #: system's trajectory is the same either way, so it is not part of the config hash.
    unstable: Literal["record", "stop"] = "record"
    #: Pair-list skin, Å: pairs within cutoff + skin are kept and re-searched only when a bead
    #: has moved skin/2 (shrunk to fit half the box). 0: a new search at every step.
    neighbor_skin_A: Float = Field(1.0, ge=0)
    #: How the force field is run: "fast", its plain-torch inference form with vesin cell lists
    #: and numba pair kernels on the CPU (thermocg.models.fast; the same function to float
    #: rounding, 5-9x faster on 2 CPU cores: bench/RESULTS.md), or "hippynn", the training
    #: library's graph.
    #: "distilled": tabulated pair + three-body terms with the model's temperature expansion,
    #: fitted to the model's forces on its training frames (thermocg.models.distilled; accuracy
    #: and cost in bench/RESULTS.md, bench/distill.py), fitted per model when the stage starts.
    engine: Literal["fast", "hippynn", "distilled"] = "fast"
    #: engine = "distilled": frames per training temperature it is fitted on (the first ones,
    #: never the held-out test frames), and the three-body radius (0: pair terms only).
    distilled_frames: Int = Field(30, ge=1)
    distilled_r3_A: Float = Field(3.6, ge=0)
    #: Multiple time stepping (r-RESPA, BAOAB-RESPA in Langevin): the network once per
    #: timestep_fs, the repulsive prior (and the thermostat) at mts_substeps inner steps of
    #: timestep_fs / mts_substeps. 1: off. Needs engine = "fast". On water beads the network's
    #: own forces set the NVE step; in Langevin sampling 8 fs with 4 substeps keeps U, g(r) and D
    #: of 4 fs at 300 and 600 K for 1.3x the speed, with the kinetic temperature 1 % low at 600 K
    #: (bench/RESULTS.md, bench/timestep.py), so the default stays off.
    mts_substeps: Int = Field(1, ge=1)
    #: The NVE segments for D_CG: ``[simulate.nve]``.
    nve: SimulateNVESection = Field(default_factory=SimulateNVESection)

    @model_validator(mode="after")
    def _check_intervals(self):
        langevin_fs, nve_fs = ENGINE_TIMESTEPS_FS[self.engine]
        unset = f", engine {self.engine!r}'s default: it is unset"  # a value the user did not write
        note = ""
        if self.timestep_fs is None:  # frozen model: set once, here, before anything reads it
            object.__setattr__(self, "timestep_fs", langevin_fs)
            note = unset
        if self.nve.timestep_fs is None:  # a copy: the nve object may be the caller's, or shared
            object.__setattr__(self, "nve", self.nve.model_copy(update={"timestep_fs": nve_fs}))
            # the one check [simulate.nve] could not make without its timestep
            _check_multiple(self.nve.frame_interval_fs, nve_fs, "nve.frame_interval_fs", "nve.timestep_fs", True,
                            unset)
        _check_multiple(self.frame_interval_ps * 1000.0, self.timestep_fs, "frame_interval_ps", "timestep_fs", True,
                        note)
        _check_multiple(self.equilibration_ps * 1000.0, self.timestep_fs, "equilibration_ps", "timestep_fs", note=note)
        if max(self.mts_substeps, self.nve.mts_substeps) > 1 and self.engine != "fast":
            raise ValueError(f"mts_substeps > 1 needs engine = 'fast' (found engine = {self.engine!r}): the "
                             "hippynn graph has no separate prior term to step on its own")
        if self.nve.n_segments > self.n_frames:
            raise ValueError(f"nve.n_segments = {self.nve.n_segments} exceeds n_frames = {self.n_frames}: "
                             "each segment starts from a different sampled frame")
        return self


class EvaluateSection(_Section):
    """Comparison of the CG simulations with the all-atom reference: ``[evaluate]``."""

    #: RDF range (below half the box edge) and bins.
    rdf_r_max_A: PositiveFloat = 8.0
    rdf_bins: Int = Field(160, ge=10, le=100_000)
    #: First-shell radius of the ADF (the first minimum of water's bead g(r)) and bins.
    adf_r_cut_A: PositiveFloat = 3.4
    adf_bins: Int = Field(90, ge=10, le=100_000)
    #: Einstein fit of the MSD, as fractions of the longest lag of the NVE segments.
    msd_fit_window: tuple[Float, Float] = (0.2, 0.6)
    #: Blocks of frames for the uncertainties of the structural numbers.
    blocks: Int = Field(4, ge=2)
    #: Shear viscosity per temperature label (e.g. ``T300K = 0.73``), mPa s: with it the
    #: Yeh-Hummer correction of D is given in mPa s units too; without it, only the correction
    #: times the viscosity (reported separately either way).
    viscosity_mPa_s: dict[str, PositiveFloat] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_window(self):
        a, b = self.msd_fit_window
        if not 0 <= a < b <= 1:
            raise ValueError(f"msd_fit_window must be [start, end] with 0 <= start < end <= 1 (fractions of the "
                             f"longest lag), found {list(self.msd_fit_window)}")
        return self


class Config(_Section):
    """A whole thermocg configuration."""

    run: RunSection = Field(default_factory=RunSection)
    reference: ReferenceSection = Field(default_factory=ReferenceSection)
    targets: TargetsSection = Field(default_factory=TargetsSection)
    train: TrainSection = Field(default_factory=TrainSection)
    simulate: SimulateSection = Field(default_factory=SimulateSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)

    @model_validator(mode="before")
    @classmethod
    def _imported_reference_regresses(cls, data):
        """An imported reference has no OpenMM system to sample restrained configurations: unless
        ``[targets] method`` is set, its thermal targets are regression ones (the targets stage
        says so in one line)."""
        if not isinstance(data, dict):
            return data
        ref, targets = data.get("reference", {}), data.get("targets", {})
        source = ref.get("source") if isinstance(ref, dict) else getattr(ref, "source", None)
        if source == "files" and isinstance(targets, dict) and "method" not in targets:
            data = {**data, "targets": {**targets, "method": "regression"}}
            targets = data["targets"]
        # restrained_configurations unset: 25, or every training frame when there are fewer (a
        # small config need not name it; a value set is checked against the frames)
        train = data.get("train", {})
        if (isinstance(targets, dict) and isinstance(ref, dict) and isinstance(train, dict)
                and targets.get("method", "restrained") == "restrained" and "restrained_configurations" not in targets):
            fields = ReferenceSection.model_fields
            frames = ref.get("n_frames", fields["n_frames"].default) - train.get(
                "test_frames", TrainSection.model_fields["test_frames"].default)
            default = TargetsSection.model_fields["restrained_configurations"].default
            if isinstance(frames, int) and 1 <= frames < default:
                data = {**data, "targets": {**targets, "restrained_configurations": frames}}
        return data

    @property
    def restrained_temperatures_K(self) -> tuple[float, ...]:
        """The temperatures whose configurations ``[targets] method = "restrained"`` samples:
        ``targets.restrained_temperatures_K``, or every reference temperature when it is empty."""
        return self.targets.restrained_temperatures_K or self.reference.temperatures_K

    def path(self, path) -> Path:
        """A path of the config (``~`` expanded) relative to the config file's directory, made
        absolute: manifests record absolute paths, so a run from another working directory
        finds the same files."""
        base = self.source.parent if self.source is not None else Path.cwd()
        return (base / Path(path).expanduser()).resolve()

    def user_files(self) -> list[Path]:
        """The user's files the reference stage reads (the PDB, force-field XML files that are
        files rather than OpenMM's built-in names, imported frames and NVE segments, the LAMMPS
        data file): the stage records their checksums and runs again when one changes."""
        ref = self.reference
        files = []
        if ref.source == "openmm" and ref.system == "pdb":
            files = [self.path(ref.pdb)] + [p for p in map(self.path, ref.forcefield) if p.is_file()]
        elif ref.source == "files":
            files = [self.path(f) for d in ref.data for f in (d.frames, *d.nve)]
            if ref.lammps_data is not None:
                files.append(self.path(ref.lammps_data))
        return files

    def cutoffs_A(self) -> dict[str, float]:
        """Every distance that must stay below half the box edge, by its config key."""
        out = {f"{section}.{name}": getattr(getattr(self, section), name)
               for section, name in (("targets", "baseline_cutoff_A"), ("train", "cutoff_A"),
                                     ("evaluate", "rdf_r_max_A"), ("evaluate", "adf_r_cut_A"))}
        if self.reference.source == "openmm":
            out["reference.cutoff_A"] = self.reference.cutoff_A
        return out

    @model_validator(mode="after")
    def _check_across_sections(self):
        """The rules that join two or more sections (cutoffs against the box, restrained targets
        against the reference's source and frames, training temperatures against the reference's,
        file names of temperatures, viscosities against the temperatures)."""
        if self.reference.builtin_water:  # other boxes are checked when they are read
            half = self.reference.box_length_A / 2
            for key, value in self.cutoffs_A().items():
                if value >= half:
                    raise ValueError(f"{key} = {value:g} must be below half the box edge ({half:.2f} Å)")
        elif self.reference.source == "files" and self.targets.method == "restrained":
            raise ValueError("targets.method = \"restrained\" samples with the reference's OpenMM system, which "
                             "reference.source = \"files\" does not have; use method = \"regression\"")
        if self.reference.n_frames - self.train.test_frames < 2:
            raise ValueError(f"train.test_frames = {self.train.test_frames} leaves "
                             f"{self.reference.n_frames - self.train.test_frames} training frame(s) of "
                             f"reference.n_frames = {self.reference.n_frames}; training needs at least 2 (one "
                             "to fit, one to validate)")
        r3 = self.simulate.distilled_r3_A
        if self.simulate.engine == "distilled" and r3 and not 2.5 < r3 <= self.train.cutoff_A:
            raise ValueError(f"simulate.distilled_r3_A = {r3:g} Å: the three-body radius must lie above 2.5 Å (the "
                             f"radial splines start at 2.2 Å) and not beyond train.cutoff_A = "
                             f"{self.train.cutoff_A:g} Å; 0 means pair terms only")
        training = self.reference.n_frames - self.train.test_frames
        for t in (self.train.T0_K, *self.train.training_temperatures_K):
            if t not in self.reference.temperatures_K:
                raise ValueError(f"train temperature {t:g} K (T0_K or training_temperatures_K) is not one "
                                 f"of reference.temperatures_K {list(self.reference.temperatures_K)}")
        regression_variants = [v for v in self.train.variants if v.endswith("-regression")]
        if regression_variants and self.targets.method == "regression":
            raise ValueError(f"train.variants {regression_variants}: with targets.method = \"regression\" trf1 and "
                             "trf2 already have regression targets; list trf1/trf2 instead")
        if self.train.w0_targets == "restrained" and self.targets.method != "restrained":
            raise ValueError("train.w0_targets = \"restrained\" fits W0 to restrained mean forces, which "
                             "targets.method = \"regression\" does not sample")
        if self.targets.method == "restrained":
            if self.targets.restrained_configurations > training:
                raise ValueError(f"targets.restrained_configurations = {self.targets.restrained_configurations} "
                                 f"exceeds the {training} training frames per temperature (reference.n_frames - "
                                 "train.test_frames)")
            _check_multiple(self.targets.restrained_interval_fs, self.reference.timestep_fs,
                            "targets.restrained_interval_fs", "reference.timestep_fs", at_least_one=True)
            sampled = self.restrained_temperatures_K
            for t in sampled:
                if t not in self.reference.temperatures_K:
                    raise ValueError(f"targets.restrained_temperatures_K: {t:g} K is not one of "
                                     f"reference.temperatures_K {list(self.reference.temperatures_K)}")
            need = {t: v for v in self.train.variants if v in ("trf1", "trf2", "trf-multi")
                    for t in ((self.train.training_temperatures_K or (self.train.T0_K,)) if v == "trf-multi"
                              else (self.train.T0_K,))}
            for t, v in need.items():
                if t not in sampled:
                    raise ValueError(f"train.variants has {v}, which needs thermal targets at {t:g} K, but "
                                     f"targets.restrained_temperatures_K = {list(sampled)} leaves it out")
        for section in ("reference", "simulate"):  # temperatures name files: two may not share a name
            temps = getattr(self, section).temperatures_K
            labels = [temperature_label(t) for t in temps]
            clash = sorted({lab for lab in labels if labels.count(lab) > 1})
            if clash:
                raise ValueError(f"{section}.temperatures_K {list(temps)}: temperatures that differ by less than "
                                 f"the file names show ({', '.join(clash)}) would write the same files")
        known = {temperature_label(t) for t in (*self.reference.temperatures_K, *self.simulate.temperatures_K)}
        unknown = sorted(set(self.evaluate.viscosity_mPa_s) - known)
        if unknown:
            raise ValueError(f"evaluate.viscosity_mPa_s: {unknown} name no temperature of the run (keys are file "
                             f"labels: {sorted(known)})")
        return self
    #: The file this configuration was read from (set by :func:`load_config`).
    source: Path | None = Field(None, exclude=True)

    @property
    def run_dir(self) -> Path:
        """The run directory, resolved against the config file's directory."""
        base = self.source.parent if self.source is not None else Path.cwd()
        return (base / self.run.directory.expanduser()).resolve()

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (plus the seed): what a stage's outputs depend on.

        ``run.device`` and ``run.processes`` change how, not what, and are left out.
        """
        payload = {name: _hashed(name, getattr(self, name)) for name in names}
        payload["seed"] = self.run.seed
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Keys added after run directories existed: left out of the config hash at the value that
#: reproduces the earlier outputs (their default, or the one in :data:`_EARLIER_VALUES`), so adding
#: them leaves finished stages up to date.
_ADDED_KEYS = {"reference": ("source", "data", "format", "energy_unit", "lammps_data", "lammps_atom_style",
                             "lammps_pe_atom", "lammps_pe_total", "system", "pdb", "forcefield", "constraints",
                             "rigid_water"),
               "targets": ("method", "restraint_k", "restrained_configurations", "restrained_equilibration_ps",
                           "restrained_samples", "restrained_interval_fs", "restrained_blocks",
                           "restrained_offset_radius_A", "restrained_temperatures_K"),
               "train": ("target_weighting", "w0_targets"),
               "simulate": ("engine", "mts_substeps", "nve.mts_substeps", "distilled_frames", "distilled_r3_A")}
#: Added keys whose earlier behaviour is not their default: every simulate stage before the
#: inference form (issue 16) ran hippynn's graph, so a run that says engine = "hippynn" matches
#: them, and the default ("fast": the same function, another floating-point path and speed) is
#: a new run; every targets stage before issue 29 estimated regression targets unless told
#: otherwise.
_EARLIER_VALUES = {("simulate", "engine"): "hippynn", ("targets", "method"): "regression"}


#: Keys that change what happens on a failure, never a finished output: left out of the hash.
_HOW_KEYS = {"simulate": ("unstable",)}


def _hashed(name: str, section: BaseModel) -> dict:
    """A section's values as its stages' config hash sees them: keys of :data:`_ADDED_KEYS` at their
    defaults are left out, and so are the restrained-sampling keys while targets.method is
    "regression" (they change nothing then)."""
    data = section.model_dump(mode="json")
    for key in _HOW_KEYS.get(name, ()):
        data.pop(key)
    regression = name == "targets" and data["method"] == "regression"
    for key in _ADDED_KEYS.get(name, ()):
        # the distilled keys change nothing unless the engine is "distilled"
        unused = (regression and key.startswith("restrain")) or (key.startswith("distilled")
                                                                   and section.engine != "distilled")
        # a restrained run hashes every restrained key: their defaults have changed since the
        # first restrained runs (restraint_k 1000 -> 4000), which must not pass for up to date
        used = name == "targets" and not regression and key.startswith("restrain")
        *parents, leaf = key.split(".")  # "nve.mts_substeps": a key of a subsection
        holder, model = data, section
        for parent in parents:
            holder, model = holder[parent], getattr(model, parent)
        earlier = _EARLIER_VALUES.get((name, key), type(model).model_fields[leaf].default)
        earlier = list(earlier) if isinstance(earlier, tuple) else earlier  # as model_dump(mode="json") has it
        if unused or (not used and holder[leaf] == earlier):
            holder.pop(leaf)
    return data


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a TOML configuration file.

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not valid TOML, or a field is
        unknown or invalid. The message names the file and the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r}); "
                          "TOML files are UTF-8") from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return config_from_dict(data, source=path)


def config_from_dict(data: dict, source: Path | None = None) -> Config:
    """Validate a configuration given as a dict (the parsed TOML)."""
    where = str(source) if source is not None else "<config>"
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(f"{where}: {_describe(err)}") from err


def _describe(err: ValidationError) -> str:
    """One line per problem: the field, what was expected, what was found."""
    lines = []
    for e in err.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}' (found {e['input']!r}); check the spelling and the section")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("value_error", "assertion_error"):
            lines.append(f"field '{loc}': {msg}" if loc else msg)
        else:
            lines.append(f"field '{loc}': expected {msg.removeprefix('Input should be ')}, found {e['input']!r}")
    return "; ".join(lines)
