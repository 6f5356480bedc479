"""The MD of one batch: BAOAB Langevin sampling (checkpointed, resumed), then the NVE segments
started from sampled frames, written as H5MD through the resumable trajectory writer. One loop
drives the integrator for both (:func:`_drive`), in the manner of mlcg's ``simulation/base.py``."""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from thermocg import __version__, units
from thermocg.errors import SimulationError, UnstableSystem
from thermocg.io.h5md import H5MDWriter, read_h5md
from thermocg.io.trajectory import ResumableTrajectories, frame_fingerprint, nve_start_frames, steps
from thermocg.simulate.batch import Batch, residue_names, write_bead_topology
from thermocg.simulate.engine import Integrator

log = logging.getLogger(__name__)


def simulate_model(batch: Batch, show_progress: bool = True, finished=None) -> tuple[list[str], dict, Batch]:
    """Langevin sampling, then NVE segments, of one model at its temperatures (one batch).

    ``finished(names)`` is called with the outputs (relative to the stage's directory) as soon as
    they are complete. A system that fails the MD's checks stops the stage (``[simulate] unstable
    = "stop"``) or is recorded and left out, the rest of the batch run again without it
    ("record"). Returns the output file names (relative to the batch's directory), a summary
    per system and the batch as it ended (without its unstable systems).
    """
    finished = finished or (lambda names: None)
    batch.out_dir.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            files, summary = _simulate(batch, show_progress, finished)
        except UnstableSystem as err:
            if batch.settings.unstable != "record":
                raise SimulationError(f"simulate {batch.name}: {err}") from err
            batch = batch.record_unstable(err.system, err.phase, err.step, err.reason)
            continue
        except SimulationError as err:
            raise SimulationError(f"simulate {batch.name}: {err}") from err
        if batch.unstable:
            summary["unstable"] = {name: u for name, u in zip(batch.marker_files, batch.unstable)}
        return files + batch.marker_files, summary, batch


def _simulate(batch: Batch, show_progress: bool, finished) -> tuple[list[str], dict]:
    s = batch.settings
    summary = {}
    if not batch.systems:  # every system of this model was unstable
        return [], {"nvt": "no stable system"}
    write_bead_topology(batch.out_dir / "beads.pdb", batch.start_x[0], batch.box,
                        None if batch.types is None else [residue_names(batch.meta["bead_types"])[k]
                                                          for k in batch.types])
    files = ["beads.pdb"] + [f.name for f in batch.finals] + [f.name for row in batch.nve_files for f in row]
    if all([batch.finished(f, s.n_frames) for f in batch.finals]):  # a list: check (and clean) every file
        summary["nvt"] = "up to date"
    else:
        md = batch.integrator(batch.force_functions(), [t for t, _ in batch.systems], batch.seeds,
                              s.timestep_fs, s.friction_per_ps, s.mts_substeps)
        summary["nvt"] = _run_nvt(md, batch, show_progress)
        finished([f"{batch.name}/{f.name}" for f in batch.finals])
    if s.nve.n_segments and any(batch.nve_files):
        starts = nve_start_frames(s.n_frames, s.nve.n_segments)
        n_out = steps(s.nve.length_ps * 1000, s.nve.frame_interval_fs) + 1
        if all([batch.finished(f, n_out, (batch.finals[i], starts[k]))
                for i, row in enumerate(batch.nve_files) for k, f in enumerate(row)]):
            summary["nve"] = "up to date"
        else:
            summary["nve"] = _run_nve(batch.force_functions(), batch, show_progress)
            finished([f"{batch.name}/{f.name}" for row in batch.nve_files for f in row])
    used = batch.functions
    lists = [pl for f in (used[0], used[1][0]) if f is not None for pl in f.pair_lists] if used else []
    if lists and max(pl.calls for pl in lists):
        pl = max(lists, key=lambda p: p.calls)  # how often the skin list was searched again (tune neighbor_skin_A)
        summary["pair_list"] = {"force_calls": pl.calls, "searches": pl.rebuilds,
                                "calls_per_search": pl.calls / max(pl.rebuilds, 1)}
    return files, summary


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


def _drive(md: Integrator, chunks, after_chunk, out: ResumableTrajectories, bar, failed,
           before=lambda: None, phase: str = "nvt", owner=lambda j: j) -> tuple[float, int]:
    """The one MD loop: ``before()``, then step ``md`` by each of ``chunks`` (step counts; a
    generator may look at ``md.step_count``), calling ``after_chunk()`` (frames, checkpoint) after each. A
    system that fails the checks (NaN, runaway forces, beads too close) is raised again as an
    :class:`UnstableSystem` with the message ``failed(err)``, the batch's system ``owner(j)`` of
    the failing system j of ``md`` and ``phase``; any error or interruption closes the
    trajectories first, keeping what they hold. Returns the seconds spent in MD steps and the
    steps run."""
    t_run, steps_run = 0.0, 0
    try:
        before()
        for n in chunks:
            t0 = time.perf_counter()
            md.step(n)
            t_run += time.perf_counter() - t0
            steps_run += n
            after_chunk()
            bar.update(n)
    except UnstableSystem as err:
        out.close()
        raise _unstable(err, failed, phase, owner) from err
    except BaseException:
        out.close()
        raise
    finally:
        bar.close()
    return t_run, steps_run


def _unstable(err: UnstableSystem, failed, phase: str, owner) -> UnstableSystem:
    """``err`` of the integrator's system j as the batch's: system ``owner(j)``, message
    ``failed(err)``, with its ``phase`` ("nvt" or "nve") and the check's own words as ``reason``."""
    return UnstableSystem(failed(err), owner(err.system), err.step, phase, str(err))


def _run_nvt(md: Integrator, batch: Batch, show_progress: bool) -> dict:
    from thermocg.progress import tqdm

    s = batch.settings
    eq = steps(s.equilibration_ps * 1000, s.timestep_fs)
    interval = steps(s.frame_interval_ps * 1000, s.timestep_fs)
    total = eq + s.n_frames * interval
    out = ResumableTrajectories(batch.finals, batch.checkpoint, f"simulate {batch.name}")

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

    failed = (lambda err: f"{err}; the frames so far are kept in {batch.out_dir}/.*.part (a re-run resumes from "
              "the last checkpoint)")
    try:  # the start frame (or the checkpoint) is checked as it is set
        resumed = out.resume(checkpoint_step, restore, lambda step: max(0, (step - eq) // interval))
        if resumed is None:
            md.set_state(batch.start_x)
    except UnstableSystem as err:
        out.close()
        raise _unstable(err, failed, "nvt", lambda j: j) from err
    if resumed is None:
        masses = md.masses.cpu().numpy()
        out.start(lambda part, i: _new_writer(
            part, masses, batch.meta, types=batch.types, ensemble="NVT", integrator="BAOAB Langevin",
            temperature_K=float(batch.systems[i][0]), replica=batch.systems[i][1], seed=int(batch.seeds[i]),
            timestep_fs=s.timestep_fs, friction_per_ps=s.friction_per_ps, mts_substeps=s.mts_substeps,
            n_dof=md.n_dof))
        out.save_checkpoint(save)
    bar = tqdm(total=total, initial=md.step_count, desc=f"simulate {batch.name}", unit="step",
               disable=not show_progress)

    def chunks():  # equilibration up to its end, then a frame interval at a time (resumed mid-way too)
        while md.step_count < total:
            yield min(interval, eq - md.step_count) if md.step_count < eq else interval

    def after_chunk():
        if md.step_count > eq:
            t_ps = md.step_count * s.timestep_fs * units.FS_TO_PS
            for i in range(len(batch.systems)):
                out.append(i, md.step_count, t_ps, _frame(md, i))
        out.save_checkpoint(save)
        bar.set_postfix(T=" ".join(f"{float(x):.0f}" for x in md.kinetic_temperature()))

    t_run, steps_run = _drive(md, chunks(), after_chunk, out, bar, failed)
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
    from thermocg.progress import tqdm

    s, nve = batch.settings, batch.settings.nve
    starts = nve_start_frames(s.n_frames, nve.n_segments)
    x0, v0, temps, seeds, paths, sources, owners = [], [], [], [], [], [], []
    for i, (t, _) in enumerate(batch.systems):
        if not batch.nve_files[i]:  # its NVE failed before: its Langevin frames stand alone
            continue
        d = read_h5md(batch.finals[i])
        for k, frame in enumerate(starts):
            owners.append(i)
            x0.append(d.elements["particles/all/position"][frame])
            v0.append(d.elements["particles/all/velocity"][frame])
            temps.append(t)
            seeds.append(batch.seeds[i] + 1000 + k)
            paths.append(batch.nve_files[i][k])
            sources.append((batch.finals[i], frame))
    md = batch.integrator(fns, temps, seeds, nve.timestep_fs, 0.0, nve.mts_substeps)
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

    def record_frames():
        t_ps = md.step_count * nve.timestep_fs * units.FS_TO_PS
        for j in range(len(paths)):
            out.append(j, md.step_count, t_ps, _frame(md, j, total=True), flush=False)

    _drive(md, [interval] * n_out, record_frames, out, bar, lambda err: f"NVE segment: {err}",
           before=lambda: (md.set_state(np.stack(x0), np.stack(v0)), record_frames()),  # the start frames first
           phase="nve", owner=owners.__getitem__)
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
