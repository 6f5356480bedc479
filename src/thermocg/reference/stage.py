"""The reference stage: all-atom water at every configured temperature.

``run_reference`` (the runner :meth:`thermocg.pipeline.Stage.run` calls) builds the water box
once, writes the topology (``system.pdb``, for MDAnalysis and friends) and the OpenMM system
(``system.xml``), then samples every temperature, in parallel local processes when there are
cores for it, each with its own progress bar (:mod:`thermocg.tasks`: local processes, or Dask
with ``[run] scheduler``). Outputs in
``<run.directory>/reference/``::

    manifest.json            config hash, outputs, per-temperature summary
    system.pdb, system.xml   topology and OpenMM system (same at every temperature)
    T300K.h5md               NVT frames (H5MD), per-molecule energies included
    T300K-nve00.h5md ...     NVE segments for dynamics

A finished stage is skipped when re-run with the same config; a stage made by a
different config is an error unless ``force=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from thermocg import tasks as executors
from thermocg.config import Config
from thermocg.errors import ConfigError
from thermocg.io.records import ReferenceRun
from thermocg.io.strict import number
from thermocg.stagedir import StageContext, StageResult, atomic_path, atomic_write_text

log = logging.getLogger(__name__)


def run_reference(ctx: StageContext) -> StageResult:
    """The reference stage's runner (:meth:`thermocg.pipeline.Stage.run` is its envelope)."""
    config, ref = ctx.config, ctx.config.reference
    if ref.source == "files":
        return _import(ctx)
    from thermocg.reference import engine, sampler  # OpenMM import kept out of CLI start-up
    import openmm as mm
    import openmm.app as app

    out = ctx.path
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
    atomic_write_text(out / "system.xml", system_xml)
    with atomic_path(out / "system.pdb") as pdb, open(pdb, "w") as fh:
        app.PDBFile.writeFile(topology, positions / 10.0, fh)  # PDBFile takes nm

    gpu = engine.choose_platform(config.run.device)[0].getName() != "CPU"
    run = executors.executor(config.run.processes, len(ref.temperatures_K), gpu, config.run.scheduler)
    seeds = np.random.SeedSequence(config.run.seed).spawn(len(ref.temperatures_K))
    types, type_names = engine.molecule_types(topology)
    species = np.array([a.element.atomic_number if a.element is not None else 0  # 0: a virtual site
                        for a in topology.atoms()], dtype=np.int32)
    temperature_tasks = [sampler.TemperatureTask(
        temperature_K=float(t), seed=int(s.generate_state(1)[0] % 2**30), out_dir=out, system_xml=system_xml,
        initial_positions_A=positions, box_A=box,
        molecule_index=engine.molecule_index(topology), species=species,
        reference=ref, config_hash=ctx.stage.config_hash, config_text=config_text,
        device=config.run.device, threads=run.threads, sections=ctx.stage.sections,
        molecule_type=types, bead_types=type_names)
        for t, s in zip(ref.temperatures_K, seeds)]
    log.info("reference: %d temperatures, %d molecules, %s, platform %s -> %s", len(temperature_tasks),
             int(engine.molecule_index(topology).max()) + 1, run.describe(), "GPU" if gpu else "CPU", out)
    summaries = _sample(run, temperature_tasks, ctx)
    outputs = {t.label: [t.nvt_path.name] + [t.nve_path(k).name for k in range(ref.nve.n_segments)]
               for t in temperature_tasks}
    outputs["system"] = ["system.pdb", "system.xml"]
    record = ReferenceRun(out, tuple(ref.temperatures_K), ref.nve.n_segments, "system.xml")
    return StageResult(outputs, summaries, record.to_json())


def _sample(run: executors.Executor, temperature_tasks, ctx: StageContext) -> dict:
    """Every temperature, each with its progress bar of MD steps (steps reported by the tasks;
    on Dask one bar over temperatures); each output file is recorded in the manifest as soon as
    it is complete (a finished NVT file before the NVE segments that start from it)."""
    from thermocg.progress import tqdm

    from thermocg.reference.sampler import sample_temperature_task

    hide, dask = not ctx.show_progress, isinstance(run, executors.Dask)
    overall = tqdm(total=len(temperature_tasks), desc="reference (dask)", unit="temperature", disable=hide) \
        if dask else None
    bars = {} if dask else {t.label: tqdm(total=t.total_steps, desc=f"reference {t.label}", unit="step", position=i,
                                          disable=hide, leave=True, dynamic_ncols=True)
                            for i, t in enumerate(temperature_tasks)}
    summaries = {}

    def event(task, what) -> None:
        kind, value = what
        if kind == "file":
            ctx.stage.add_outputs([Path(value).name])
        else:
            bars[task.label].update(value)

    def finished(task, summary) -> None:  # what the events did not record (on Dask: every file)
        ctx.stage.add_outputs([p.name for p in task.outputs if p.name not in ctx.stage.recorded])
        summaries[task.label] = summary
        if overall is not None:
            overall.update(1)

    try:
        run.map(sample_temperature_task, temperature_tasks, label=lambda t: f"reference {t.label}",
                finished=finished, events=event, keep_going=True)
    finally:
        for b in [*bars.values(), *([overall] if overall is not None else [])]:
            b.close()
    return {t.label: summaries[t.label] for t in temperature_tasks}


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


def _import(ctx: StageContext) -> StageResult:
    """``[reference] source = "files"``: the user's frames written as this stage's files
    (:mod:`thermocg.reference.imported`); imported again when a source file has changed (the
    stage's inputs include their checksums)."""
    from thermocg.reference import imported

    outputs, summary = imported.import_reference(ctx.config, ctx.stage, ctx.show_progress)
    record = ReferenceRun(ctx.path, tuple(ctx.config.reference.temperatures_K), ctx.config.reference.nve.n_segments)
    return StageResult(outputs, summary, record.to_json())


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
