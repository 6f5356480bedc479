"""One temperature of the reference stage: NVT sampling, then NVE segments.

:func:`sample_temperature` is a pure function of its :class:`TemperatureTask`
(config, temperature, seed, system), so the stage can run temperatures in
parallel processes (or on other machines). Output safety:

* NVT frames are appended to ``.T300K.h5md.part``; after every frame an OpenMM
  checkpoint goes to ``.T300K.chk`` (written to a temporary name, then renamed).
  A re-run resumes from the checkpoint and truncates the part file to the frames
  the checkpoint has seen, so frames are never duplicated or lost. When all
  frames are in, the part file is renamed to ``T300K.h5md``.
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
from thermocg.errors import DataFormatError, SimulationError
from thermocg.io.h5md import H5MDWriter, read_attrs, read_h5md
from thermocg.reference import engine
from thermocg.stagedir import atomic_path

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
    reference: dict  # the [reference] section, as validated
    config_hash: str
    config_text: str
    device: str = "auto"
    threads: int | None = None

    @property
    def label(self) -> str:
        return temperature_label(self.temperature_K)

    @property
    def nvt_path(self) -> Path:
        return self.out_dir / f"{self.label}.h5md"

    def nve_path(self, k: int) -> Path:
        return self.out_dir / f"{self.label}-nve{k:02d}.h5md"

    @property
    def total_steps(self) -> int:
        """MD steps of the whole task (for progress bars)."""
        r = self.reference
        nvt = _steps(r["equilibration_ps"] * 1000, r["timestep_fs"]) + r["n_frames"] * _steps(
            r["frame_interval_ps"] * 1000, r["timestep_fs"])
        nve = r["nve"]["n_segments"] * _steps(r["nve"]["length_ps"] * 1000, r["nve"]["timestep_fs"])
        return nvt + nve


def temperature_label(temperature_K: float) -> str:
    """File label of a temperature: 300 -> 'T300K', 272.5 -> 'T272.5K'."""
    return f"T{temperature_K:g}K"


def _steps(duration_fs: float, dt_fs: float) -> int:
    return int(round(duration_fs / dt_fs))


def check_existing(path: Path, config_hash: str, sections: str = "[reference]") -> bool:
    """True if ``path`` is a finished output of this config; False if absent.

    Raises DataFormatError if it exists but is unreadable or came from another config
    (``sections``: what the hash covers, for the message).
    """
    if not path.exists():
        return False
    attrs = read_attrs(path)
    found = attrs.get("config_hash")
    if found != config_hash:
        raise DataFormatError(
            f"{path}: made by a different {sections} config (hash {found}, this config {config_hash}); "
            "pass --force to regenerate, or use another run.directory")
    return True


def sample_temperature(task: TemperatureTask, progress: Progress | None = None) -> dict:
    """Run (or resume, or skip) NVT sampling and the NVE segments at one temperature.

    Returns a summary dict (frames, speed, decomposition error, kinetic temperature).
    """
    progress = progress or (lambda n: None)
    summary = {"temperature_K": task.temperature_K}
    if check_existing(task.nvt_path, task.config_hash):
        r = task.reference
        progress(_steps(r["equilibration_ps"] * 1000, r["timestep_fs"])
                 + r["n_frames"] * _steps(r["frame_interval_ps"] * 1000, r["timestep_fs"]))
        summary["nvt"] = "up to date"
    else:
        summary["nvt"] = _run_nvt(task, progress)
    summary["nve"] = []
    for k in range(task.reference["nve"]["n_segments"]):
        if check_existing(task.nve_path(k), task.config_hash):
            progress(_steps(task.reference["nve"]["length_ps"] * 1000, task.reference["nve"]["timestep_fs"]))
            summary["nve"].append("up to date")
        else:
            summary["nve"].append(_run_nve(task, k, progress))
    return summary


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
        "water_model": task.reference["water_model"], **extra,
    }


def _save_checkpoint(path: Path, context: mm.Context, config_hash: str) -> None:
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, openmm=np.frombuffer(context.createCheckpoint(), dtype=np.uint8),
                 state_xml=np.array(mm.XmlSerializer.serialize(state)), config_hash=np.array(config_hash),
                 step=np.array(context.getStepCount()))
        fh.flush()
        os.fsync(fh.fileno())


def _load_checkpoint(path: Path, context: mm.Context, integrator, seed: int, config_hash: str) -> bool:
    """Restore ``context`` from a checkpoint; False if there is none usable."""
    try:
        with np.load(path) as z:
            if str(z["config_hash"]) != config_hash:
                return False
            blob, xml, step = z["openmm"].tobytes(), str(z["state_xml"]), int(z["step"])
    except (OSError, KeyError, ValueError):
        return False
    try:
        context.loadCheckpoint(blob)
    except mm.OpenMMException:
        # A checkpoint is tied to its platform; the portable state loses only the RNG stream.
        log.warning("%s: checkpoint is from another platform; resuming from the saved state "
                    "(the random stream restarts)", path)
        context.setState(mm.XmlSerializer.deserialize(xml))
        context.setStepCount(step)
        integrator.setRandomNumberSeed(seed + step)
    return True


def _run_nvt(task: TemperatureTask, progress: Progress) -> dict:
    r = task.reference
    where = f"reference {task.label}"
    dt_fs = r["timestep_fs"]
    integrator = mm.LangevinMiddleIntegrator(task.temperature_K * u.kelvin, r["friction_per_ps"] / u.picosecond,
                                             dt_fs * units.FS_TO_PS * u.picosecond)
    integrator.setRandomNumberSeed(task.seed)
    system, context = _context(task, integrator)
    part = task.out_dir / f".{task.nvt_path.name}.part"
    chk = task.out_dir / f".{task.label}.chk"
    eq_steps = _steps(r["equilibration_ps"] * 1000, dt_fs)
    interval = _steps(r["frame_interval_ps"] * 1000, dt_fs)
    total = eq_steps + r["n_frames"] * interval

    writer = None
    if part.exists() and chk.exists() and _load_checkpoint(chk, context, integrator, task.seed, task.config_hash):
        try:
            writer = H5MDWriter(part, mode="a")
        except DataFormatError as err:
            log.warning("%s: %s; restarting this temperature", where, err)
    if writer is not None:
        done = max(0, (context.getStepCount() - eq_steps) // interval)
        if writer.n_frames < done:
            writer.close()
            log.warning("%s: %s has %d frames but the checkpoint expects %d; restarting", where, part,
                        writer.n_frames, done)
            writer = None
        else:
            writer.truncate(done)
            log.info("%s: resuming at step %d with %d frames", where, context.getStepCount(), done)
    if writer is None:
        for stale in (part, chk):
            stale.unlink(missing_ok=True)
        engine.set_state(context, task.initial_positions_A, box_A=task.box_A)
        context.setVelocitiesToTemperature(task.temperature_K * u.kelvin, task.seed)
        context.setStepCount(0)
        writer = _new_nvt_writer(part, task, context, system)
        _save_checkpoint(chk, context, task.config_hash)

    decomposition = engine.decomposition_for(system, context, task.molecule_index)
    rtol = r["energy_check_rtol"]
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
                worst = max(worst, _write_frame(writer, context, decomposition, rtol, where, part))
                t_dec += time.perf_counter() - t0
            _save_checkpoint(chk, context, task.config_hash)
            progress(n)
    finally:
        n_written = writer.n_frames
        writer.close()
    if n_written != r["n_frames"]:
        raise SimulationError(f"{where}: {part} holds {n_written} frames, expected {r['n_frames']}")
    os.replace(part, task.nvt_path)
    chk.unlink(missing_ok=True)
    ns_day = steps_run * dt_fs * 1e-6 / t_md * 86400 if t_md > 0 else float("nan")
    return {"frames": n_written, "md_ns_per_day": ns_day, "frame_overhead_s": t_dec,
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
                        timestep_fs=r["timestep_fs"], friction_per_ps=r["friction_per_ps"],
                        ewald_alpha_per_A=alpha / units.NM_TO_A, pme_grid=list(grid),
                        cutoff_A=r["cutoff_A"], ewald_error_tolerance=r["ewald_error_tolerance"],
                        velocities="half-step (leapfrog) velocities of the Langevin middle integrator"),
        static={"molecule_index": task.molecule_index}, creator_version=__version__)


def _write_frame(writer: H5MDWriter, context, decomposition, rtol: float, where: str, part: Path) -> float:
    s = engine.snapshot(context)
    kept = f"{writer.n_frames} complete frames are kept in {part}"
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
    writer.append(s.step, s.time_ps, {
        "particles/all/position": s.positions, "particles/all/velocity": s.velocities,
        "particles/all/force": s.forces, "particles/all/box/edges": s.box,
        "observables/potential_energy": s.potential_energy, "observables/kinetic_energy": s.kinetic_energy,
        "observables/temperature": units.kinetic_temperature(s.kinetic_energy, n_dof),
        "thermocg/molecule_energy": u_mol, "thermocg/decomposition_error": err,
    })
    writer.flush()
    return rel


# -- NVE -----------------------------------------------------------------------

def nve_start_frames(n_frames: int, n_segments: int) -> list[int]:
    """Indices of the NVT frames the NVE segments start from, spread over the run (last one included)."""
    return [(k + 1) * n_frames // n_segments - 1 for k in range(n_segments)]


def _run_nve(task: TemperatureTask, k: int, progress: Progress) -> dict:
    r, nve = task.reference, task.reference["nve"]
    where = f"reference {task.label} NVE segment {k}"
    start = nve_start_frames(r["n_frames"], nve["n_segments"])[k]
    d = read_h5md(task.nvt_path, frames=slice(start, start + 1))
    integrator = mm.VerletIntegrator(nve["timestep_fs"] * units.FS_TO_PS * u.picosecond)
    system, context = _context(task, integrator)
    engine.set_state(context, d.elements["particles/all/position"][0], d.elements["particles/all/velocity"][0],
                     d.elements["particles/all/box/edges"][0])
    context.applyConstraints(1e-8)
    context.applyVelocityConstraints(1e-8)
    interval = _steps(nve["frame_interval_fs"], nve["timestep_fs"])
    n_out = _steps(nve["length_ps"] * 1000, nve["frame_interval_fs"])
    final = task.nve_path(k)
    part = task.out_dir / f".{final.name}.part"
    part.unlink(missing_ok=True)
    n_dof = engine.degrees_of_freedom(system)
    writer = H5MDWriter(
        part, species=task.species, mass=engine.masses(system), particle_fields=("position", "velocity"),
        observables={name: ((), units.ENERGY) for name in ("potential_energy", "kinetic_energy", "total_energy")},
        attrs=_metadata(task, context, system, ensemble="NVE", integrator="VerletIntegrator",
                        timestep_fs=nve["timestep_fs"], start_frame=start, start_file=task.nvt_path.name),
        static={"molecule_index": task.molecule_index}, creator_version=__version__)
    t0 = time.perf_counter()
    e_total, e_kin = [], []
    with writer:
        for i in range(n_out + 1):
            if i:
                engine.step(context, integrator, interval, where)
                progress(interval)
            s = engine.snapshot(context, forces=False)
            if not np.isfinite(s.potential_energy):
                raise SimulationError(f"{where}: potential energy is {s.potential_energy} at step {s.step}; "
                                      f"{writer.n_frames} frames kept in {part}")
            writer.append(s.step, s.time_ps, {
                "particles/all/position": s.positions, "particles/all/velocity": s.velocities,
                "particles/all/box/edges": s.box, "observables/potential_energy": s.potential_energy,
                "observables/kinetic_energy": s.kinetic_energy,
                "observables/total_energy": s.potential_energy + s.kinetic_energy})
            e_total.append(s.potential_energy + s.kinetic_energy)
            e_kin.append(s.kinetic_energy)
        writer.flush()
    os.replace(part, final)
    drift = float(np.polyfit(np.linspace(0, nve["length_ps"], len(e_total)), e_total, 1)[0])  # kcal/mol/ps
    n_mol = int(task.molecule_index.max()) + 1
    return {"frames": n_out + 1, "drift_kcal_mol_ns_per_molecule": drift * 1000 / n_mol,
            "kinetic_temperature_K": float(np.mean(units.kinetic_temperature(np.array(e_kin), n_dof))),
            "wall_s": time.perf_counter() - t0}
