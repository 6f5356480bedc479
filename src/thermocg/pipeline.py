"""The pipeline in one table: every stage, its config sections, its upstream stages, the
function that runs it and the typed record of its outputs; and the envelope every stage runs in.

::

    reference -> targets -> train -> simulate -> evaluate -> report

Every stage and the CLI take their facts from :data:`STAGES`: the run directory of a
stage (``<run.directory>/<name>``), the config sections its outputs depend on (and so
its config hash), which upstream stages it reads (their outputs' digest goes into its
manifest), and how its outputs are read (:mod:`thermocg.io.records`). Adding a stage is its
module plus one row here: the CLI gains the verb, ``thermocg run`` runs it in order, and its
outputs are read through its record.

The envelope belongs here, not to the stages (in the shape of MDAnalysis'
``AnalysisBase.run()``): :meth:`Stage.run` takes the run directory's lock, reads and checks
each upstream record once, runs the stage's ``check`` (a bad config is refused before the
stage's directory is touched), begins the stage (skipping it when up to date), calls the
runner with a :class:`~thermocg.stagedir.StageContext` and writes the manifest from the
:class:`~thermocg.stagedir.StageResult` it returns. Stage modules import records and their own
helpers, never this module: chaining belongs here (:func:`run`) and to the CLI.
Runners and records are named as ``"module:attribute"`` and imported only when used, so
``thermocg --help`` stays instant and a stage's heavy imports (OpenMM, torch) load only
when it runs.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from thermocg.runlock import run_directory_lock
from thermocg.stagedir import StageContext, StageDir

log = logging.getLogger(__name__)


def _resolve(spec: str):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Stage:
    """One row of the pipeline table."""

    #: the CLI verb and the directory name under ``run.directory``
    name: str
    #: config sections its outputs depend on (its own and its upstream stages'): its config hash
    sections: tuple[str, ...]
    #: stages whose records it reads
    upstream: tuple[str, ...]
    #: ``"module:function"``, called as ``function(context) -> StageResult`` (:class:`StageContext`)
    runner: str
    #: ``"module:Class"`` of its record (``Class.read(directory)``); None: nothing downstream reads it
    record: str | None
    #: ``"module:function"``, ``function(manifest, directory) -> lines``: what the CLI logs when
    #: the stage has finished
    describe: str | None
    #: one line for ``thermocg --help``
    help: str
    #: stages its CLI verb runs first (each skips itself when up to date): ``thermocg train``
    #: goes from reference data to models
    cli_runs_first: tuple[str, ...] = ()
    #: ``"module:function"``, ``function(config, upstream records) -> None``: refuses a config the
    #: stage cannot run (ConfigError) before its directory is touched
    check: str | None = None
    #: whether its outputs are made from the user's files (``Config.user_files``), whose
    #: checksums its manifest records
    reads_user_files: bool = False

    @property
    def section_label(self) -> str:
        """The config sections, as messages name them: ``[reference]/[targets]``."""
        return "/".join(f"[{s}]" for s in self.sections)

    def directory(self, config) -> Path:
        return config.run_dir / self.name

    def config_hash(self, config) -> str:
        return config.section_hash(*self.sections)

    def stage_dir(self, config) -> StageDir:
        """The stage's output directory for ``config`` (manifest, up-to-date checks)."""
        return StageDir(self.directory(config), self.name, self.config_hash(config), self.section_label,
                        upstream=tuple(stage(up).stage_dir(config) for up in self.upstream),
                        files=config.user_files() if self.reads_user_files else ())

    def read(self, config):
        """The typed record of this stage's finished outputs for ``config``.

        Raises DataFormatError naming the directory and the command to run when the stage
        is not finished for this config.
        """
        if self.record is None:
            raise ValueError(f"the {self.name} stage has no record to read")
        self.stage_dir(config).require_finished()
        return _resolve(self.record).read(self.directory(config))

    def run(self, config, force: bool = False, show_progress: bool = True) -> dict:
        """Run (or resume, or skip when up to date) this stage alone; its upstream stages must
        be finished. Returns its manifest.

        The envelope: the run directory's lock; each upstream record read and checked once
        (a DataFormatError names the stage to run); ``check``; ``begin`` (None: up to date);
        the runner; the manifest written from what it returns, then its scratch removed.
        """
        import shutil

        with run_directory_lock(config.run_dir):
            upstream = {name: stage(name).read(config) for name in self.upstream}
            if self.check:
                _resolve(self.check)(config, upstream)
            directory = self.stage_dir(config)
            manifest, config_json = directory.begin(force, config)
            if manifest is not None:
                return manifest
            before = STAGES[:STAGES.index(self)]
            walls = {s.name: (s.stage_dir(config).read_manifest() or {}).get("wall_s") for s in before}
            result = _resolve(self.runner)(StageContext(config, directory, config_json, upstream, show_progress,
                                                        walls))
            manifest = directory.write_manifest(True, config_json, result.outputs, result.summary, result.record)
            for name in result.scratch:
                shutil.rmtree(directory.path / name, ignore_errors=True)
            return manifest

    def summary_lines(self, config, manifest: dict) -> list[str]:
        return list(_resolve(self.describe)(manifest, self.directory(config))) if self.describe else []


_S = ("reference", "targets", "train", "simulate", "evaluate")

#: The pipeline, in order.
STAGES: tuple[Stage, ...] = (
    Stage("reference", _S[:1], (), "thermocg.reference.stage:run_reference", "thermocg.io.records:ReferenceRun",
          "thermocg.reference.stage:describe",
          "all-atom reference MD (OpenMM) at every temperature, with per-molecule energies",
          reads_user_files=True),
    Stage("targets", _S[:2], ("reference",), "thermocg.targets.stage:run_targets", "thermocg.io.records:TargetSet",
          "thermocg.targets.stage:describe",
          "map to one bead per molecule; baselines and thermal-response targets per temperature"),
    Stage("train", _S[:3], ("targets",), "thermocg.models.stage:run_train", "thermocg.io.records:TrainedModels",
          "thermocg.models.stage:describe",
          "train the CG force fields (fm, fm-each, em, trf1, trf2, trf-multi); runs the targets stage first when "
          "it is not up to date", cli_runs_first=("targets",)),
    Stage("simulate", _S[:4], ("reference", "train"), "thermocg.simulate.stage:run_simulate",
          "thermocg.io.records:Trajectories", "thermocg.simulate.stage:describe",
          "CG molecular dynamics (torch: BAOAB Langevin, then NVE segments) of every trained model at every "
          "temperature", check="thermocg.simulate.stage:check"),
    Stage("evaluate", _S[:5], ("reference", "train", "simulate"), "thermocg.evaluate.stage:run_evaluate",
          "thermocg.io.results:Results", "thermocg.evaluate.stage:describe",
          "compare the CG simulations with the all-atom reference: forces, RDF, ADF, s2, D and D_CG/D_FG"),
    Stage("report", _S[:5], ("evaluate",), "thermocg.report.stage:run_report", None, "thermocg.report.stage:describe",
          "one self-contained HTML page with the figures and tables of the evaluation (and PNG figures)"),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The table row of a stage, by name."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"no stage {name!r}; the stages are {list(BY_NAME)}") from None


def read(config, name: str):
    """The typed record of stage ``name``'s outputs for ``config`` (see :meth:`Stage.read`)."""
    return stage(name).read(config)


def upstream_closure(name: str) -> list[str]:
    """Every stage ``name`` depends on, directly or not, in pipeline order."""
    need, todo = set(), list(stage(name).upstream)
    while todo:
        s = todo.pop()
        if s not in need:
            need.add(s)
            todo.extend(stage(s).upstream)
    return [s.name for s in STAGES if s.name in need]


def run(config, names=None, force=False, show_progress: bool = True,
        on_stage: Callable[..., None] | None = None) -> dict[str, dict]:
    """Run stages in pipeline order (default: all), each skipping itself when up to date and
    resuming when interrupted. ``force``: True recomputes every stage run, or a collection of
    stage names recomputes those (a stage downstream of a recomputed one recomputes itself,
    since its inputs changed). ``on_stage(stage, "start")`` and ``on_stage(stage, "done",
    manifest)`` are called around each (the CLI logs there). Returns each stage's manifest."""
    wanted = set(names) if names is not None else set(BY_NAME)
    unknown = wanted - set(BY_NAME)
    if unknown:
        raise ValueError(f"no stage(s) {sorted(unknown)}; the stages are {list(BY_NAME)}")
    manifests = {}
    with run_directory_lock(config.run_dir):  # held across the stages: no other run slips in between
        for s in STAGES:
            if s.name not in wanted:
                continue
            if on_stage:
                on_stage(s, "start")
            forced = force is True or (force not in (False, None) and s.name in force)
            manifests[s.name] = s.run(config, force=forced, show_progress=show_progress)
            if on_stage:
                on_stage(s, "done", manifests[s.name])
    return manifests
