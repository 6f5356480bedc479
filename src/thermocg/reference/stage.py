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
import queue
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from thermocg.config import Config
from thermocg.errors import ConfigError, SimulationError, ThermocgError
from thermocg.io.records import ReferenceRun
from thermocg.io.strict import number
from thermocg.stagedir import atomic_path, atomic_write_text
from thermocg import workers
from thermocg.runlock import locked_stage
from thermocg.workers import plan_processes, start_pool, stop_workers

log = logging.getLogger(__name__)

STAGE = "reference"


def reference_dir(config: Config) -> Path:
    """This stage's directory for ``config`` (from the pipeline table)."""
    from thermocg import pipeline
    return pipeline.stage(STAGE).directory(config)


@locked_stage
def run_reference(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume, or skip) the reference stage; returns the manifest dict."""
    from thermocg import pipeline
    from thermocg.reference import engine, sampler  # OpenMM import kept out of CLI start-up
    import openmm as mm
    import openmm.app as app

    ref = config.reference
    stage = pipeline.stage(STAGE).stage_dir(config)
    out, config_hash = stage.path, stage.config_hash
    manifest = stage.prepare(force)
    if ref.source == "files":
        return _import(config, stage, manifest, show_progress)
    if manifest is not None:
        return manifest

    if ref.system == "pdb":
        topology, positions, box, system = _pdb_system(config)
    else:
        topology, positions = engine.build_water_box(ref.n_molecules, ref.density_g_cm3, ref.water_model)
        system = engine.create_system(topology, ref.water_model, ref.cutoff_A, ref.ewald_error_tolerance)
        box = np.full(3, ref.box_length_A)
    system_xml = mm.XmlSerializer.serialize(system)
    log.info("reference: minimising the energy of the initial box")
    positions = engine.minimize(system, positions, box)
    config_text = config.model_dump_json(exclude={"source"})
    stage.write_manifest(False, json.loads(config_text))
    atomic_write_text(out / "system.xml", system_xml)
    with atomic_path(out / "system.pdb") as pdb, open(pdb, "w") as fh:
        app.PDBFile.writeFile(topology, positions / 10.0, fh)  # PDBFile takes nm

    gpu = engine.choose_platform(config.run.device)[0].getName() != "CPU"
    procs, threads = plan_processes(config.run.processes, len(ref.temperatures_K), gpu)
    if config.run.scheduler is not None:
        threads = None  # as many OpenMM threads as the Dask worker running the task has
    seeds = np.random.SeedSequence(config.run.seed).spawn(len(ref.temperatures_K))
    types, type_names = engine.molecule_types(topology)
    species = np.array([a.element.atomic_number if a.element is not None else 0  # 0: a virtual site
                        for a in topology.atoms()], dtype=np.int32)
    tasks = [sampler.TemperatureTask(
        temperature_K=float(t), seed=int(s.generate_state(1)[0] % 2**30), out_dir=out, system_xml=system_xml,
        initial_positions_A=positions, box_A=box,
        molecule_index=engine.molecule_index(topology), species=species,
        reference=ref, config_hash=config_hash, config_text=config_text,
        device=config.run.device, threads=threads, sections=stage.sections,
        molecule_type=types, bead_types=type_names)
        for t, s in zip(ref.temperatures_K, seeds)]
    log.info("reference: %d temperatures, %d molecules, %s, platform %s -> %s", len(tasks),
             int(engine.molecule_index(topology).max()) + 1,
             f"on Dask ({config.run.scheduler})" if config.run.scheduler else f"{procs} process(es) x {threads} thread(s)",
             "GPU" if gpu else "CPU", out)
    if config.run.scheduler is not None:
        summaries = _run_on_dask(config.run.scheduler, tasks, show_progress,
                                 lambda path: stage.add_outputs([Path(path).name]))
    else:
        summaries = _run_tasks(tasks, procs, show_progress, lambda path: stage.add_outputs([Path(path).name]))

    outputs = {t.label: [t.nvt_path.name] + [t.nve_path(k).name for k in range(ref.nve.n_segments)]
               for t in tasks}
    outputs["system"] = ["system.pdb", "system.xml"]
    record = ReferenceRun(out, tuple(ref.temperatures_K), ref.nve.n_segments)
    return stage.write_manifest(True, json.loads(config_text), outputs, summaries, record.to_json())


def _pdb_system(config: Config):
    """``system = "pdb"``: the user's PDB and force field (paths relative to the config file;
    a force field that is not a file there is one of OpenMM's built-in names), its box checked
    against every cutoff of the config."""
    from thermocg.reference import engine

    ref = config.reference
    pdb = config.path(ref.pdb)
    if not pdb.is_file():
        raise ConfigError(f"{pdb}: no such file (reference.pdb)")
    files = [str(config.path(f)) if config.path(f).is_file() else f for f in ref.forcefield]
    topology, positions, box, system = engine.load_pdb_system(pdb, files, ref.cutoff_A, ref.ewald_error_tolerance,
                                                              ref.constraints, ref.rigid_water)
    for key, value in config.cutoffs_A().items():
        if value >= box.min() / 2:
            raise ConfigError(f"{pdb}: {key} = {value:g} Å must be below half the box edge ({box.min() / 2:.2f} Å)")
    log.info("reference: %s, %d atoms in %d molecules, box %s Å, force field %s", pdb.name,
             system.getNumParticles(), topology.getNumResidues(), np.round(box, 3).tolist(), files)
    return topology, positions, box, system


def _import(config: Config, stage, manifest: dict | None, show_progress: bool) -> dict:
    """``[reference] source = "files"``: the user's frames written as this stage's files
    (:mod:`thermocg.reference.imported`); imported again when a source file has changed."""
    from thermocg.reference import imported

    if manifest is not None:  # up to date, the imported files' checksums included (StageDir)
        return manifest
    config_json = json.loads(config.model_dump_json(exclude={"source"}))
    stage.write_manifest(False, config_json)
    outputs, summary = imported.import_reference(config, stage, show_progress)
    record = ReferenceRun(stage.path, tuple(config.reference.temperatures_K), config.reference.nve.n_segments)
    return stage.write_manifest(True, config_json, outputs, summary, record.to_json())


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's lines for a finished reference stage: speed (or the imported files) and the
    energy-decomposition check."""
    lines = []
    for label, s in manifest.get("summary", {}).items():
        if isinstance(s.get("nvt"), dict):
            lines.append(f"{label}: {s['nvt']['frames']} frames, {number(s['nvt']['md_ns_per_day'], '.1f')} ns/day "
                         f"MD, worst |sum u_J - E|/|E| = {number(s['nvt']['max_decomposition_rel_error'], '.1e')}")
        elif isinstance(s.get("imported"), dict):
            i = s["imported"]
            lines.append(f"{label}: {i['frames']} frames of {i['molecules']} molecules imported from {i['source']}"
                         f" (+{len(s.get('nve') or [])} NVE), worst |sum u_J - E|/|E| = "
                         f"{number(i['max_decomposition_rel_error'], '.1e')}")
    return lines


def _run_tasks(tasks, procs: int, show_progress: bool, finished) -> dict:
    """Run the temperature tasks (in ``procs`` worker processes); ``finished(path)`` is called,
    in this process, with each output file as soon as it is complete."""
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
                    summaries[t.label] = sample_temperature(t, bars[t.label].update, finished)
                except ThermocgError as err:
                    errors.append(err)
        else:
            pool, q = start_pool(procs, tasks[0].threads)
            try:
                futures = {pool.submit(_worker, t): t for t in tasks}
                pending = set(futures)
                while pending:
                    _drain(q, bars, finished)
                    done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        try:
                            summaries[futures[fut].label] = fut.result()
                        except ThermocgError as err:
                            errors.append(err)
                        except BrokenProcessPool as err:
                            raise SimulationError(f"reference {futures[fut].label}: a worker process died ({err}); "
                                                  "re-run the same command to resume") from err
                _drain(q, bars, finished)
            except BaseException:
                stop_workers(pool)  # Ctrl-C, SIGTERM or an error here: no worker may outlive this stage
                raise
            pool.shutdown(wait=True)
    finally:
        for b in bars.values():
            b.close()
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise SimulationError("; ".join(str(e) for e in errors))
    return summaries


def _run_on_dask(scheduler: str, tasks, show_progress: bool, finished) -> dict:
    """The temperatures as Dask tasks (:mod:`thermocg.cluster`): one progress bar over
    temperatures; each temperature's outputs are recorded when its task ends."""
    from tqdm.auto import tqdm

    from thermocg.reference.sampler import sample_temperature

    summaries = {}
    bar = tqdm(total=len(tasks), desc="reference (dask)", unit="temperature", disable=not show_progress)

    def done(task, summary):
        for path in [task.nvt_path] + [task.nve_path(k) for k in range(task.reference.nve.n_segments)]:
            finished(path)
        summaries[task.label] = summary
        bar.update(1)

    try:
        workers.run_tasks(sample_temperature, tasks, 1, None, done, lambda task: f"reference {task.label}",
                          SimulationError, scheduler=scheduler)
    finally:
        bar.close()
    return summaries


def _worker(task):
    from thermocg.reference.sampler import sample_temperature
    progress = workers.PROGRESS
    return sample_temperature(task, lambda n: progress.put(("steps", task.label, n)),
                              lambda path: progress.put(("file", str(path), 0)))


def _drain(q, bars, finished) -> None:
    """Progress from the workers: steps done per temperature, and files finished."""
    while True:
        try:
            kind, what, n = q.get_nowait()
        except queue.Empty:
            return
        if kind == "file":
            finished(what)
        else:
            bars[what].update(n)
