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

A run that fails (NaN, a force above ``max_force``, beads closer than
``min_distance_A``) stops with an error naming the model, step and temperature and
keeps the frames it wrote in the ``.part`` files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from thermocg import __version__, units
from thermocg.config import Config
from thermocg.errors import ConfigError, DataFormatError, SimulationError
from thermocg.frames import read_reference
from thermocg.io.h5md import H5MDWriter, read_h5md
from thermocg.mapping import map_reference
from thermocg.models.stage import STAGE as TRAIN_STAGE, load_model, model_files, train_dir
from thermocg.models.training import pick_device
from thermocg.reference.sampler import _steps, check_existing, nve_start_frames, temperature_label
from thermocg.reference.stage import reference_dir
from thermocg.simulate.engine import Integrator, Safety, model_force_function
from thermocg.stagedir import StageDir, atomic_path

log = logging.getLogger(__name__)

STAGE = "simulate"


def simulate_dir(config: Config) -> Path:
    return config.run_dir / STAGE


def simulation_jobs(config: Config) -> dict[str, tuple[float, ...]]:
    """Model file name -> temperatures to simulate it at."""
    files = model_files(config)
    s = config.simulate
    temps = s.temperatures_K or config.reference.temperatures_K
    if s.models:
        unknown = [m for m in s.models if m not in files]
        if unknown:
            raise ConfigError(f"simulate.models: {unknown} are not models of this config's train stage "
                              f"(available: {sorted(files)})")
        return {m: tuple(temps) for m in s.models}
    jobs = {}
    for name in files:
        if name.startswith("fm-each-"):
            own = [t for t in temps if temperature_label(t) == name[len("fm-each-"):]]
            if own:
                jobs[name] = tuple(own)
        else:
            jobs[name] = tuple(temps)
    return jobs


def system_seed(seed: int, model: str, temperature_K: float, replica: int) -> int:
    """A seed per (model, temperature, replica), stable across runs and batch layouts."""
    text = f"{seed}:{model}:{temperature_K!r}:{replica}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def start_frame(config: Config, temperature_K: float):
    """(positions (N, 3) Å, box (3,) Å, bead masses (N,) amu): the last reference frame at the
    reference temperature nearest ``temperature_K``, mapped to beads."""
    ref = config.reference.temperatures_K
    nearest = min(ref, key=lambda t: abs(t - temperature_K))
    cg = map_reference(read_reference(reference_dir(config) / f"{temperature_label(nearest)}.h5md"))
    return cg.positions[-1], cg.box[-1], cg.bead_masses


def run_simulate(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume, or skip) the CG simulations of every model and temperature."""
    StageDir(train_dir(config), TRAIN_STAGE, config.section_hash("reference", "targets", "train"),
             "[reference]/[targets]/[train]").require_finished()
    config_hash = config.section_hash("reference", "targets", "train", "simulate")
    stage = StageDir(simulate_dir(config), STAGE, config_hash, "[reference]/[targets]/[train]/[simulate]")
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest
    device = pick_device(config.run.device)
    outputs, summary = {}, {}
    for name, temps in simulation_jobs(config).items():
        model = load_model(model_files(config)[name], device=str(device))
        files, summary[name] = simulate_model(model, name, temps, config, stage.path / name, config_hash, device,
                                              show_progress)
        outputs[name] = [f"{name}/{f}" for f in files]
    return stage.write_manifest(True, config_json, outputs, summary)


def _finished(path: Path, config_hash: str) -> bool:
    return check_existing(path, config_hash, "[reference]/[targets]/[train]/[simulate]")


def simulate_model(model, name: str, temps, config: Config, out_dir: Path, config_hash: str, device,
                   show_progress: bool = True) -> tuple[list[str], dict]:
    """Langevin sampling, then NVE segments, of one model at ``temps`` (one batch).

    Returns the output file names (relative to ``out_dir``) and a summary per system.
    """
    s = config.simulate
    out_dir.mkdir(parents=True, exist_ok=True)
    systems = [(t, r) for t in temps for r in range(s.replicas)]
    labels = [temperature_label(t) + (f"-r{r:02d}" if r else "") for t, r in systems]
    seeds = [system_seed(config.run.seed, name, t, r) for t, r in systems]
    finals = [out_dir / f"{label}.h5md" for label in labels]
    starts = [start_frame(config, t) for t in temps]
    masses, box = starts[0][2], starts[0][1]
    start_x = np.stack([starts[list(temps).index(t)][0] for t, _ in systems])
    common = dict(masses=masses, box=box, temperature_K=[t for t, _ in systems], seeds=seeds, device=device,
                  safety=Safety(max_force=s.max_force, min_distance_A=s.min_distance_A, interval=s.check_interval))
    fn = model_force_function(model, skin_A=s.neighbor_skin_A)
    meta = {"model": name, "variant": model.metadata.get("variant", name), "model_T0_K": model.metadata.get("T0_K"),
            "config_hash": config_hash, "config": config.model_dump_json(exclude={"source"}),
            "thermocg_version": __version__, "torch_version": torch.__version__, "device": str(device),
            "positions": "unwrapped (continuous in time)"}
    summary = {}
    write_bead_topology(out_dir / "beads.pdb", start_x[0], box)
    files = ["beads.pdb"] + [f.name for f in finals]
    nve_files = [[out_dir / f"{label}-nve{k:02d}.h5md" for k in range(s.nve.n_segments)] for label in labels]
    files += [f.name for row in nve_files for f in row]
    try:
        if all(_finished(f, config_hash) for f in finals):
            summary["nvt"] = "up to date"
        else:
            md = Integrator(fn, timestep_fs=s.timestep_fs, friction_per_ps=s.friction_per_ps, **common)
            summary["nvt"] = _run_nvt(md, name, systems, seeds, labels, finals, start_x, meta, config, out_dir,
                                      show_progress)
        if s.nve.n_segments:
            if all(_finished(f, config_hash) for row in nve_files for f in row):
                summary["nve"] = "up to date"
            else:
                summary["nve"] = _run_nve(fn, common, name, systems, finals, nve_files, meta, config,
                                          show_progress)
    except SimulationError as err:
        raise SimulationError(f"simulate {name}: {err}") from err
    if fn.pair_lists and fn.pair_lists[0].calls:
        pl = fn.pair_lists[0]  # how often the skin list was searched again (tune neighbor_skin_A)
        summary["pair_list"] = {"force_calls": pl.calls, "searches": pl.rebuilds,
                                "calls_per_search": pl.calls / max(pl.rebuilds, 1)}
    return files, summary


def write_bead_topology(path: Path, positions, box) -> None:
    """A PDB of the beads (OpenMM's writer): the topology other tools pair with the H5MD files."""
    import openmm.app as app
    import openmm.unit as u

    top = app.Topology()
    chain = top.addChain()
    for _ in range(len(positions)):
        top.addAtom("CG", app.Element.getBySymbol("O"), top.addResidue("SOL", chain))
    top.setPeriodicBoxVectors(np.diag(np.asarray(box, dtype=np.float64) / 10.0) * u.nanometer)
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        app.PDBFile.writeFile(top, np.asarray(positions) / 10.0 * u.nanometer, fh)


def _new_writer(path: Path, masses, meta: dict, extra_observables=(), **attrs) -> H5MDWriter:
    obs = {k: ((), units.ENERGY) for k in ("potential_energy", "kinetic_energy", *extra_observables)}
    obs["temperature"] = ((), units.TEMPERATURE)
    return H5MDWriter(path, species=np.ones(len(masses), dtype=np.int32), mass=masses,
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


def _save_checkpoint(path: Path, md: Integrator, config_hash: str) -> None:
    with atomic_path(path) as tmp:
        torch.save({"config_hash": config_hash, "step": md.step_count, "positions": md.positions.cpu(),
                    "velocities": md.velocities.cpu(), "rng": [r.cpu() for r in md.rng_state()]}, tmp)


def _run_nvt(md: Integrator, name, systems, seeds, labels, finals, start_x, meta, config, out_dir,
             show_progress) -> dict:
    from tqdm.auto import tqdm

    s = config.simulate
    config_hash = meta["config_hash"]
    eq = _steps(s.equilibration_ps * 1000, s.timestep_fs)
    interval = _steps(s.frame_interval_ps * 1000, s.timestep_fs)
    total = eq + s.n_frames * interval
    parts = [out_dir / f".{f.name}.part" for f in finals]
    ckpt = out_dir / ".nvt.ckpt"
    writers = None
    if ckpt.exists() and all(p.exists() for p in parts):
        blob = torch.load(ckpt, weights_only=False)
        if blob.get("config_hash") == config_hash and blob["positions"].shape[0] == len(systems):
            done = max(0, (blob["step"] - eq) // interval)
            try:
                writers = [H5MDWriter(p, mode="a") for p in parts]
            except DataFormatError as err:
                log.warning("simulate %s: %s; restarting", name, err)
            if writers is not None and min(w.n_frames for w in writers) < done:
                log.warning("simulate %s: part files hold fewer frames than the checkpoint; restarting", name)
                for w in writers:
                    w.close()
                writers = None
            if writers is not None:
                for w in writers:
                    w.truncate(done)
                md.set_state(blob["positions"].numpy(), blob["velocities"].numpy(), step=blob["step"])
                md.set_rng_state(blob["rng"])
                log.info("simulate %s: resuming at step %d with %d frames", name, md.step_count, done)
    if writers is None:
        for stale in (*parts, ckpt):
            stale.unlink(missing_ok=True)
        md.set_state(start_x)
        writers = [_new_writer(p, md.masses.cpu().numpy(), meta, ensemble="NVT", integrator="BAOAB Langevin",
                               temperature_K=float(t), replica=r, seed=int(seed), timestep_fs=s.timestep_fs,
                               friction_per_ps=s.friction_per_ps, n_dof=md.n_dof)
                   for p, (t, r), seed in zip(parts, systems, seeds)]
        _save_checkpoint(ckpt, md, config_hash)
    bar = tqdm(total=total, initial=md.step_count, desc=f"simulate {name}", unit="step", disable=not show_progress)
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
                for i, w in enumerate(writers):
                    w.append(md.step_count, t_ps, _frame(md, i))
                    w.flush()
            _save_checkpoint(ckpt, md, config_hash)
            bar.update(n)
            bar.set_postfix(T=" ".join(f"{float(x):.0f}" for x in md.kinetic_temperature()))
    except SimulationError as err:
        raise SimulationError(f"{err}; the frames so far are kept in {parts[0].parent}/.*.part (a re-run "
                              "resumes from the last checkpoint)") from err
    finally:
        bar.close()
        n_written = [w.n_frames for w in writers]
        for w in writers:
            w.close()
    if any(n != s.n_frames for n in n_written):
        raise SimulationError(f"simulate {name}: part files hold {n_written} frames, expected {s.n_frames}")
    for p, f in zip(parts, finals):
        os.replace(p, f)
    ckpt.unlink(missing_ok=True)
    summary = {}
    for f, label in zip(finals, labels):
        d = read_h5md(f)
        summary[label] = {"mean_kinetic_temperature_K": float(d.elements["observables/temperature"].mean()),
                          "mean_potential_energy": float(d.elements["observables/potential_energy"].mean())}
    sim_ns = steps_run * s.timestep_fs * 1e-6
    summary["ns_per_day_per_system"] = sim_ns / t_run * 86400 if t_run > 0 else None
    summary["systems_in_batch"] = len(systems)
    return summary


def _run_nve(fn, common: dict, name, systems, finals, nve_files, meta, config, show_progress) -> dict:
    """Every segment of every system in one batch; an interrupted batch is simply redone."""
    from tqdm.auto import tqdm

    s, nve = config.simulate, config.simulate.nve
    starts = nve_start_frames(s.n_frames, nve.n_segments)
    x0, v0, temps, seeds, paths = [], [], [], [], []
    for i, (t, r) in enumerate(systems):
        d = read_h5md(finals[i])
        for k, frame in enumerate(starts):
            x0.append(d.elements["particles/all/position"][frame])
            v0.append(d.elements["particles/all/velocity"][frame])
            temps.append(t)
            seeds.append(common["seeds"][i] + 1000 + k)
            paths.append(nve_files[i][k])
    md = Integrator(fn, common["masses"], common["box"], temps, timestep_fs=nve.timestep_fs, friction_per_ps=0.0,
                    seeds=seeds, device=common["device"], safety=common["safety"])
    md.set_state(np.stack(x0), np.stack(v0))
    parts = [p.with_name(f".{p.name}.part") for p in paths]
    for p in parts:
        p.unlink(missing_ok=True)
    masses = md.masses.cpu().numpy()
    writers = [_new_writer(p, masses, meta, ("total_energy",), ensemble="NVE", integrator="velocity Verlet",
                           temperature_K=float(t), timestep_fs=nve.timestep_fs, start_frame=int(starts[j % len(starts)]),
                           start_file=finals[j // len(starts)].name, n_dof=md.n_dof)
               for j, (p, t) in enumerate(zip(parts, temps))]
    interval = _steps(nve.frame_interval_fs, nve.timestep_fs)
    n_out = _steps(nve.length_ps * 1000, nve.frame_interval_fs)
    bar = tqdm(total=n_out * interval, desc=f"simulate {name} NVE", unit="step", disable=not show_progress)
    try:
        for w in range(len(writers)):
            writers[w].append(0, 0.0, _frame(md, w, total=True))
        for _ in range(n_out):
            md.step(interval)
            t_ps = md.step_count * nve.timestep_fs * units.FS_TO_PS
            for w, writer in enumerate(writers):
                writer.append(md.step_count, t_ps, _frame(md, w, total=True))
            bar.update(interval)
    except SimulationError as err:
        raise SimulationError(f"NVE segment: {err}") from err
    finally:
        bar.close()
        for w in writers:
            w.close()
    summary = {}
    for p, f in zip(parts, paths):
        os.replace(p, f)
        d = read_h5md(f)
        e, t = d.elements["observables/total_energy"], d.time
        n_beads = d.elements["particles/all/position"].shape[1]
        slope = np.polyfit(t, e, 1)[0] if len(t) > 1 else 0.0
        summary[f.name] = {"energy_drift_kcal_mol_per_ns_per_bead": float(slope * 1000 / n_beads),
                           "energy_rms_fluctuation_per_bead": float(np.std(e) / n_beads),
                           "mean_kinetic_temperature_K": float(d.elements["observables/temperature"].mean())}
    return summary
