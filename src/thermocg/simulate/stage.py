"""The simulate stage: CG molecular dynamics with every trained model at every temperature.

For each model, all its temperatures (x ``replicas``) run as one batch of systems in
the torch engine (:mod:`thermocg.simulate.engine`): one forward pass of the model per
step gives every system's forces, each at its own temperature. Each system starts from
the last all-atom reference frame (mapped to beads) at the nearest reference
temperature, is equilibrated and sampled with BAOAB Langevin, and then ``[simulate.nve]``
segments (velocity Verlet, started from sampled frames) give the dynamics, as in the
reference stage. Outputs in ``<run.directory>/simulate/<model>/``::

    T300K.h5md            Langevin frames: unwrapped positions, velocities, box,
                          potential/kinetic energy, kinetic temperature (H5MD)
    T300K-r01.h5md        further replicas, when replicas > 1
    T300K-nve00.h5md      NVE segments: positions, velocities, energies incl. total
    beads.pdb             bead topology (one residue "SOL" with one atom "CG" per bead)
                          for MDAnalysis and VMD: mda.Universe("beads.pdb", "T300K.h5md")
    .nvt.ckpt, .*.part    while it runs: the checkpoint (positions, velocities, random
                          streams, step) and the frames so far; a re-run resumes there

With ``[run] scheduler`` each model's batch is a Dask task (:mod:`thermocg.cluster`),
run where a worker is, on its device and threads, writing the same files.

A run that fails (NaN, a force above ``max_force``, beads closer than
``min_distance_A``) stops with an error naming the model, step and temperature and
keeps the frames it wrote in the ``.part`` files.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from thermocg import __version__, units
from thermocg.config import Config, SimulateSection
from thermocg.errors import ConfigError, SimulationError
from thermocg.io.h5md import H5MDWriter, read_h5md
from thermocg.io.strict import number
from thermocg.io.records import ReferenceRun, TrainedModels, TrajectoryRun, Trajectories
from thermocg.io.trajectory import (ResumableTrajectories, check_existing, frame_fingerprint, nve_start_frames,
                                    steps)
from thermocg.labels import temperature_label
from thermocg.models.saved import load_model
from thermocg.simulate.engine import Integrator, Safety, model_force_function, split_force_functions
from thermocg.stagedir import atomic_path
from thermocg.runlock import locked_stage

log = logging.getLogger(__name__)

STAGE = "simulate"


def simulate_dir(config: Config) -> Path:
    """This stage's directory for ``config`` (from the pipeline table)."""
    from thermocg import pipeline
    return pipeline.stage(STAGE).directory(config)


def simulation_jobs(config: Config, models: TrainedModels | None = None) -> dict[str, tuple[float, ...]]:
    """Model name -> temperatures to simulate it at (``models``: the train stage's record;
    read from the run directory when not given)."""
    from thermocg import pipeline

    models = models if models is not None else pipeline.read(config, "train")
    s = config.simulate
    temps = tuple(s.temperatures_K or config.reference.temperatures_K)
    if s.models:
        unknown = [m for m in s.models if m not in models.names]
        if unknown:
            raise ConfigError(f"simulate.models: {unknown} are not models of this config's train stage "
                              f"(available: {sorted(models.names)})")
        return {m: temps for m in s.models}
    first_seed = {}
    for m in models.models:
        first_seed.setdefault(m.group, m.seed)
    jobs = {}
    for m in models.models:
        mine = temps
        if m.single_temperature:  # fm-each: at its own temperature only
            mine = tuple(t for t in mine if t in m.training_temperatures_K)
        if s.seed_temperatures_K and m.seed != first_seed[m.group]:  # further seeds: only where asked
            mine = tuple(t for t in mine if any(abs(t - u) < 1e-9 for u in s.seed_temperatures_K))
        if mine:
            jobs[m.name] = mine
    return jobs


def system_seed(seed: int, model: str, temperature_K: float, replica: int) -> int:
    """A seed per (model, temperature, replica), stable across runs and batch layouts."""
    text = f"{seed}:{model}:{temperature_K!r}:{replica}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def start_frame(reference: ReferenceRun, temperature_K: float):
    """The last reference frame at the reference temperature nearest ``temperature_K``, mapped to
    beads (:class:`thermocg.mapping.CGFrames`: its positions, box, bead masses and types)."""
    nearest = min(reference.temperatures_K, key=lambda t: abs(t - temperature_K))
    return reference.cg_frames(nearest)


@locked_stage
def run_simulate(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume, or skip) the CG simulations of every model and temperature."""
    from thermocg import pipeline
    from thermocg.device import pick_device

    models = pipeline.read(config, "train")
    reference = pipeline.read(config, "reference")
    jobs = simulation_jobs(config, models)  # a bad [simulate] models list is refused before anything is touched
    stage = pipeline.stage(STAGE).stage_dir(config)
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest
    outputs, summary, runs = {}, {}, {}
    if config.run.scheduler is not None:
        _simulate_on_dask(config, jobs, stage, show_progress, outputs, summary, runs)
    else:
        device = pick_device(config.run.device)
        systems_total = sum(len(t) for t in jobs.values()) * config.simulate.replicas
        systems_done, t_start = 0, time.monotonic()
        for k, (name, temps) in enumerate(jobs.items()):
            batch = Batch.of(models, name, temps, config, reference, stage.path, stage.config_hash, device)
            started = time.monotonic()
            files, summary[name] = simulate_model(batch, show_progress, stage.add_outputs)
            outputs[name] = [f"{name}/{f}" for f in files]
            runs[name] = batch.record()
            systems_done += len(batch.systems)
            rate = (time.monotonic() - t_start) / systems_done
            log.info("simulate %s: %d system(s) in %.0f s; %d/%d models, about %.0f min left", name,
                     len(batch.systems), time.monotonic() - started, k + 1, len(jobs),
                     rate * (systems_total - systems_done) / 60)
    record = Trajectories(stage.path, tuple(r for name in jobs for r in runs[name]))
    return stage.write_manifest(True, config_json, {name: outputs[name] for name in jobs},
                                {name: summary[name] for name in jobs}, record.to_json())


@dataclass(frozen=True)
class ModelTask:
    """One model at its temperatures (one batch, as in the local run): a Dask task of the stage."""

    config: Config
    name: str
    temperatures_K: tuple[float, ...]
    stage_path: Path
    config_hash: str


def simulate_task(task: ModelTask) -> tuple[list[str], dict, list[TrajectoryRun]]:
    """Run (or resume) one model's batch where this is called (a Dask worker): the records read
    from the shared run directory, the device picked here, torch limited to the worker's threads.
    Returns the output names (relative to the model's directory), its summary and its runs."""
    from thermocg import cluster, pipeline
    from thermocg.device import pick_device

    cluster.use_worker_threads()
    config = task.config
    batch = Batch.of(pipeline.read(config, "train"), task.name, task.temperatures_K, config,
                     pipeline.read(config, "reference"), task.stage_path, task.config_hash,
                     pick_device(config.run.device))
    files, summary = simulate_model(batch, show_progress=False)
    return files, summary, batch.record()


def _simulate_on_dask(config: Config, jobs: dict, stage, show_progress: bool, outputs: dict, summary: dict,
                      runs: dict) -> None:
    """Every model's batch as a Dask task (:mod:`thermocg.cluster`); each model's outputs are
    recorded in the manifest as its task ends (an interrupted task resumes from its checkpoint
    and part files, as a local run does)."""
    from tqdm.auto import tqdm

    from thermocg.workers import run_tasks

    tasks = [ModelTask(config, name, tuple(temps), stage.path, stage.config_hash) for name, temps in jobs.items()]
    bar = tqdm(total=len(tasks), desc="simulate (dask)", unit="model", disable=not show_progress)

    def done(task: ModelTask, result) -> None:
        files, summary[task.name], runs[task.name] = result
        outputs[task.name] = [f"{task.name}/{f}" for f in files]
        stage.add_outputs(outputs[task.name])
        bar.update(1)

    try:
        run_tasks(simulate_task, tasks, 1, None, done, lambda t: f"simulate {t.name}", SimulationError,
                  scheduler=config.run.scheduler)
    finally:
        bar.close()


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's lines for a finished simulate stage: speed and kinetic temperatures per model."""
    lines = []
    for model, s in manifest.get("summary", {}).items():
        nvt = s.get("nvt")
        if isinstance(nvt, dict):
            temps = ", ".join(f"{k} {number(v['mean_kinetic_temperature_K'], '.0f')} K" for k, v in nvt.items()
                              if isinstance(v, dict))
            lines.append(f"{model}: {number(nvt['ns_per_day_per_system'], '.2f')} ns/day per system "
                         f"({nvt['systems_in_batch']} in a batch); kinetic temperatures {temps}")
    return lines


def distil(model, reference: ReferenceRun, config: Config, device):
    """The distilled form of ``model`` (:class:`thermocg.models.distilled.DistilledForceField`), fitted
    to its forces on the first ``[simulate] distilled_frames`` reference frames at each of its
    training temperatures (never the held-out test frames)."""
    from thermocg.models.distilled import DistilledForceField

    s = config.simulate
    temps = model.metadata.get("training_temperatures_K") or [model.metadata["T0_K"]]
    n = min(s.distilled_frames, config.reference.n_frames - config.train.test_frames)
    frames = [reference.cg_frames(float(t)) for t in temps]
    started = time.monotonic()
    distilled = DistilledForceField.fit(model, np.concatenate([f.positions[:n] for f in frames]),
                                        np.concatenate([f.box[:n] for f in frames]),
                                        r3_A=s.distilled_r3_A or None, skin_A=s.neighbor_skin_A)
    log.info("simulate: distilled %s on %d frames in %.0f s", model.metadata.get("variant", "model"),
             n * len(frames), time.monotonic() - started)
    return distilled.to(device)


@dataclass
class Batch:
    """One model's systems (temperatures x replicas), simulated as one batch, and where they go."""

    name: str
    model: object  # a CGForceField
    settings: SimulateSection
    systems: list[tuple[float, int]]  # (temperature, replica)
    seeds: list[int]
    start_x: np.ndarray  # (B, N, 3) Å
    masses: np.ndarray
    box: np.ndarray
    #: each bead's type (N,) and the type names (a mixture; None: one type)
    types: np.ndarray | None
    out_dir: Path
    config_hash: str
    device: object
    meta: dict
    reference: ReferenceRun = None
    config: Config = None
    #: (the force function, (slow, fast) or (None, None)), built by :meth:`force_functions`
    functions: tuple | None = None

    def force_functions(self):
        """(the force function, (slow, fast) parts for multiple time stepping or (None, None)),
        built on first use: a finished batch neither builds an inference form nor fits a
        distilled one."""
        if self.functions is None:
            s = self.settings
            if s.engine == "distilled":
                fn = model_force_function(distil(self.model, self.reference, self.config, self.device),
                                          engine="distilled")
            else:
                fn = model_force_function(self.model, skin_A=s.neighbor_skin_A, engine=s.engine, types=self.types)
            split = (split_force_functions(self.model, skin_A=s.neighbor_skin_A, types=self.types)
                     if max(s.mts_substeps, s.nve.mts_substeps) > 1 else (None, None))
            self.functions = (fn, split)
        return self.functions

    @classmethod
    def of(cls, models: TrainedModels, name: str, temps, config: Config, reference: ReferenceRun, stage_path: Path,
           config_hash: str, device) -> "Batch":
        s = config.simulate
        model = load_model(models.path(name), device=str(device))
        systems = [(t, r) for t in temps for r in range(s.replicas)]
        starts = {t: start_frame(reference, t) for t in temps}
        meta = {"model": name, "variant": model.metadata.get("variant", name),
                "model_T0_K": model.metadata.get("T0_K"), "config_hash": config_hash,
                "config": config.model_dump_json(exclude={"source"}), "thermocg_version": __version__,
                "torch_version": torch.__version__, "device": str(device),
                "positions": "unwrapped (continuous in time)"}
        first = starts[temps[0]]
        for t in temps[1:]:  # every start frame has the beads of the first, in the same order
            if starts[t].bead_types != first.bead_types or not np.array_equal(starts[t].bead_type, first.bead_type):
                raise ConfigError(f"simulate {name}: the reference frames at {t:g} K have other bead types "
                                  f"({list(starts[t].bead_types)}) or another order than at {temps[0]:g} K")
        if len(first.bead_types) > 1:
            meta["bead_types"] = list(first.bead_types)
            if tuple(model.bead_types) != first.bead_types:
                raise ConfigError(f"simulate {name}: the model was trained on bead types {list(model.bead_types)}, "
                                  f"the reference has {list(first.bead_types)}")
            if s.engine == "distilled":
                raise ConfigError(f"simulate {name}: engine = \"distilled\" fits one pair potential for one bead "
                                  f"type; these beads have {len(first.bead_types)} ({', '.join(first.bead_types)}): "
                                  "use engine = \"fast\"")
        return cls(name=name, model=model, settings=s, systems=systems, reference=reference, config=config,
                   seeds=[system_seed(config.run.seed, name, t, r) for t, r in systems],
                   start_x=np.stack([starts[t].positions[-1] for t, _ in systems]), masses=first.bead_masses,
                   box=first.box[-1], types=first.bead_type if len(first.bead_types) > 1 else None,
                   out_dir=stage_path / name, config_hash=config_hash, device=device, meta=meta)

    @property
    def labels(self) -> list[str]:
        return [temperature_label(t) + (f"-r{r:02d}" if r else "") for t, r in self.systems]

    @property
    def finals(self) -> list[Path]:
        return [self.out_dir / f"{label}.h5md" for label in self.labels]

    @property
    def nve_files(self) -> list[list[Path]]:
        return [[self.out_dir / f"{label}-nve{k:02d}.h5md" for k in range(self.settings.nve.n_segments)]
                for label in self.labels]

    def record(self) -> list[TrajectoryRun]:
        return [TrajectoryRun(self.name, t, r, f"{self.name}/{f.name}", tuple(f"{self.name}/{g.name}" for g in nve))
                for (t, r), f, nve in zip(self.systems, self.finals, self.nve_files)]

    def integrator(self, fns, temperatures, seeds, timestep_fs, friction_per_ps, substeps: int = 1) -> Integrator:
        """``fns``: (the whole force function, (slow, fast) parts for multiple time stepping)."""
        s = self.settings
        whole, (slow, fast) = fns
        return Integrator(whole if substeps == 1 else slow, self.masses, self.box, temperatures,
                          timestep_fs=timestep_fs, friction_per_ps=friction_per_ps, seeds=seeds, device=self.device,
                          safety=Safety(max_force=s.max_force, min_distance_A=s.min_distance_A,
                                        interval=s.check_interval),
                          fast_fn=None if substeps == 1 else fast, substeps=substeps)

    def finished(self, path: Path, n_frames: int, start: tuple[Path, int] | None = None) -> bool:
        from thermocg import pipeline
        return check_existing(path, self.config_hash, pipeline.stage(STAGE).section_label, n_frames, start)


def simulate_model(batch: Batch, show_progress: bool = True, finished=None) -> tuple[list[str], dict]:
    """Langevin sampling, then NVE segments, of one model at its temperatures (one batch).

    ``finished(names)`` is called with the outputs (relative to the stage's directory) as soon as
    they are complete. Returns the output file names (relative to the batch's directory) and a
    summary per system.
    """
    finished = finished or (lambda names: None)
    s = batch.settings
    batch.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    write_bead_topology(batch.out_dir / "beads.pdb", batch.start_x[0], batch.box,
                        None if batch.types is None else [residue_names(batch.meta["bead_types"])[k]
                                                          for k in batch.types])
    files = ["beads.pdb"] + [f.name for f in batch.finals] + [f.name for row in batch.nve_files for f in row]
    try:
        if all([batch.finished(f, s.n_frames) for f in batch.finals]):  # a list: check (and clean) every file
            summary["nvt"] = "up to date"
        else:
            md = batch.integrator(batch.force_functions(), [t for t, _ in batch.systems], batch.seeds,
                                  s.timestep_fs, s.friction_per_ps, s.mts_substeps)
            summary["nvt"] = _run_nvt(md, batch, show_progress)
            finished([f"{batch.name}/{f.name}" for f in batch.finals])
        if s.nve.n_segments:
            starts = nve_start_frames(s.n_frames, s.nve.n_segments)
            n_out = steps(s.nve.length_ps * 1000, s.nve.frame_interval_fs) + 1
            if all([batch.finished(f, n_out, (batch.finals[i], starts[k]))
                    for i, row in enumerate(batch.nve_files) for k, f in enumerate(row)]):
                summary["nve"] = "up to date"
            else:
                summary["nve"] = _run_nve(batch.force_functions(), batch, show_progress)
                finished([f"{batch.name}/{f.name}" for row in batch.nve_files for f in row])
    except SimulationError as err:
        raise SimulationError(f"simulate {batch.name}: {err}") from err
    used = batch.functions
    lists = [pl for f in (used[0], used[1][0]) if f is not None for pl in f.pair_lists] if used else []
    if lists and max(pl.calls for pl in lists):
        pl = max(lists, key=lambda p: p.calls)  # how often the skin list was searched again (tune neighbor_skin_A)
        summary["pair_list"] = {"force_calls": pl.calls, "searches": pl.rebuilds,
                                "calls_per_search": pl.calls / max(pl.rebuilds, 1)}
    return files, summary


def residue_names(bead_types) -> list[str]:
    """A PDB residue name (at most 3 characters, as PDB writers keep) per bead type: the type's
    own name when every name fits and stays unique ("MOH", "HOH"), else T0, T1, ... (imported
    formulas such as "CH4O" would be cut to "CH4"); the H5MD files keep the full names."""
    names = [str(n) for n in bead_types]
    if all(len(n) <= 3 for n in names) and len(set(names)) == len(names):
        return names
    return [f"T{k}" for k in range(len(names))]


def write_bead_topology(path: Path, positions, box, residues=None) -> None:
    """A PDB of the beads (OpenMM's writer): the topology other tools pair with the H5MD files;
    ``residues``: each bead's residue name (its type; default "SOL")."""
    import openmm.app as app
    import openmm.unit as u

    top = app.Topology()
    chain = top.addChain()
    for k in range(len(positions)):
        top.addAtom("CG", app.Element.getBySymbol("O"), top.addResidue("SOL" if residues is None else residues[k],
                                                                       chain))
    top.setPeriodicBoxVectors(np.diag(np.asarray(box, dtype=np.float64) / 10.0) * u.nanometer)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        app.PDBFile.writeFile(top, np.asarray(positions) / 10.0 * u.nanometer, fh)


def _new_writer(path: Path, masses, meta: dict, extra_observables=(), types=None, **attrs) -> H5MDWriter:
    obs = {k: ((), units.ENERGY) for k in ("potential_energy", "kinetic_energy", *extra_observables)}
    obs["temperature"] = ((), units.TEMPERATURE)
    species = np.zeros(len(masses), dtype=np.int32) if types is None else np.asarray(types, dtype=np.int32)
    return H5MDWriter(path, species=species, mass=masses,
                      particle_fields=("position", "velocity"), observables=obs, attrs={**meta, **attrs},
                      creator_version=__version__)


def _frame(md: Integrator, i: int, total=False) -> dict:
    pe, ke = float(md.potential[i]), float(md.kinetic_energy()[i])
    out = {"particles/all/position": md.positions[i].cpu().numpy(),
           "particles/all/velocity": md.velocities[i].cpu().numpy(),
           "particles/all/box/edges": md.box[i].cpu().numpy(),
           "observables/potential_energy": pe, "observables/kinetic_energy": ke,
           "observables/temperature": units.kinetic_temperature(ke, md.n_dof)}
    if total:
        out["observables/total_energy"] = pe + ke
    return out


def _run_nvt(md: Integrator, batch: Batch, show_progress: bool) -> dict:
    from tqdm.auto import tqdm

    s = batch.settings
    eq = steps(s.equilibration_ps * 1000, s.timestep_fs)
    interval = steps(s.frame_interval_ps * 1000, s.timestep_fs)
    total = eq + s.n_frames * interval
    out = ResumableTrajectories(batch.finals, batch.out_dir / ".nvt.ckpt", f"simulate {batch.name}")

    def save(path):
        torch.save({"config_hash": batch.config_hash, "step": md.step_count, "positions": md.positions.cpu(),
                    "velocities": md.velocities.cpu(), "rng": [r.cpu() for r in md.rng_state()]}, path)

    def checkpoint_step(path):
        try:
            blob = torch.load(path, weights_only=False)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            return None
        usable = (isinstance(blob, dict) and blob.get("config_hash") == batch.config_hash
                  and blob["positions"].shape[0] == len(batch.systems))
        return int(blob["step"]) if usable else None

    def restore(path):
        blob = torch.load(path, weights_only=False)
        md.set_state(blob["positions"].numpy(), blob["velocities"].numpy(), step=blob["step"])
        md.set_rng_state(blob["rng"])

    if out.resume(checkpoint_step, restore, lambda step: max(0, (step - eq) // interval)) is None:
        md.set_state(batch.start_x)
        masses = md.masses.cpu().numpy()
        out.start(lambda part, i: _new_writer(
            part, masses, batch.meta, types=batch.types, ensemble="NVT", integrator="BAOAB Langevin",
            temperature_K=float(batch.systems[i][0]), replica=batch.systems[i][1], seed=int(batch.seeds[i]),
            timestep_fs=s.timestep_fs, friction_per_ps=s.friction_per_ps, mts_substeps=s.mts_substeps,
            n_dof=md.n_dof))
        out.save_checkpoint(save)
    bar = tqdm(total=total, initial=md.step_count, desc=f"simulate {batch.name}", unit="step",
               disable=not show_progress)
    t_run, steps_run = 0.0, 0
    try:
        while md.step_count < total:
            n = min(interval, eq - md.step_count) if md.step_count < eq else interval
            t0 = time.perf_counter()
            md.step(n)
            t_run += time.perf_counter() - t0
            steps_run += n
            if md.step_count > eq:
                t_ps = md.step_count * s.timestep_fs * units.FS_TO_PS
                for i in range(len(batch.systems)):
                    out.append(i, md.step_count, t_ps, _frame(md, i))
            out.save_checkpoint(save)
            bar.update(n)
            bar.set_postfix(T=" ".join(f"{float(x):.0f}" for x in md.kinetic_temperature()))
    except SimulationError as err:
        out.close()
        raise SimulationError(f"{err}; the frames so far are kept in {batch.out_dir}/.*.part (a re-run "
                              "resumes from the last checkpoint)") from err
    except BaseException:
        out.close()
        raise
    finally:
        bar.close()
    out.finish(s.n_frames)
    summary = {}
    for f, label in zip(batch.finals, batch.labels):
        d = read_h5md(f)
        summary[label] = {"mean_kinetic_temperature_K": float(d.elements["observables/temperature"].mean()),
                          "mean_potential_energy": float(d.elements["observables/potential_energy"].mean())}
    sim_ns = steps_run * s.timestep_fs * 1e-6
    summary["ns_per_day_per_system"] = sim_ns / t_run * 86400 if t_run > 0 else None
    summary["systems_in_batch"] = len(batch.systems)
    return summary


def _run_nve(fns, batch: Batch, show_progress: bool) -> dict:
    """Every segment of every system in one batch; an interrupted batch is simply redone."""
    from tqdm.auto import tqdm

    s, nve = batch.settings, batch.settings.nve
    starts = nve_start_frames(s.n_frames, nve.n_segments)
    x0, v0, temps, seeds, paths, sources = [], [], [], [], [], []
    for i, (t, _) in enumerate(batch.systems):
        d = read_h5md(batch.finals[i])
        for k, frame in enumerate(starts):
            x0.append(d.elements["particles/all/position"][frame])
            v0.append(d.elements["particles/all/velocity"][frame])
            temps.append(t)
            seeds.append(batch.seeds[i] + 1000 + k)
            paths.append(batch.nve_files[i][k])
            sources.append((batch.finals[i], frame))
    md = batch.integrator(fns, temps, seeds, nve.timestep_fs, 0.0, nve.mts_substeps)
    md.set_state(np.stack(x0), np.stack(v0))
    masses = md.masses.cpu().numpy()
    out = ResumableTrajectories(paths, None, f"simulate {batch.name} NVE")
    out.start(lambda part, j: _new_writer(
        part, masses, batch.meta, ("total_energy",), types=batch.types, ensemble="NVE", integrator="velocity Verlet",
        temperature_K=float(temps[j]), timestep_fs=nve.timestep_fs, mts_substeps=nve.mts_substeps,
        start_frame=int(sources[j][1]),
        start_file=sources[j][0].name, start_fingerprint=frame_fingerprint(*sources[j]), n_dof=md.n_dof))
    interval = steps(nve.frame_interval_fs, nve.timestep_fs)
    n_out = steps(nve.length_ps * 1000, nve.frame_interval_fs)
    bar = tqdm(total=n_out * interval, desc=f"simulate {batch.name} NVE", unit="step", disable=not show_progress)
    try:
        for j in range(len(paths)):
            out.append(j, 0, 0.0, _frame(md, j, total=True), flush=False)
        for _ in range(n_out):
            md.step(interval)
            t_ps = md.step_count * nve.timestep_fs * units.FS_TO_PS
            for j in range(len(paths)):
                out.append(j, md.step_count, t_ps, _frame(md, j, total=True), flush=False)
            bar.update(interval)
    except SimulationError as err:
        out.close()
        raise SimulationError(f"NVE segment: {err}") from err
    except BaseException:
        out.close()
        raise
    finally:
        bar.close()
    out.finish(n_out + 1)
    summary = {}
    for f in paths:
        d = read_h5md(f)
        e, t = d.elements["observables/total_energy"], d.time
        n_beads = d.elements["particles/all/position"].shape[1]
        slope = np.polyfit(t, e, 1)[0] if len(t) > 1 else 0.0
        summary[f.name] = {"energy_drift_kcal_mol_per_ns_per_bead": float(slope * 1000 / n_beads),
                           "energy_rms_fluctuation_per_bead": float(np.std(e) / n_beads),
                           "mean_kinetic_temperature_K": float(d.elements["observables/temperature"].mean())}
    return summary
