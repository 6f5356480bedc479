"""The train stage: the targets stage's records -> one saved force field per variant.

``thermocg train`` runs the targets stage first when it is not up to date (the CLI
chains them, :mod:`thermocg.pipeline`); :func:`run_train` itself only reads the finished
targets stage's record.

Variants (DESIGN.md "Models"): ``fm`` (order 0: prior + W0 fitted to the mapped
forces at T0), ``em`` (energy matching, THEORY.md §4: W0 as fm, then U(R), a sum of
per-bead energies on its own network, fitted to the total or per-molecule energies at T0;
W1 = (U - W0)/beta0, first order only), ``fm-each`` (an independent order-0 model at
every reference temperature: the structural upper bound at seen temperatures), ``trf1``
(W0 as fm, then W1 on its own network fitted to the order-1 targets), ``trf2`` (plus W2
on the centred order-2 targets), ``trf-multi`` (orders 0-2 fitted jointly at several
training temperatures, each frame at its own beta: Hermite interpolation in beta; with
one temperature it is trf2 fitted jointly). em, trf1, trf2 and the fm-each at T0 take
fm's W0 (same frames, same seed) instead of fitting it again (:func:`fit_variant`). With
``[train] seeds`` every model is trained once per seed. The targets and their baselines
come from the targets stage (pair-spline or HIP-NN-TS baselines). Outputs in
``<run.directory>/train/``::

    manifest.json          config hash, outputs, per-model and per-phase losses and times
    fm.pt, trf2.pt, ...    a saved model each (weights + metadata), loadable with
                           ``thermocg.load_model`` without the training code;
                           ``fm-seed1.pt`` ... with ``[train] seeds``
    .<phase>.ckpt          training checkpoint while a phase trains (resume)

"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from thermocg.config import Config
from thermocg import tasks as executors
from thermocg.errors import ConfigError, DataFormatError, TrainingError
from thermocg.io.records import ModelEntry, TargetSet, TrainedModels
from thermocg.io.strict import number
from thermocg.labels import temperature_label
from thermocg.models.prior import RepulsivePrior
from thermocg.models.saved import load_model, save_model
from thermocg.models.thermal import (NetworkSettings, SeparateNetworks, ThermalForceField, beta_of, build_network,
                                     zero_heads)
from thermocg.models.training import TrainingData, TrainSettings, train_heads
from thermocg.stagedir import StageContext, StageResult

log = logging.getLogger(__name__)

ORDER = {"fm": 0, "fm-each": 0, "em": 1, "trf1": 1, "trf2": 2, "trf-multi": 2, "trf1-regression": 1,
         "trf2-regression": 2}


def thermal_heads_of(variant: str) -> str:
    """The variant whose heads a model has: trf1-regression is trf1 on the regression thermal
    targets (the targets file's t1_regression, t2_regression), and so on."""
    return variant.removesuffix("-regression")


def network_settings(config: Config) -> NetworkSettings:
    t = config.train
    return NetworkSettings(cutoff_A=t.cutoff_A, dist_soft_min_A=t.dist_soft_min_A,
                           dist_soft_max_A=t.dist_soft_max_A, n_features=t.n_features,
                           n_sensitivities=t.n_sensitivities, n_interaction_layers=t.n_interaction_layers,
                           n_atom_layers=t.n_atom_layers, shared=t.shared_representation,
                           interaction=t.interaction)


def run_train(ctx: StageContext) -> StageResult:
    """Train every configured model from the targets stage's record (skipping models already
    saved for this config). ``thermocg train`` runs the targets stage first when needed.

    Models train in ``[run] processes`` worker processes (one per core on a CPU, one on a GPU);
    a model whose W0 is another's (em, trf1, trf2 and fm-each at T0 share fm's of the same
    seed) starts when that one is saved. One line per finished model says how long the rest
    takes.
    """
    from thermocg.device import pick_device

    config, stage, targets = ctx.config, ctx.stage, ctx.record("targets")
    device = pick_device(config.run.device)
    plan = model_plan(config)
    donors = w0_donors(plan)
    outputs, summary, jobs = {}, {}, []
    retrain = {e.name for e in plan if not ((stage.path / f"{e.name}.pt").exists()
                                            and f"{e.name}.pt" in stage.recorded)}
    # a model whose W0 donor is trained again is trained again too: it must carry that W0
    retrain |= {e.name for e in plan if donors.get(e.name) in retrain}
    for entry in plan:
        out = stage.path / f"{entry.name}.pt"
        if entry.name not in retrain:  # finished and verified; an unrecorded file is redone
            outputs[entry.name], summary[entry.name] = [out.name], "up to date"
            continue
        donor = donors.get(entry.name)
        if donor in retrain:  # any checkpoint of its own holds the old donor's W0
            for phase in (f"{entry.name}-thermal", f"{entry.name}-U"):
                (stage.path / f".{phase}.ckpt").unlink(missing_ok=True)
        jobs.append(TrainJob(config, entry, targets, stage.path, ctx.config_json, str(device),
                             None if donor is None else stage.path / f"{donor}.pt", ctx.show_progress))
    run = executors.executor(config.run.processes, len(jobs), device.type != "cpu")
    if jobs:
        log.info("train: %d of %d models to train, %s, %s -> %s", len(jobs), len(plan), run.describe(), device,
                 stage.path)

    def finished(job: TrainJob, result: dict) -> None:
        stage.add_outputs([job.out.name])
        for phase in result["phases"]:  # only now: an interruption before this line resumes them
            (stage.path / f".{phase}.ckpt").unlink(missing_ok=True)
        outputs[job.entry.name], summary[job.entry.name] = [job.out.name], result

    in_process = run.runs_here(len(jobs))  # progress bars then
    _run_jobs([replace(j, threads=run.threads or 0, show_progress=ctx.show_progress and in_process) for j in jobs],
              run, donors, finished)
    held = held_out_frames(config)
    record = TrainedModels(stage.path, tuple(plan), (held.start, held.stop))
    return StageResult(outputs, {e.name: summary[e.name] for e in plan}, record.to_json())


@dataclass(frozen=True)
class TrainJob:
    """One model to train (picklable: it crosses to a worker process)."""

    config: Config
    entry: ModelEntry
    targets: TargetSet
    directory: Path
    config_json: dict
    device: str
    #: the saved model whose W0 (and prior) this one starts from, frozen; None: fit W0 here
    w0_from: Path | None
    show_progress: bool
    threads: int = 0

    @property
    def out(self) -> Path:
        return self.directory / f"{self.entry.name}.pt"

    @property
    def cost(self) -> float:
        """Relative cost, for the time-left estimate: frames x networks trained."""
        e = self.entry
        heads = (0 if self.w0_from is not None else 1) + (e.order if e.variant != "em" else 0.5)
        return len(e.training_temperatures_K) * max(heads, 0.05)


def train_one(job: TrainJob) -> dict:
    """Train, save (temporary name, then rename) and summarise one model."""
    if job.threads:
        torch.set_num_threads(job.threads)
    t, entry = job.config.train, job.entry
    regression = entry.variant.endswith("-regression")
    data, sources = training_data(job.targets, entry.training_temperatures_K, entry.order,
                                  em=t.em_energy if entry.variant == "em" else None,
                                  frames=training_frames(job.config),
                                  weighting="uniform" if regression else t.target_weighting,
                                  thermal="regression" if regression else "", w0=t.w0_targets)
    w0 = None if job.w0_from is None else load_model(job.w0_from).model
    log.info("train %s: order %d, T0 = %g K, training temperatures %s, %d frames, seed %d%s (%s)", entry.name,
             entry.order, entry.T0_K, list(entry.training_temperatures_K), len(data.positions), entry.seed,
             "" if w0 is None else f", W0 from {job.w0_from.stem}", job.device)
    start = time.monotonic()
    model, histories = fit_variant(job.config, entry.name, entry.order, entry.T0_K, data, job.device,
                                   checkpoint_dir=job.directory, show_progress=job.show_progress,
                                   variant=entry.variant, seed=entry.seed, w0_from=w0)
    save_model(job.out, model, {"variant": entry.variant, "training_temperatures_K": list(entry.training_temperatures_K),
                                "bead_types": list(job.targets.frames(entry.training_temperatures_K[0],
                                                                      slice(0, 1)).bead_types),
                                "seed": entry.seed, "source_files": sources, "config": job.config_json,
                                "w0_from": None if job.w0_from is None else job.w0_from.name,
                                "history": {p: {k: h[k] for k in ("train", "valid", "best_epoch", "best_valid")}
                                            for p, h in histories.items()}})
    return {"seconds": time.monotonic() - start, "w0_from": None if job.w0_from is None else job.w0_from.stem,
            "phases": {p: {"best_valid_loss": h["best_valid"], "valid_loss_before": h.get("valid_before"),
                           "epochs": len(h["valid"]), "best_epoch": h["best_epoch"]} for p, h in histories.items()}}


def _run_jobs(jobs: list[TrainJob], run: executors.Executor, donors: dict[str, str], finished) -> None:
    """Run the training jobs on ``run`` (:mod:`thermocg.tasks`), a model after the model it takes
    W0 from; ``finished(job, summary)`` runs here as each model is saved, with a line that says
    how long the rest takes."""
    by_name = {j.entry.name: j for j in jobs}
    total_cost = sum(j.cost for j in jobs) or 1.0
    done_cost, t_start, n_done = 0.0, time.monotonic(), 0

    def report(job: TrainJob, result: dict) -> None:
        nonlocal done_cost, n_done
        finished(job, result)
        done_cost += job.cost
        n_done += 1
        elapsed = time.monotonic() - t_start
        left = elapsed * (total_cost - done_cost) / done_cost if done_cost else float("nan")
        best = {p: s["best_valid_loss"] for p, s in result["phases"].items()}
        log.info("train %s: saved after %.0f s (best validation loss %s); %d/%d models, about %s left",
                 job.entry.name, result["seconds"], ", ".join(f"{p} {v:.4f}" for p, v in best.items()),
                 n_done, len(jobs), _duration(left) if n_done < len(jobs) else "nothing")

    # a donor not trained here was saved before: nothing to wait for
    run.map(train_one, jobs, label=lambda job: f"train {job.entry.name}", finished=report,
            after=lambda job: [by_name[d] for d in [donors.get(job.entry.name)] if d in by_name], died=TrainingError)


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's lines for a finished train stage: validation loss per model and phase."""
    lines = []
    for name, s in manifest.get("summary", {}).items():
        if not isinstance(s, dict):
            continue
        phases = "; ".join(f"{p}: {number(q['valid_loss_before'], '.4f')} -> {number(q['best_valid_loss'], '.4f')} "
                           f"in {q['epochs']} epochs" for p, q in s["phases"].items())
        lines.append(f"{name}: validation loss (normalised MSE) {phases}"
                     + (f" (W0 from {s['w0_from']})" if s.get("w0_from") else ""))
    return lines


def fit_variant(config: Config, name: str, order: int, t0: float, data: TrainingData, device="cpu",
                checkpoint_dir: Path | None = None, show_progress: bool = True, variant: str | None = None,
                seed: int | None = None, w0_from: ThermalForceField | None = None):
    """Build and train one model ``name`` of ``variant`` (default: ``name``) at T0 = ``t0``
    with the [train] settings and ``seed`` (default ``[run] seed``).

    Every variant but trf-multi is fitted in phases, W0 first, on a network per head:

    * ``name`` (fm, fm-each) or ``<name>-W0``: the prior and W0 on the mapped forces, exactly
      as fm; skipped when ``w0_from`` (a model of the same data and seed, e.g. fm) gives them;
    * ``<name>-U`` (em): U on its own network, fitted to the energies;
    * ``<name>-thermal`` (trf1, trf2): W1 (and W2) on their own networks, fitted to the
      order-1 (and order-2) targets with W0 frozen.

    So at T0 itself, where the prediction is W0 alone, trf1, trf2 and em are fm: the noisy
    thermal targets neither steer W0's early stopping nor share its optimisation. Fitted
    jointly (one loop, early stopping on the summed loss), trf2 at T0 was 5-15 % worse than fm
    on an oracle (issue 14), and em's energy loss degraded W0 the same way (bench/RESULTS.md).
    trf-multi fits orders 0-2 jointly at its training temperatures (Hermite interpolation in
    beta: its order-0 targets away from T0 read every head), on the network layout of
    ``[train] shared_representation``.

    Returns the model and the training history of each phase that ran, by phase name. With
    ``checkpoint_dir`` each phase checkpoints to ``.<phase>.ckpt`` there and resumes.
    """
    t = config.train
    variant = name if variant is None else variant
    seed = config.run.seed if seed is None else seed
    steps_factor = 1
    torch.manual_seed(seed)
    net = replace(network_settings(config), n_types=1 if data.types is None else int(np.max(data.types)) + 1)
    if variant == "trf-multi":
        phases = [(name, data)]
    else:
        net = replace(net, shared=False)
        forces_only = replace(data, targets={0: data.targets[0]}, energies={}, weights={})
        phases = [(name if order == 0 else f"{name}-W0", forces_only)]
        if w0_from is not None:
            phases = []
        if variant == "em":
            phases.append((f"{name}-U", replace(data, targets={}, weights={})))
        elif order > 0:
            thermal = replace(data, targets={k: v for k, v in data.targets.items() if k > 0},
                              weights={k: v for k, v in data.weights.items() if k > 0})
            # only the frames that carry thermal targets (restrained: the sampled configurations)
            have = np.ones(len(data.positions), dtype=bool)
            if thermal.weights:
                have = np.any([w.reshape(len(w), -1).any(axis=1) for w in thermal.weights.values()], axis=0)
            phases.append((f"{name}-thermal", thermal if have.all() else thermal.subset(have)))
            steps_factor = int(np.ceil(len(have) / max(int(have.sum()), 1)))
    if w0_from is not None:
        prior = copy.deepcopy(w0_from.prior)
    else:
        prior = RepulsivePrior.fit(data.positions, data.box, data.targets[0], width_A=t.prior_width_A, p=t.prior_p)
    model = ThermalForceField(build_network(net), prior, beta_of(t0), order=order, settings=net,
                              form="em" if variant == "em" else t.form).to(device)
    if w0_from is not None:
        if not isinstance(w0_from.network, SeparateNetworks) or not isinstance(model.network, SeparateNetworks):
            raise ValueError(f"{name}: W0 can be taken only from a model with a network per head")
        model.network.networks[0].load_state_dict(w0_from.network.networks[0].state_dict())
    settings = TrainSettings(max_epochs=t.max_epochs, batch_frames=t.batch_frames, learning_rate=t.learning_rate,
                             lr_patience=t.lr_patience, early_stop_patience=t.early_stop_patience,
                             valid_fraction=t.valid_fraction, weights=t.loss_weights, seed=seed)
    if thermal_heads_of(variant) in ("trf1", "trf2"):
        zero_heads(model.network, range(1, order + 1))

    def settings_of(phase):
        # the thermal heads start at zero (no response) and move only as far as the validation
        # frames confirm: on targets without a usable signal trf1/trf2 stay fm, with a warning,
        # instead of keeping a random response that dB and dB^2 amplify away from T0 (issue 14)
        if phase.endswith("-thermal"):
            # on a subset of the frames (restrained targets: the sampled configurations) an epoch
            # is that many times shorter: the same optimiser steps as over every frame, not the
            # same epochs (15 epochs of 16 configurations left the heads, which start at zero, at
            # half the response they reach with 5x the steps; bench/RESULTS.md)
            return replace(settings, require_improvement=False, start_is_a_candidate=True,
                           max_epochs=settings.max_epochs * steps_factor,
                           lr_patience=settings.lr_patience * steps_factor,
                           early_stop_patience=settings.early_stop_patience * steps_factor)
        return settings

    histories = {phase: train_heads(model, phase_data, settings_of(phase), show_progress=show_progress,
                                    checkpoint=None if checkpoint_dir is None else checkpoint_dir / f".{phase}.ckpt")
                 for phase, phase_data in phases}
    return model, histories


def model_plan(config: Config) -> list[ModelEntry]:
    """Every model the train stage makes for ``config``: name (the file name without .pt),
    variant, order, T0, training temperatures and seed. With ``[train] seeds`` every model is
    made once per seed, named ``<group>-seed<s>``; without, once with ``[run] seed``."""
    t = config.train
    groups = []
    for variant in t.variants:
        if variant == "fm-each":
            groups += [(f"fm-each-{temperature_label(temp)}", variant, temp, (temp,))
                       for temp in config.reference.temperatures_K]
        elif variant == "trf-multi":
            groups.append((variant, variant, t.T0_K, tuple(t.training_temperatures_K or (t.T0_K,))))
        else:
            groups.append((variant, variant, t.T0_K, (t.T0_K,)))
    seeds = t.seeds or (config.run.seed,)
    return [ModelEntry(f"{group}-seed{seed}" if t.seeds else group, variant, ORDER[variant], t0, temps, seed, group)
            for group, variant, t0, temps in groups for seed in seeds]


def w0_donors(plan: list[ModelEntry]) -> dict[str, str]:
    """Model name -> the model whose W0 it takes: em, trf1, trf2 and the fm-each at T0 take fm's
    of the same seed (same frames, same seed, same W0 phase: training it again would give the
    same weights)."""
    fm = {m.seed: m for m in plan if m.variant == "fm"}
    donors = {}
    for m in plan:
        donor = fm.get(m.seed)
        if donor is None or m is donor or m.variant == "trf-multi":
            continue
        if thermal_heads_of(m.variant) in ("em", "trf1", "trf2") or (m.variant == "fm-each"
                                                    and m.training_temperatures_K == donor.training_temperatures_K):
            donors[m.name] = donor.name
    return donors


def training_frames(config: Config) -> slice:
    """The frames of every temperature that training sees (the rest are ``test_frames``)."""
    return slice(0, config.reference.n_frames - config.train.test_frames)


def held_out_frames(config: Config) -> slice:
    """The held-out frames of every temperature (empty when ``[train] test_frames = 0``)."""
    return slice(config.reference.n_frames - config.train.test_frames, config.reference.n_frames)


def training_data(targets: TargetSet, temps, order: int, em: str | None = None,
                  frames: slice = slice(None), weighting: str = "uniform", thermal: str = "",
                  w0: str = "mapped") -> tuple[TrainingData, list[str]]:
    """Frames (``frames`` of each file) of the targets at ``temps``, each with its beta,
    targets up to ``order``.

    ``thermal`` "regression": the order-1 and order-2 targets are the file's regression ones
    (t1_regression, t2_regression: restrained files made for the trf1/trf2-regression variants).
    ``w0`` "restrained" (``[train] w0_targets``): a frame with a restrained configuration has
    the conditional mean force at its R (the file's f0, sampled with every bead held) as its
    order-0 target instead of its mapped force: the same expectation, a fraction of the noise.

    ``em`` ("total" or "per-molecule"): energy matching, whose head 1 is fitted to the
    total potential energies or to the per-molecule energies instead of the t1 targets.
    A NaN thermal target (restrained targets: a frame not sampled) is missing: weight 0.
    ``weighting`` ``"inverse-variance"``: each thermal target component weighs 1/se^2 (its
    ``t1_se``/``t2_se``; ``[train] target_weighting``), capped at the 10th percentile's.
    """
    parts = [targets.frames(temp, frames) for temp in temps]
    sources = [targets.path(temp).name for temp in temps]

    def cat(get):
        return np.concatenate([get(p) for p in parts])

    types = parts[0].bead_type
    for p, src in zip(parts, sources):
        if not np.array_equal(p.bead_type, types) or p.bead_types != parts[0].bead_types:
            raise DataFormatError(f"{src}: its beads' types differ from those of {sources[0]} (every temperature "
                                  "must hold the same molecules in the same order)")
    types = types if len(parts[0].bead_types) > 1 else None
    beta = cat(lambda p: np.full(len(p.positions), beta_of(p.temperature_K)))
    positions, box, forces = cat(lambda p: p.positions), cat(lambda p: p.box), cat(lambda p: p.forces)
    if w0 == "restrained":
        not_restrained = [src for p, src in zip(parts, sources) if p.attrs.get("method") != "restrained"]
        if not_restrained:  # a regression file's f0 is the baselines' fit, not a mean force
            raise ConfigError(f"train.w0_targets = 'restrained' needs restrained targets; {', '.join(not_restrained)} "
                              "has regression ones (targets.method)")
        mean = cat(lambda p: p.targets["f0"])
        forces = np.where(np.isfinite(mean), mean, forces)
    if em is not None:
        energy = cat(lambda p: p.potential_energy if em == "total" else p.targets["bead_energy"])
        return TrainingData(positions=positions, box=box, targets={0: forces}, beta=beta,
                            energies={1: energy}, types=types), sources
    if thermal == "regression" and not all("t1_regression" in p.targets for p in parts):
        raise ConfigError(f"{', '.join(sources)}: no regression thermal targets (t1_regression) for the "
                          "trf1/trf2-regression variants; run `thermocg targets --force`")
    suffix = "_regression" if thermal == "regression" else ""
    by_order = {0: forces, 1: cat(lambda p: p.targets["t1" + suffix]), 2: cat(lambda p: p.targets["t2" + suffix])}
    weights = {}
    for k in range(1, order + 1):
        missing = ~np.isfinite(by_order[k])
        if missing.all():
            raise ConfigError(f"no order-{k} targets at {[float(t) for t in temps]} K in {', '.join(sources)} "
                              "(restrained targets: add the temperature to targets.restrained_temperatures_K)")
        w = (~missing).astype(np.float64)
        if weighting == "inverse-variance":
            name = f"t{k}_se"
            if not all(name in p.targets for p in parts):
                raise ConfigError(f"train.target_weighting = 'inverse-variance' needs the targets' standard errors "
                                  f"({name}); {', '.join(sources)} carry none (targets.method = 'regression')")
            se2 = cat(lambda p: p.targets[name]) ** 2
            floor = np.percentile(se2[~missing], 10)
            w = np.where(missing, 0.0, 1.0 / np.maximum(np.where(missing, floor, se2), floor))
        if missing.any() or weighting != "uniform":
            weights[k] = w
            by_order[k] = np.where(missing, 0.0, by_order[k])
    return TrainingData(positions=positions, box=box, targets={k: by_order[k] for k in range(order + 1)},
                        beta=beta, weights=weights, types=types), sources
