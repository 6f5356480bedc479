"""One model's systems (temperatures x replicas) simulated as one batch: the model loaded, its
force functions (inference form, distilled form, multiple-time-step split) built on first use,
the start frames, seeds and output files; and the bead topology written beside them."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from thermocg import __version__
from thermocg.config import Config, SimulateSection
from thermocg.errors import ConfigError
from thermocg.io.records import ReferenceRun, TrainedModels, TrajectoryRun
from thermocg.io.trajectory import check_existing, part_path
from thermocg.labels import temperature_label
from thermocg.models.saved import load_model
from thermocg.simulate.engine import Integrator, Safety, model_force_function, split_force_functions
from thermocg.simulate.plan import start_frame, system_seed
from thermocg.stagedir import atomic_path

log = logging.getLogger(__name__)


def distil(model, reference: ReferenceRun, held_out: slice, s: SimulateSection, device):
    """The distilled form of ``model`` (:class:`thermocg.models.distilled.DistilledForceField`), fitted
    to its forces on the first ``[simulate] distilled_frames`` reference frames at each of its
    training temperatures (never the ``held_out`` test frames, which come last)."""
    from thermocg.models.distilled import DistilledForceField

    temps = model.metadata.get("training_temperatures_K") or [model.metadata["T0_K"]]
    n = min(s.distilled_frames, held_out.start)
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
    #: the config sections the hash covers, for messages
    sections: str
    device: object
    meta: dict
    reference: ReferenceRun = None
    #: the models' held-out frames (never fitted by the distilled form; from the train stage's record)
    held_out: slice | None = None
    #: (the force function, (slow, fast) or (None, None)), built by :meth:`force_functions`
    functions: tuple | None = None
    #: the systems that failed the MD's checks (``[simulate] unstable = "record"``): their markers
    unstable: tuple = ()
    #: indices of systems whose NVE segments failed: their Langevin frames stand, no NVE files
    nve_skipped: frozenset = frozenset()

    def force_functions(self):
        """(the force function, (slow, fast) parts for multiple time stepping or (None, None)),
        built on first use: a finished batch neither builds an inference form nor fits a
        distilled one."""
        if self.functions is None:
            s = self.settings
            if s.engine == "distilled":
                fn = model_force_function(distil(self.model, self.reference, self.held_out, s, self.device),
                                          engine="distilled")
            else:
                fn = model_force_function(self.model, skin_A=s.neighbor_skin_A, engine=s.engine, types=self.types)
            split = (split_force_functions(self.model, skin_A=s.neighbor_skin_A, types=self.types)
                     if max(s.mts_substeps, s.nve.mts_substeps) > 1 else (None, None))
            self.functions = (fn, split)
        return self.functions

    @classmethod
    def of(cls, models: TrainedModels, name: str, temps, config: Config, reference: ReferenceRun, stage_path: Path,
           config_hash: str, sections: str, device) -> "Batch":
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
        batch = cls(name=name, model=model, settings=s, systems=systems, reference=reference, held_out=models.held_out,
                    seeds=[system_seed(config.run.seed, name, t, r) for t, r in systems],
                    start_x=np.stack([starts[t].positions[-1] for t, _ in systems]), masses=first.bead_masses,
                    box=first.box[-1], types=first.bead_type if len(first.bead_types) > 1 else None,
                    out_dir=stage_path / name, config_hash=config_hash, sections=sections, device=device, meta=meta)
        if s.unstable == "record":  # systems found unstable by an earlier run of this config stay out
            for k in reversed(range(len(systems))):
                marker = batch._marker(k)
                if marker is not None:
                    batch = batch._apply(k, marker)
        return batch

    # -- systems that fail the MD's checks ([simulate] unstable = "record") --------------------
    def marker_path(self, k: int) -> Path:
        return self.out_dir / f"{self.labels[k]}.unstable.json"

    def _marker(self, k: int) -> dict | None:
        """System k's marker from an earlier run of this config, or None."""
        try:
            marker = json.loads(self.marker_path(k).read_text())
        except (OSError, ValueError):
            return None
        return marker if isinstance(marker, dict) and marker.get("config_hash") == self.config_hash else None

    def _apply(self, k: int, marker: dict) -> "Batch":
        unstable = (*self.unstable, marker)
        if marker["phase"] == "nve":
            return replace(self, unstable=unstable, nve_skipped=self.nve_skipped | {k})
        keep = [i for i in range(len(self.systems)) if i != k]
        return replace(self, unstable=unstable, systems=[self.systems[i] for i in keep],
                       seeds=[self.seeds[i] for i in keep], start_x=self.start_x[keep],
                       nve_skipped=frozenset(i - (i > k) for i in self.nve_skipped if i != k))

    def record_unstable(self, k: int, phase: str, step: int, reason: str) -> "Batch":
        """Write system k's marker (``<T>.unstable.json``) and return the batch without it
        (``phase`` "nvt") or without its NVE segments ("nve"). Each system's trajectory depends
        on nothing but its own forces and random stream, so the others run as they would have (to
        the float32 round-off of sums batched in another order)."""
        t, r = self.systems[k]
        marker = {"config_hash": self.config_hash, "model": self.name, "temperature_K": float(t), "replica": int(r),
                  "phase": phase, "step": int(step), "reason": reason}
        with atomic_path(self.marker_path(k)) as tmp:
            tmp.write_text(json.dumps(marker, indent=1))
        for stale in ([part_path(self.finals[k]), self.checkpoint] if phase == "nvt"
                      else [part_path(f) for f in self.nve_files[k]]):
            stale.unlink(missing_ok=True)  # a batch of other systems: its checkpoint no longer fits
        log.warning("simulate %s: the system at %g K (replica %d) is unstable in %s (%s); recorded in %s, the "
                    "model's other systems go on", self.name, t, r, phase.upper(), reason, self.marker_path(k).name)
        return self._apply(k, marker)

    @property
    def labels(self) -> list[str]:
        return [system_label(t, r) for t, r in self.systems]

    @property
    def checkpoint(self) -> Path:
        """The Langevin run's checkpoint (positions, velocities, random streams of every system)."""
        return self.out_dir / ".nvt.ckpt"

    @property
    def finals(self) -> list[Path]:
        return [self.out_dir / f"{label}.h5md" for label in self.labels]

    @property
    def nve_files(self) -> list[list[Path]]:
        """Each system's NVE segments (none for a system whose NVE failed)."""
        return [[] if i in self.nve_skipped else
                [self.out_dir / f"{label}-nve{k:02d}.h5md" for k in range(self.settings.nve.n_segments)]
                for i, label in enumerate(self.labels)]

    def record(self) -> list[TrajectoryRun]:
        return [TrajectoryRun(self.name, t, r, f"{self.name}/{f.name}", tuple(f"{self.name}/{g.name}" for g in nve))
                for (t, r), f, nve in zip(self.systems, self.finals, self.nve_files)]

    @property
    def marker_files(self) -> list[str]:
        """The markers of this model's unstable systems (outputs of the stage)."""
        return [f"{system_label(u['temperature_K'], u['replica'])}.unstable.json" for u in self.unstable]

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
        return check_existing(path, self.config_hash, self.sections, n_frames, start)


def system_label(temperature_K: float, replica: int) -> str:
    """A system's file label: T300K, or T300K-r01 for further replicas."""
    return temperature_label(temperature_K) + (f"-r{replica:02d}" if replica else "")


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
