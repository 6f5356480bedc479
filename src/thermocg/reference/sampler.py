"""One temperature of the reference stage: NVT sampling, then NVE segments.

:func:`sample_temperature` is a pure function of its :class:`TemperatureTask`
(config, temperature, seed, system), so the stage can run temperatures in
parallel processes (or on other machines). Output safety:

* NVT frames are appended to ``.T300K.h5md.part``; after every frame an OpenMM
  checkpoint goes to ``.T300K.chk``. A re-run resumes from the checkpoint and
  truncates the part file to the frames the checkpoint has seen, so frames are
  never duplicated or lost. When all frames are in, the part file is renamed to
  ``T300K.h5md``. (:class:`thermocg.io.trajectory.ResumableTrajectories`, which the
  simulate stage shares.)
* Each NVE segment starts from a saved NVT frame (positions and velocities),
  so it is a pure function of the finished NVT file; an interrupted segment is
  simply redone.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import openmm as mm
import openmm.unit as u

from thermocg import __version__, units
from thermocg.config import ReferenceSection
from thermocg.errors import SimulationError
from thermocg.io.h5md import H5MDWriter, read_h5md
from thermocg.io.trajectory import (ResumableTrajectories, check_existing, frame_fingerprint, nve_start_frames,
                                    steps)
from thermocg.labels import temperature_label
from thermocg.reference import engine
from thermocg.tasks import emit

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass(frozen=True)
class TemperatureTask:
    """Everything one temperature needs; picklable for worker processes."""

    temperature_K: float
    seed: int
    out_dir: Path
    system_xml: str
    initial_positions_A: np.ndarray  # energy-minimised
    box_A: np.ndarray
    molecule_index: np.ndarray
    species: np.ndarray
    reference: ReferenceSection
    config_hash: str
    config_text: str
    device: str = "auto"
    threads: int | None = None
    #: the config sections the hash covers, for messages
    sections: str = "[reference]"
    #: the bead type of each molecule (n_molecules,) and the type names (one per residue name)
    molecule_type: np.ndarray | None = None
    bead_types: tuple[str, ...] = ("molecule",)

    @property
    def static(self) -> dict:
        """What the H5MD files hold fixed in time: each atom's molecule, each molecule's bead type."""
        n_mol = int(self.molecule_index.max()) + 1
        types = np.zeros(n_mol, dtype=np.int64) if self.molecule_type is None else self.molecule_type
        return {"molecule_index": self.molecule_index, "molecule_type": types}

    @property
    def label(self) -> str:
        return temperature_label(self.temperature_K)

    @property
    def nvt_path(self) -> Path:
        return self.out_dir / f"{self.label}.h5md"

    def nve_path(self, k: int) -> Path:
        return self.out_dir / f"{self.label}-nve{k:02d}.h5md"

    @property
    def outputs(self) -> list[Path]:
        """Every file the task makes: the NVT frames, then the NVE segments."""
        return [self.nvt_path] + [self.nve_path(k) for k in range(self.reference.nve.n_segments)]

    @property
    def nvt_steps(self) -> int:
        r = self.reference
        return steps(r.equilibration_ps * 1000, r.timestep_fs) + r.n_frames * steps(r.frame_interval_ps * 1000,
                                                                                     r.timestep_fs)

    @property
    def nve_steps(self) -> int:
        """MD steps of one NVE segment."""
        return steps(self.reference.nve.length_ps * 1000, self.reference.nve.timestep_fs)

    @property
    def total_steps(self) -> int:
        """MD steps of the whole task (for progress bars)."""
        return self.nvt_steps + self.reference.nve.n_segments * self.nve_steps


def sample_temperature(task: TemperatureTask, progress: Progress | None = None,
                       finished: Callable[[Path], None] | None = None) -> dict:
    """Run (or resume, or skip) NVT sampling and the NVE segments at one temperature.

    ``finished(path)`` is called with each output as soon as it is complete (the stage records
    its checksum). Returns a summary dict (frames, speed, decomposition error, kinetic temperature).
    """
    progress = progress or (lambda n: None)
    finished = finished or (lambda path: None)
    summary = {"temperature_K": task.temperature_K}
    r = task.reference
    if check_existing(task.nvt_path, task.config_hash, task.sections, n_frames=r.n_frames):
        progress(task.nvt_steps)
        summary["nvt"] = "up to date"
    else:
        summary["nvt"] = _run_nvt(task, progress)
        finished(task.nvt_path)
    summary["nve"] = []
    for k in range(task.reference.nve.n_segments):
        start = (task.nvt_path, nve_start_frames(r.n_frames, r.nve.n_segments)[k])
        n_out = steps(r.nve.length_ps * 1000, r.nve.frame_interval_fs) + 1
        if check_existing(task.nve_path(k), task.config_hash, task.sections, n_frames=n_out, start=start):
            progress(task.nve_steps)
            summary["nve"].append("up to date")
        else:
            summary["nve"].append(_run_nve(task, k, progress))
            finished(task.nve_path(k))
    return summary


def sample_temperature_task(task: TemperatureTask) -> dict:
    """:func:`sample_temperature` as a task of :mod:`thermocg.tasks`: the steps it runs and the
    files it finishes are sent to the stage as events, ``("steps", n)`` and ``("file", path)``."""
    return sample_temperature(task, lambda n: emit(("steps", n)), lambda path: emit(("file", str(path))))


# -- NVT -----------------------------------------------------------------------

def _context(task: TemperatureTask, integrator: mm.Integrator) -> tuple[mm.System, mm.Context]:
    system = mm.XmlSerializer.deserialize(task.system_xml)
    platform, props = engine.choose_platform(task.device, task.threads)
    return system, mm.Context(system, integrator, platform, props)


def _metadata(task: TemperatureTask, context: mm.Context, system: mm.System, **extra) -> dict:
    return {
        "temperature_K": float(task.temperature_K), "seed": int(task.seed), "config_hash": task.config_hash,
        "config": task.config_text, "thermocg_version": __version__, "openmm_version": mm.__version__,
        "platform": context.getPlatform().getName(), "n_dof": engine.degrees_of_freedom(system),
        "water_model": task.reference.water_model, "bead_types": list(task.bead_types), **extra,
    }


def _save_checkpoint(path: Path, context: mm.Context, config_hash: str) -> None:
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    with open(path, "wb") as fh:
        np.savez(fh, openmm=np.frombuffer(context.createCheckpoint(), dtype=np.uint8),
                 state_xml=np.array(mm.XmlSerializer.serialize(state)), config_hash=np.array(config_hash),
                 step=np.array(context.getStepCount()))
        fh.flush()
        os.fsync(fh.fileno())


def _checkpoint_step(path: Path, config_hash: str) -> int | None:
    """The step of a checkpoint of this config; None if it is unreadable or another config's."""
    try:
        with np.load(path) as z:
            return int(z["step"]) if str(z["config_hash"]) == config_hash else None
    except (OSError, KeyError, ValueError):
        return None


def _load_checkpoint(path: Path, context: mm.Context, integrator, seed: int) -> None:
    """Restore ``context`` (and the integrator's random stream) from a checkpoint."""
    with np.load(path) as z:
        blob, xml, step = z["openmm"].tobytes(), str(z["state_xml"]), int(z["step"])
    try:
        context.loadCheckpoint(blob)
    except mm.OpenMMException:
        # A checkpoint is tied to its platform; the portable state loses only the RNG stream.
        log.warning("%s: checkpoint is from another platform; resuming from the saved state "
                    "(the random stream restarts)", path)
        context.setState(mm.XmlSerializer.deserialize(xml))
        context.setStepCount(step)
        integrator.setRandomNumberSeed(seed + step)


def _run_nvt(task: TemperatureTask, progress: Progress) -> dict:
    r = task.reference
    where = f"reference {task.label}"
    dt_fs = r.timestep_fs
    integrator = mm.LangevinMiddleIntegrator(task.temperature_K * u.kelvin, r.friction_per_ps / u.picosecond,
                                             dt_fs * units.FS_TO_PS * u.picosecond)
    integrator.setRandomNumberSeed(task.seed)
    system, context = _context(task, integrator)
    eq_steps = steps(r.equilibration_ps * 1000, dt_fs)
    interval = steps(r.frame_interval_ps * 1000, dt_fs)
    total = eq_steps + r.n_frames * interval

    out = ResumableTrajectories([task.nvt_path], task.out_dir / f".{task.label}.chk", where)

    def save(path):
        _save_checkpoint(path, context, task.config_hash)

    done = out.resume(lambda chk: _checkpoint_step(chk, task.config_hash),
                      lambda chk: _load_checkpoint(chk, context, integrator, task.seed),
                      lambda step: max(0, (step - eq_steps) // interval))
    if done is None:
        engine.set_state(context, task.initial_positions_A, box_A=task.box_A)
        context.setVelocitiesToTemperature(task.temperature_K * u.kelvin, task.seed)
        context.setStepCount(0)
        out.start(lambda part, _: _new_nvt_writer(part, task, context, system))
        out.save_checkpoint(save)

    decomposition = engine.decomposition_for(system, context, task.molecule_index)
    progress(min(context.getStepCount(), total))
    t_md = t_dec = 0.0
    steps_run = 0
    worst = 0.0
    try:
        while (current := context.getStepCount()) < total:
            n = min(interval, eq_steps - current) if current < eq_steps else interval
            t0 = time.perf_counter()
            engine.step(context, integrator, n, where)
            t_md += time.perf_counter() - t0
            steps_run += n
            if context.getStepCount() <= eq_steps:
                e = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
                if not np.isfinite(e):
                    raise SimulationError(f"{where}: potential energy is {e} at step {context.getStepCount()} "
                                          "during equilibration; nothing was sampled yet")
            else:
                t0 = time.perf_counter()
                worst = max(worst, _write_frame(out, context, decomposition, r.energy_check_rtol, where))
                t_dec += time.perf_counter() - t0
            out.save_checkpoint(save)
            progress(n)
    except BaseException:
        out.close()
        raise
    out.finish(r.n_frames)
    ns_day = steps_run * dt_fs * 1e-6 / t_md * 86400 if t_md > 0 else float("nan")
    return {"frames": r.n_frames, "md_ns_per_day": ns_day, "frame_overhead_s": t_dec,
            "max_decomposition_rel_error": worst}


def _new_nvt_writer(path: Path, task: TemperatureTask, context, system) -> H5MDWriter:
    r = task.reference
    nb = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)][0]
    alpha, *grid = nb.getPMEParametersInContext(context)
    n_mol = int(task.molecule_index.max()) + 1
    charges = np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge)
                        for i in range(system.getNumParticles())])
    return H5MDWriter(
        path, species=task.species, mass=engine.masses(system), charge=charges,
        particle_fields=("position", "velocity", "force"),
        observables={"potential_energy": ((), units.ENERGY), "kinetic_energy": ((), units.ENERGY),
                     "temperature": ((), units.TEMPERATURE)},
        extras={"molecule_energy": ((n_mol,), units.ENERGY), "decomposition_error": ((), units.ENERGY)},
        attrs=_metadata(task, context, system, ensemble="NVT", integrator="LangevinMiddleIntegrator",
                        timestep_fs=r.timestep_fs, friction_per_ps=r.friction_per_ps,
                        ewald_alpha_per_A=alpha / units.NM_TO_A, pme_grid=list(grid),
                        cutoff_A=r.cutoff_A, ewald_error_tolerance=r.ewald_error_tolerance,
                        velocities="half-step (leapfrog) velocities of the Langevin middle integrator"),
        static=task.static, creator_version=__version__)


def _write_frame(out: ResumableTrajectories, context, decomposition, rtol: float, where: str) -> float:
    s = engine.snapshot(context)
    kept = f"{out.n_frames[0]} complete frames are kept in {out.parts[0]}"
    if not np.isfinite(s.potential_energy) or not np.all(np.isfinite(s.forces)):
        raise SimulationError(f"{where}: potential energy {s.potential_energy} or forces not finite at step "
                              f"{s.step}; {kept}")
    u_mol, ambiguous = decomposition.with_cutoff_ambiguity(s.positions, s.box)
    err = float(u_mol.sum() - s.potential_energy)
    rel = abs(err) / abs(s.potential_energy)
    # a pair within 1e-4 Å of the cutoff may be on the other side in the engine's single precision
    if abs(err) > rtol * abs(s.potential_energy) + ambiguous:
        raise SimulationError(
            f"{where}: per-molecule energies sum to {u_mol.sum():.6f} kcal/mol but OpenMM's total is "
            f"{s.potential_energy:.6f} at step {s.step} (relative error {rel:.2e} > energy_check_rtol {rtol:g}, "
            f"pairs at the cutoff explain {ambiguous:.2e} kcal/mol); {kept}")
    n_dof = engine.degrees_of_freedom(context.getSystem())
    out.append(0, s.step, s.time_ps, {
        "particles/all/position": s.positions, "particles/all/velocity": s.velocities,
        "particles/all/force": s.forces, "particles/all/box/edges": s.box,
        "observables/potential_energy": s.potential_energy, "observables/kinetic_energy": s.kinetic_energy,
        "observables/temperature": units.kinetic_temperature(s.kinetic_energy, n_dof),
        "thermocg/molecule_energy": u_mol, "thermocg/decomposition_error": err,
    })
    return rel


# -- NVE -----------------------------------------------------------------------

def _run_nve(task: TemperatureTask, k: int, progress: Progress) -> dict:
    r, nve = task.reference, task.reference.nve
    where = f"reference {task.label} NVE segment {k}"
    start = nve_start_frames(r.n_frames, nve.n_segments)[k]
    d = read_h5md(task.nvt_path, frames=slice(start, start + 1))
    integrator = mm.VerletIntegrator(nve.timestep_fs * units.FS_TO_PS * u.picosecond)
    system, context = _context(task, integrator)
    engine.set_state(context, d.elements["particles/all/position"][0], d.elements["particles/all/velocity"][0],
                     d.elements["particles/all/box/edges"][0])
    context.applyConstraints(1e-8)
    context.applyVelocityConstraints(1e-8)
    interval = steps(nve.frame_interval_fs, nve.timestep_fs)
    n_out = steps(nve.length_ps * 1000, nve.frame_interval_fs)
    n_dof = engine.degrees_of_freedom(system)
    out = ResumableTrajectories([task.nve_path(k)], None, where)  # a short segment: redone when interrupted
    out.start(lambda part, _: H5MDWriter(
        part, species=task.species, mass=engine.masses(system), particle_fields=("position", "velocity"),
        observables={name: ((), units.ENERGY) for name in ("potential_energy", "kinetic_energy", "total_energy")},
        attrs=_metadata(task, context, system, ensemble="NVE", integrator="VerletIntegrator",
                        timestep_fs=nve.timestep_fs, start_frame=start, start_file=task.nvt_path.name,
                        start_fingerprint=frame_fingerprint(task.nvt_path, start)),
        static=task.static, creator_version=__version__))
    t0 = time.perf_counter()
    e_total, e_kin = [], []
    try:
        for i in range(n_out + 1):
            if i:
                engine.step(context, integrator, interval, where)
                progress(interval)
            s = engine.snapshot(context, forces=False)
            if not np.isfinite(s.potential_energy):
                raise SimulationError(f"{where}: potential energy is {s.potential_energy} at step {s.step}; "
                                      f"{out.n_frames[0]} frames kept in {out.parts[0]}")
            out.append(0, s.step, s.time_ps, {
                "particles/all/position": s.positions, "particles/all/velocity": s.velocities,
                "particles/all/box/edges": s.box, "observables/potential_energy": s.potential_energy,
                "observables/kinetic_energy": s.kinetic_energy,
                "observables/total_energy": s.potential_energy + s.kinetic_energy}, flush=False)
            e_total.append(s.potential_energy + s.kinetic_energy)
            e_kin.append(s.kinetic_energy)
    except BaseException:
        out.close()
        raise
    out.finish(n_out + 1)
    drift = float(np.polyfit(np.linspace(0, nve.length_ps, len(e_total)), e_total, 1)[0])  # kcal/mol/ps
    n_mol = int(task.molecule_index.max()) + 1
    return {"frames": n_out + 1, "drift_kcal_mol_ns_per_molecule": drift * 1000 / n_mol,
            "kinetic_temperature_K": float(np.mean(units.kinetic_temperature(np.array(e_kin), n_dof))),
            "wall_s": time.perf_counter() - t0}
