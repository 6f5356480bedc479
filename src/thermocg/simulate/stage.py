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

Each model's batch is a task of :mod:`thermocg.tasks`: in local worker processes (``[run]
processes``), or with ``[run] scheduler`` on Dask, run where a worker is, on its device and
threads, writing the same files. The parts: :mod:`~thermocg.simulate.plan` (which systems), :mod:`~thermocg.simulate.batch`
(one model's systems and force functions), :mod:`~thermocg.simulate.md` (the MD loops).

A system that fails (NaN, a force above ``max_force``, beads closer than
``min_distance_A``) is a result with ``[simulate] unstable = "record"`` (the default): its
``<T>.unstable.json`` names the step and check, the model's other systems run without it
(each system's trajectory depends only on its own forces and random stream: the same run, to
float32 round-off of the batched sums), and evaluate
and the report say so. With ``"stop"`` the stage stops with an error naming the model, step
and temperature and keeps the frames it wrote in the ``.part`` files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from thermocg.config import Config
from thermocg.errors import SimulationError
from thermocg.io.strict import number
from thermocg.io.records import ReferenceRun, TrainedModels, TrajectoryRun, Trajectories
from thermocg.simulate.batch import Batch
from thermocg.simulate.md import simulate_model
from thermocg.simulate.plan import simulation_jobs
from thermocg.stagedir import StageContext, StageResult
from thermocg.tasks import emit

log = logging.getLogger(__name__)


def check(config: Config, upstream: dict) -> None:
    """A bad ``[simulate] models`` list is refused before anything is touched."""
    simulation_jobs(config, upstream["train"])


def run_simulate(ctx: StageContext) -> StageResult:
    """Run (or resume) the CG simulations of every model and temperature: each model's batch a
    task (:mod:`thermocg.tasks`), in local worker processes, or on Dask with ``[run] scheduler``."""
    from thermocg.progress import tqdm

    from thermocg import tasks as executors
    from thermocg.device import pick_device

    config, stage = ctx.config, ctx.stage
    models, reference = ctx.record("train"), ctx.record("reference")
    jobs = simulation_jobs(config, models)
    # models side by side in local processes ([run] processes; "auto": one per core on a CPU, the
    # cores shared out as threads), or on Dask. On 2 CPU cores two 1-thread workers step 1.7x as
    # many single-system batches per second as one 2-thread process (fm-each), 1.2x nine-system
    # ones (bench/RESULTS.md, issue 32)
    gpu = pick_device(config.run.device).type != "cpu"
    run = executors.executor(config.run.processes, len(jobs), gpu, config.run.scheduler)
    local = isinstance(run, executors.LocalProcesses) and run.runs_here(len(jobs))
    model_tasks = [ModelTask(config, name, tuple(temps), stage.path, stage.config_hash, stage.sections, models,
                             reference, ctx.show_progress and local) for name, temps in jobs.items()]
    outputs, summary, runs = {}, {}, {}
    log.info("simulate: %d model(s), %s", len(jobs), run.describe())
    # in this process each model's batch shows its own bars; in workers one bar over models
    bar = None if local else tqdm(total=len(model_tasks), desc="simulate", unit="model",
                                  disable=not ctx.show_progress)
    systems_total = sum(len(t) for t in jobs.values()) * config.simulate.replicas
    systems_done, t_start, last = 0, time.monotonic(), [time.monotonic()]

    def finished(task: ModelTask, result) -> None:
        nonlocal systems_done
        files, summary[task.name], runs[task.name] = result
        outputs[task.name] = [f"{task.name}/{f}" for f in files]
        stage.add_outputs(outputs[task.name])
        systems_done += len(runs[task.name])
        now = time.monotonic()
        left = (f", about {(now - t_start) / systems_done * (systems_total - systems_done) / 60:.0f} min left"
                if systems_done else "")  # none done yet: a model whose every system was unstable
        log.info("simulate %s: %d system(s) in %.0f s; %d/%d models%s", task.name,
                 len(runs[task.name]), now - last[0], len(outputs), len(jobs), left)
        last[0] = now
        if bar is not None:
            bar.update(1)

    # here or in a local worker, each file is recorded as soon as it is complete (the Langevin
    # frames before the NVE segments); on Dask when its model's task ends
    try:
        run.map(simulate_task, model_tasks, label=lambda t: f"simulate {t.name}", finished=finished,
                events=lambda task, names: stage.add_outputs(names), died=SimulationError)
    finally:
        if bar is not None:
            bar.close()
    unstable = tuple(u for name in jobs for u in summary[name].get("unstable", {}).values())
    for u in unstable:  # said again at the end, where a long run's log ends
        log.warning("simulate: %s at %g K (replica %d) was unstable in %s: %s", u["model"],
                    u["temperature_K"], u["replica"], u["phase"].upper(), u["reason"])
    record = Trajectories(stage.path, tuple(r for name in jobs for r in runs[name]), unstable)
    return StageResult({name: outputs[name] for name in jobs}, {name: summary[name] for name in jobs},
                       record.to_json())


@dataclass(frozen=True)
class ModelTask:
    """One model at its temperatures, simulated as one batch: a task of the stage (picklable:
    it carries the records it reads, so a Dask worker reads nothing but the files they name)."""

    config: Config
    name: str
    temperatures_K: tuple[float, ...]
    stage_path: Path
    config_hash: str
    sections: str
    models: TrainedModels
    reference: ReferenceRun
    show_progress: bool = False


def simulate_task(task: ModelTask) -> tuple[list[str], dict, list[TrajectoryRun]]:
    """Run (or resume) one model's batch where this is called, on the device picked here. Files
    are sent as events as each is complete (:func:`thermocg.tasks.emit`). Returns the output
    names (relative to the model's directory), its summary and its runs."""
    from thermocg.device import pick_device

    batch = Batch.of(task.models, task.name, task.temperatures_K, task.config, task.reference, task.stage_path,
                     task.config_hash, task.sections, pick_device(task.config.run.device))
    files, summary, batch = simulate_model(batch, task.show_progress, emit)
    return files, summary, batch.record()


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
