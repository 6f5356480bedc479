"""The train stage: the targets stage's records -> one saved force field per variant.

``thermocg train`` runs the targets stage first when it is not up to date (the CLI
chains them, :mod:`thermocg.pipeline`); :func:`run_train` itself only reads a finished
targets stage.

Variants (DESIGN.md "Models"): ``fm`` (order 0: prior + W0 fitted to the mapped
forces at T0), ``em`` (energy matching, THEORY.md §4: W0 force-matched as in fm, then
U(R), a sum of per-bead energies on its own network, fitted to the total or
per-molecule energies at T0; W1 = (U - W0)/beta0, first order only), ``fm-each``
(an independent order-0 model at every reference temperature: the structural upper
bound at seen temperatures), ``trf1`` (plus W1
on the order-1 targets), ``trf2`` (plus W2 on the centred order-2 targets),
``trf-multi`` (orders 0-2 fitted jointly at several training temperatures, each
frame at its own beta: Hermite interpolation in beta; with one temperature it is
trf2). The targets and their baselines come from the targets stage (pair-spline
or HIP-NN-TS baselines). Outputs in ``<run.directory>/train/``::

    manifest.json          config hash, outputs, per-variant losses
    fm.pt, trf2.pt, ...    a saved model each (weights + metadata), loadable with
                           ``thermocg.load_model`` without the training code
    .<variant>.ckpt        training checkpoint while a variant trains (resume)

"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from thermocg.config import Config
from thermocg.errors import ConfigError
from thermocg.io.records import ModelEntry, TargetSet, TrainedModels
from thermocg.io.strict import number
from thermocg.labels import temperature_label
from thermocg.models.prior import RepulsivePrior
from thermocg.models.saved import save_model
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
from thermocg.models.training import TrainingData, TrainSettings, train_heads
from thermocg.runlock import locked_stage

log = logging.getLogger(__name__)

STAGE = "train"
ORDER = {"fm": 0, "fm-each": 0, "em": 1, "trf1": 1, "trf2": 2, "trf-multi": 2}


def train_dir(config: Config) -> Path:
    """This stage's directory for ``config`` (from the pipeline table)."""
    from thermocg import pipeline
    return pipeline.stage(STAGE).directory(config)


def network_settings(config: Config) -> NetworkSettings:
    t = config.train
    return NetworkSettings(cutoff_A=t.cutoff_A, dist_soft_min_A=t.dist_soft_min_A,
                           dist_soft_max_A=t.dist_soft_max_A, n_features=t.n_features,
                           n_sensitivities=t.n_sensitivities, n_interaction_layers=t.n_interaction_layers,
                           n_atom_layers=t.n_atom_layers, shared=t.shared_representation,
                           interaction=t.interaction)


@locked_stage
def run_train(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Train every configured variant from the finished targets stage (skipping models already
    saved for this config). ``thermocg train`` runs the targets stage first when needed."""
    from thermocg import pipeline
    from thermocg.device import pick_device

    t = config.train
    for temp in (t.T0_K, *t.training_temperatures_K):
        if temp not in config.reference.temperatures_K:
            raise ConfigError(f"train temperature {temp:g} K (T0_K or training_temperatures_K) is not one of "
                              f"reference.temperatures_K {list(config.reference.temperatures_K)}")
    targets = pipeline.read(config, "targets")
    stage = pipeline.stage(STAGE).stage_dir(config)
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest

    device = pick_device(config.run.device)
    plan = model_plan(config)
    outputs, summary = {}, {}
    for entry in plan:
        name = entry.name
        out = stage.path / f"{name}.pt"
        if out.exists() and out.name in stage.recorded:  # finished and verified; an unrecorded file is redone
            outputs[name], summary[name] = [out.name], "up to date"
            continue
        data, sources = training_data(targets, entry.training_temperatures_K, entry.order,
                                      em=t.em_energy if entry.variant == "em" else None,
                                      frames=training_frames(config))
        log.info("train %s: order %d, T0 = %g K, training temperatures %s, %d frames (%s)", name, entry.order,
                 entry.T0_K, list(entry.training_temperatures_K), len(data.positions), device)
        model, histories = fit_variant(config, name, entry.order, entry.T0_K, data, device,
                                       checkpoint_dir=stage.path, show_progress=show_progress)
        history = histories[name]
        save_model(out, model, {"variant": entry.variant, "training_temperatures_K": list(entry.training_temperatures_K),
                                "source_files": sources, "config": config_json,
                                "history": {k: history[k] for k in ("train", "valid", "best_epoch", "best_valid")}})
        stage.add_outputs([out.name])
        for phase in histories:
            (stage.path / f".{phase}.ckpt").unlink(missing_ok=True)
        outputs[name] = [out.name]
        summary[name] = {"best_valid_loss": history["best_valid"], "valid_loss_before": history.get("valid_before"),
                         "epochs": len(history["valid"]), "best_epoch": history["best_epoch"]}
        if name == "em":
            u = histories[f"{name}-U"]
            summary[name]["energy_head"] = {"best_valid_loss": u["best_valid"], "epochs": len(u["valid"]),
                                            "valid_loss_before": u.get("valid_before")}
    held = held_out_frames(config)
    record = TrainedModels(stage.path, tuple(plan), (held.start, held.stop))
    return stage.write_manifest(True, config_json, outputs, summary, record.to_json())


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's lines for a finished train stage: validation loss per model."""
    return [f"{variant}: validation loss {number(s['valid_loss_before'], '.4f')} -> "
            f"{number(s['best_valid_loss'], '.4f')} (normalised MSE) in {s['epochs']} epochs"
            for variant, s in manifest.get("summary", {}).items() if isinstance(s, dict)]


def fit_variant(config: Config, name: str, order: int, t0: float, data: TrainingData, device="cpu",
                checkpoint_dir: Path | None = None, show_progress: bool = True):
    """Build and train one model of variant ``name`` at T0 = ``t0`` with the [train] settings.

    Returns the model and the training history of each phase, by phase name: ``name``,
    and for em also ``"em-U"`` (U is fitted after W0, on its own network: fitted jointly,
    on a shared network or in one loop whose early stopping follows the sum of both
    losses, the noisy energy loss degraded W0's forces at T0 itself, bench/RESULTS.md).
    With ``checkpoint_dir`` each phase checkpoints to ``.<phase>.ckpt`` there and resumes.
    """
    t = config.train
    torch.manual_seed(config.run.seed)
    prior = RepulsivePrior.fit(data.positions, data.box, data.targets[0], width_A=t.prior_width_A, p=t.prior_p)
    net = network_settings(config)
    phases = [(name, data)]
    if name == "em":
        net = replace(net, shared=False)
        phases = [(name, replace(data, energies={})), (f"{name}-U", replace(data, targets={}))]
    model = ThermalForceField(build_network(net), prior, beta_of(t0), order=order, settings=net,
                              form="em" if name == "em" else t.form).to(device)
    settings = TrainSettings(max_epochs=t.max_epochs, batch_frames=t.batch_frames, learning_rate=t.learning_rate,
                             lr_patience=t.lr_patience, early_stop_patience=t.early_stop_patience,
                             valid_fraction=t.valid_fraction, weights=t.loss_weights, seed=config.run.seed)
    histories = {phase: train_heads(model, phase_data, settings, show_progress=show_progress,
                                    checkpoint=None if checkpoint_dir is None else checkpoint_dir / f".{phase}.ckpt")
                 for phase, phase_data in phases}
    return model, histories


def model_plan(config: Config) -> list[ModelEntry]:
    """Every model the train stage makes for ``config``: name (the file name without .pt),
    variant, order, T0 and training temperatures."""
    t = config.train
    plan = []
    for variant in t.variants:
        if variant == "fm-each":
            plan += [ModelEntry(f"fm-each-{temperature_label(temp)}", variant, ORDER[variant], temp, (temp,))
                     for temp in config.reference.temperatures_K]
        elif variant == "trf-multi":
            plan.append(ModelEntry(variant, variant, ORDER[variant], t.T0_K,
                                   tuple(t.training_temperatures_K or (t.T0_K,))))
        else:
            plan.append(ModelEntry(variant, variant, ORDER[variant], t.T0_K, (t.T0_K,)))
    return plan


def training_frames(config: Config) -> slice:
    """The frames of every temperature that training sees (the rest are ``test_frames``)."""
    return slice(0, config.reference.n_frames - config.train.test_frames)


def held_out_frames(config: Config) -> slice:
    """The held-out frames of every temperature (empty when ``[train] test_frames = 0``)."""
    return slice(config.reference.n_frames - config.train.test_frames, config.reference.n_frames)


def training_data(targets: TargetSet, temps, order: int, em: str | None = None,
                  frames: slice = slice(None)) -> tuple[TrainingData, list[str]]:
    """Frames (``frames`` of each file) of the targets at ``temps``, each with its beta,
    targets up to ``order``.

    ``em`` ("total" or "per-molecule"): energy matching, whose head 1 is fitted to the
    total potential energies or to the per-molecule energies instead of the t1 targets.
    """
    parts = [targets.frames(temp, frames) for temp in temps]
    sources = [targets.path(temp).name for temp in temps]

    def cat(get):
        return np.concatenate([get(p) for p in parts])

    beta = cat(lambda p: np.full(len(p.positions), beta_of(p.temperature_K)))
    positions, box, forces = cat(lambda p: p.positions), cat(lambda p: p.box), cat(lambda p: p.forces)
    if em is not None:
        energy = cat(lambda p: p.potential_energy if em == "total" else p.targets["bead_energy"])
        return TrainingData(positions=positions, box=box, targets={0: forces}, beta=beta,
                            energies={1: energy}), sources
    by_order = {0: forces, 1: cat(lambda p: p.targets["t1"]), 2: cat(lambda p: p.targets["t2"])}
    return TrainingData(positions=positions, box=box, targets={k: by_order[k] for k in range(order + 1)},
                        beta=beta), sources
