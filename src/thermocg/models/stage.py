"""The train stage: reference data -> baselines and targets (the targets stage, run
here when it is not up to date) -> one saved force field per variant.

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
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from thermocg.config import Config
from thermocg.errors import ConfigError, DataFormatError
from thermocg.io.h5md import read_h5md
from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
from thermocg.models.training import TrainingData, TrainSettings, pick_device, train_heads
from thermocg.reference.sampler import temperature_label
from thermocg.stagedir import StageDir, atomic_path
from thermocg.targets.stage import run_targets, targets_dir

log = logging.getLogger(__name__)

STAGE = "train"
ORDER = {"fm": 0, "fm-each": 0, "em": 1, "trf1": 1, "trf2": 2, "trf-multi": 2}


def train_dir(config: Config) -> Path:
    return config.run_dir / STAGE


def network_settings(config: Config) -> NetworkSettings:
    t = config.train
    return NetworkSettings(cutoff_A=t.cutoff_A, dist_soft_min_A=t.dist_soft_min_A,
                           dist_soft_max_A=t.dist_soft_max_A, n_features=t.n_features,
                           n_sensitivities=t.n_sensitivities, n_interaction_layers=t.n_interaction_layers,
                           n_atom_layers=t.n_atom_layers, shared=t.shared_representation,
                           interaction=t.interaction)


def save_model(path: Path, model: ThermalForceField, extra: dict) -> None:
    """Weights and metadata in one file (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        torch.save({"format": "thermocg-model-1", "state_dict": model.state_dict(),
                    "metadata": {**model.metadata(), **extra}}, tmp)


def run_train(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Run the targets stage if it is not up to date, then train every configured variant
    (skipping those already saved for this config)."""
    t = config.train
    for temp in (t.T0_K, *t.training_temperatures_K):
        if temp not in config.reference.temperatures_K:
            raise ConfigError(f"train temperature {temp:g} K (T0_K or training_temperatures_K) is not one of "
                              f"reference.temperatures_K {list(config.reference.temperatures_K)}")
    # the baselines and targets first (up to date: nothing to do), so that one command goes
    # from reference data to trained models
    run_targets(config, force=force, show_progress=show_progress)
    src_dir = targets_dir(config)
    stage = StageDir(train_dir(config), STAGE, config.section_hash("reference", "targets", "train"),
                     "[reference]/[targets]/[train]")
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest

    device = pick_device(config.run.device)
    outputs, summary = {}, {}
    for name, order, t0, temps in _jobs(config):
        out = stage.path / f"{name}.pt"
        if out.exists():
            outputs[name], summary[name] = [out.name], "up to date"
            continue
        data, sources = training_data(src_dir, temps, order, em=t.em_energy if name == "em" else None,
                                      frames=training_frames(config))
        log.info("train %s: order %d, T0 = %g K, training temperatures %s, %d frames (%s)", name, order, t0,
                 list(temps), len(data.positions), device)
        model, histories = fit_variant(config, name, order, t0, data, device, checkpoint_dir=stage.path,
                                       show_progress=show_progress)
        history = histories[name]
        save_model(out, model, {"variant": name, "training_temperatures_K": list(temps), "source_files": sources,
                                "config": config_json,
                                "history": {k: history[k] for k in ("train", "valid", "best_epoch", "best_valid")}})
        for phase in histories:
            (stage.path / f".{phase}.ckpt").unlink(missing_ok=True)
        outputs[name] = [out.name]
        summary[name] = {"best_valid_loss": history["best_valid"], "valid_loss_before": history.get("valid_before"),
                         "epochs": len(history["valid"]), "best_epoch": history["best_epoch"]}
        if name == "em":
            u = histories[f"{name}-U"]
            summary[name]["energy_head"] = {"best_valid_loss": u["best_valid"], "epochs": len(u["valid"]),
                                            "valid_loss_before": u.get("valid_before")}
    return stage.write_manifest(True, config_json, outputs, summary)


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


def _jobs(config: Config) -> list[tuple[str, int, float, tuple[float, ...]]]:
    """(file name, order, T0 of the model, training temperatures) for every model to train."""
    t = config.train
    jobs = []
    for variant in t.variants:
        if variant == "fm-each":
            jobs += [(f"fm-each-{temperature_label(temp)}", ORDER[variant], temp, (temp,))
                     for temp in config.reference.temperatures_K]
        elif variant == "trf-multi":
            jobs.append((variant, ORDER[variant], t.T0_K, t.training_temperatures_K or (t.T0_K,)))
        else:
            jobs.append((variant, ORDER[variant], t.T0_K, (t.T0_K,)))
    return jobs


def training_frames(config: Config) -> slice:
    """The frames of every temperature that training sees (the rest are ``test_frames``)."""
    return slice(0, config.reference.n_frames - config.train.test_frames)


def held_out_frames(config: Config) -> slice:
    """The held-out frames of every temperature (empty when ``[train] test_frames = 0``)."""
    return slice(config.reference.n_frames - config.train.test_frames, config.reference.n_frames)


def training_data(src_dir: Path, temps, order: int, em: str | None = None,
                  frames: slice = slice(None)) -> tuple[TrainingData, list[str]]:
    """Frames (``frames`` of each file) of the targets files at ``temps``, each with its
    beta, targets up to ``order``.

    ``em`` ("total" or "per-molecule"): energy matching, whose head 1 is fitted to the
    total potential energies or to the per-molecule energies instead of the t1 targets.
    """
    parts, sources = [], []
    for temp in temps:
        path = src_dir / f"{temperature_label(temp)}.h5md"
        el = read_h5md(path, frames=frames).elements
        parts.append((el, temp))
        sources.append(path.name)
    def cat(key):
        return np.concatenate([el[key] for el, _ in parts])

    keys = {0: "particles/all/force", 1: "thermocg/t1", 2: "thermocg/t2"}
    beta = np.concatenate([np.full(len(el["particles/all/position"]), beta_of(temp)) for el, temp in parts])
    if em is not None:
        energy = cat("observables/potential_energy" if em == "total" else "thermocg/bead_energy")
        return TrainingData(positions=cat("particles/all/position"), box=cat("particles/all/box/edges"),
                            targets={0: cat(keys[0])}, beta=beta, energies={1: energy}), sources
    return TrainingData(positions=cat("particles/all/position"), box=cat("particles/all/box/edges"),
                        targets={k: cat(keys[k]) for k in range(order + 1)}, beta=beta), sources


class CGForceField:
    """A trained CG force field loaded from a file: numpy in, numpy out.

    ``energy(R, box, T)`` (kcal/mol) and ``forces(R, box, T)`` (kcal/(mol Å)) for
    bead positions R (N, 3) or (B, N, 3) in Å, orthorhombic box edges (3,) or
    (B, 3) in Å, temperature T in kelvin. ``metadata`` carries units, beta0 and
    T0, order, training temperatures, network settings, prior and the config.
    """

    def __init__(self, model: ThermalForceField, metadata: dict):
        self.model = model
        self.metadata = metadata

    def energy(self, positions, box, temperature_K):
        return self.model.energy_numpy(positions, box, temperature_K)

    def forces(self, positions, box, temperature_K):
        return self.model.forces_numpy(positions, box, temperature_K)


def load_model(path, device: str = "cpu") -> CGForceField:
    """Load a model saved by the train stage (needs thermocg and hippynn, not the training code)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise DataFormatError(f"{path}: not a readable thermocg model ({err})") from err
    if not isinstance(blob, dict) or blob.get("format") != "thermocg-model-1":
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise DataFormatError(f"{path}: not a thermocg model file (expected format thermocg-model-1, found {found})")
    meta = blob["metadata"]
    settings = NetworkSettings(**meta["network"])
    model = ThermalForceField(build_network(settings), RepulsivePrior(**meta["prior"]), meta["beta0_mol_per_kcal"],
                              order=meta["order"], settings=settings, form=meta.get("form", "beta"))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return CGForceField(model.to(device), meta)


def model_files(config: Config) -> dict[str, Path]:
    """The saved models of a finished train stage, by file name (fm-each has one per temperature)."""
    return {name: train_dir(config) / f"{name}.pt" for name, *_ in _jobs(config)}
