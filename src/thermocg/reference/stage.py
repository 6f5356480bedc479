"""The reference stage: all-atom water at every configured temperature.

``run_reference(config)`` builds the water box once, writes the topology
(``system.pdb``, for MDAnalysis and friends) and the OpenMM system
(``system.xml``), then samples every temperature, in parallel local processes
when there are cores for it, each with its own progress bar. Outputs in
``<run.directory>/reference/``::

    manifest.json            config hash, outputs, per-temperature summary
    system.pdb, system.xml   topology and OpenMM system (same at every temperature)
    T300K.h5md               NVT frames (H5MD), per-molecule energies included
    T300K-nve00.h5md ...     NVE segments for dynamics

A finished stage is skipped when re-run with the same config; a stage made by a
different config is an error unless ``force=True``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import queue
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from thermocg.config import Config
from thermocg.errors import SimulationError, ThermocgError
from thermocg.stagedir import StageDir, atomic_path, atomic_write_text

log = logging.getLogger(__name__)

STAGE = "reference"


def reference_dir(config: Config) -> Path:
    return config.run_dir / STAGE


def _plan_processes(config: Config, n_tasks: int, platform_is_gpu: bool) -> tuple[int, int]:
    """(processes, OpenMM CPU threads per process)."""
    cores = os.cpu_count() or 1
    if config.run.processes != "auto":
        procs = min(config.run.processes, n_tasks)
    else:
        procs = 1 if platform_is_gpu else max(1, min(cores, n_tasks))
    return procs, max(1, cores // procs)


def run_reference(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume, or skip) the reference stage; returns the manifest dict."""
    from thermocg.reference import engine, sampler  # OpenMM import kept out of CLI start-up
    import openmm as mm
    import openmm.app as app

    ref = config.reference
    out = reference_dir(config)
    config_hash = config.section_hash("reference")
    stage = StageDir(out, STAGE, config_hash, "[reference]")
    manifest = stage.prepare(force)
    if manifest is not None:
        return manifest

    topology, positions = engine.build_water_box(ref.n_molecules, ref.density_g_cm3, ref.water_model)
    system = engine.create_system(topology, ref.water_model, ref.cutoff_A, ref.ewald_error_tolerance)
    system_xml = mm.XmlSerializer.serialize(system)
    box = np.full(3, ref.box_length_A)
    log.info("reference: minimising the energy of the initial box")
    positions = engine.minimize(system, positions, box)
    config_text = config.model_dump_json(exclude={"source"})
    stage.write_manifest(False, json.loads(config_text))
    atomic_write_text(out / "system.xml", system_xml)
    with atomic_path(out / "system.pdb") as pdb, open(pdb, "w") as fh:
        app.PDBFile.writeFile(topology, positions / 10.0, fh)  # PDBFile takes nm

    gpu = engine.choose_platform(config.run.device)[0].getName() != "CPU"
    procs, threads = _plan_processes(config, len(ref.temperatures_K), gpu)
    seeds = np.random.SeedSequence(config.run.seed).spawn(len(ref.temperatures_K))
    species = np.array([a.element.atomic_number for a in topology.atoms()], dtype=np.int32)
    tasks = [sampler.TemperatureTask(
        temperature_K=float(t), seed=int(s.generate_state(1)[0] % 2**30), out_dir=out, system_xml=system_xml,
        initial_positions_A=positions, box_A=box,
        molecule_index=engine.molecule_index(topology), species=species,
        reference=ref.model_dump(mode="json"), config_hash=config_hash, config_text=config_text,
        device=config.run.device, threads=threads) for t, s in zip(ref.temperatures_K, seeds)]
    log.info("reference: %d temperatures, %d molecules, %d process(es) x %d thread(s), platform %s -> %s",
             len(tasks), ref.n_molecules, procs, threads, "GPU" if gpu else "CPU", out)
    summaries = _run_tasks(tasks, procs, show_progress)

    outputs = {t.label: [t.nvt_path.name] + [t.nve_path(k).name for k in range(ref.nve.n_segments)]
               for t in tasks}
    return stage.write_manifest(True, json.loads(config_text), outputs, summaries)


def _run_tasks(tasks, procs: int, show_progress: bool) -> dict:
    from tqdm.auto import tqdm

    from thermocg.reference.sampler import sample_temperature

    bars = {t.label: tqdm(total=t.total_steps, desc=f"reference {t.label}", unit="step", position=i,
                          disable=not show_progress, leave=True, dynamic_ncols=True)
            for i, t in enumerate(tasks)}
    summaries, errors = {}, []
    try:
        if procs == 1:
            for t in tasks:
                try:
                    summaries[t.label] = sample_temperature(t, bars[t.label].update)
                except ThermocgError as err:
                    errors.append(err)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Manager() as manager, ProcessPoolExecutor(procs, mp_context=ctx) as pool:
                q = manager.Queue()
                futures = {pool.submit(_worker, t, q): t for t in tasks}
                pending = set(futures)
                while pending:
                    _drain(q, bars)
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        try:
                            summaries[futures[fut].label] = fut.result()
                        except ThermocgError as err:
                            errors.append(err)
                _drain(q, bars)
    finally:
        for b in bars.values():
            b.close()
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise SimulationError("; ".join(str(e) for e in errors))
    return summaries


def _worker(task, q):
    from thermocg.reference.sampler import sample_temperature
    return sample_temperature(task, lambda n: q.put((task.label, n)))


def _drain(q, bars) -> None:
    while True:
        try:
            label, n = q.get_nowait()
        except queue.Empty:
            return
        bars[label].update(n)
