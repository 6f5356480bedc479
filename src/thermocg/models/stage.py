"""The train stage: targets at T0 -> one saved force field per variant.

Variants (DESIGN.md "Models"): ``fm`` (order 0: prior + W0 fitted to the mapped
forces at T0), ``trf1`` (plus W1 on the order-1 targets), ``trf2`` (plus W2 on the
centred order-2 targets). The targets and their baselines come from the targets
stage (pair-spline baselines for now). Outputs in ``<run.directory>/train/``::

    manifest.json          config hash, outputs, per-variant losses
    fm.pt, trf2.pt, ...    a saved model each (weights + metadata), loadable with
                           ``thermocg.load_model`` without the training code
    .<variant>.ckpt        training checkpoint while a variant trains (resume)

Not here yet (issue 5): fm-each, em, trf-multi, the energy/entropy form,
HIP-NN-TS baselines for the targets, and the ASE calculator.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import torch

from thermocg.config import Config
from thermocg.errors import ConfigError, DataFormatError
from thermocg.io.h5md import read_h5md
from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
from thermocg.models.training import TrainingData, TrainSettings, train_heads
from thermocg.reference.sampler import temperature_label
from thermocg.stagedir import StageDir
from thermocg.targets.stage import targets_dir

log = logging.getLogger(__name__)

STAGE = "train"
ORDER = {"fm": 0, "trf1": 1, "trf2": 2}


def train_dir(config: Config) -> Path:
    return config.run_dir / STAGE


def network_settings(config: Config) -> NetworkSettings:
    t = config.train
    return NetworkSettings(cutoff_A=t.cutoff_A, dist_soft_min_A=t.dist_soft_min_A,
                           dist_soft_max_A=t.dist_soft_max_A, n_features=t.n_features,
                           n_sensitivities=t.n_sensitivities, n_interaction_layers=t.n_interaction_layers,
                           n_atom_layers=t.n_atom_layers)


def _device(config: Config) -> torch.device:
    if config.run.device == "cuda" or (config.run.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device = 'cuda' but torch sees no GPU; use device = 'cpu'")
        return torch.device("cuda")
    return torch.device("cpu")


def save_model(path: Path, model: ThermalForceField, extra: dict) -> None:
    """Weights and metadata in one file (temporary name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": "thermocg-model-1", "state_dict": model.state_dict(),
                "metadata": {**model.metadata(), **extra}}, tmp)
    os.replace(tmp, path)


def run_train(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Train every configured variant at T0 (skipping those already saved for this config)."""
    t = config.train
    if t.T0_K not in config.reference.temperatures_K:
        raise ConfigError(f"train.T0_K = {t.T0_K:g} is not one of reference.temperatures_K "
                          f"{list(config.reference.temperatures_K)}")
    src_dir = targets_dir(config)
    src_stage = StageDir(src_dir, "targets", config.section_hash("reference", "targets"), "[targets]")
    src_manifest = src_stage.read_manifest()
    if src_manifest is None or not src_manifest.get("complete") or \
            src_manifest.get("config_hash") != src_stage.config_hash:
        raise DataFormatError(f"{src_dir}: no complete targets stage for this config; run `thermocg targets` first")
    stage = StageDir(train_dir(config), STAGE, config.section_hash("reference", "targets", "train"),
                     "[reference]/[targets]/[train]")
    manifest = stage.prepare(force)
    if manifest is not None:
        return manifest
    config_json = json.loads(config.model_dump_json(exclude={"source"}))
    stage.write_manifest(False, config_json)

    source = src_dir / f"{temperature_label(t.T0_K)}.h5md"
    d = read_h5md(source)
    el = d.elements
    all_targets = {0: el["particles/all/force"], 1: el["thermocg/t1"], 2: el["thermocg/t2"]}
    positions, box = el["particles/all/position"], el["particles/all/box/edges"]
    device = _device(config)
    outputs, summary = {}, {}
    for variant in t.variants:
        order = ORDER[variant]
        out = stage.path / f"{variant}.pt"
        if out.exists():
            outputs[variant], summary[variant] = [out.name], "up to date"
            continue
        torch.manual_seed(config.run.seed)
        prior = RepulsivePrior.fit(positions, box, all_targets[0], width_A=t.prior_width_A, p=t.prior_p)
        model = ThermalForceField(build_network(network_settings(config)), prior, beta_of(t.T0_K), order=order,
                                  settings=network_settings(config)).to(device)
        data = TrainingData(positions=positions, box=box, targets={k: all_targets[k] for k in range(order + 1)})
        settings = TrainSettings(max_epochs=t.max_epochs, batch_frames=t.batch_frames,
                                 learning_rate=t.learning_rate, lr_patience=t.lr_patience,
                                 early_stop_patience=t.early_stop_patience, valid_fraction=t.valid_fraction,
                                 weights=t.loss_weights, seed=config.run.seed)
        log.info("train %s: order %d at T0 = %g K on %d frames (%s)", variant, order, t.T0_K, len(positions), device)
        history = train_heads(model, data, settings, checkpoint=stage.path / f".{variant}.ckpt",
                              show_progress=show_progress)
        save_model(out, model, {"variant": variant, "training_temperatures_K": [t.T0_K],
                                "source_file": source.name, "config": config_json,
                                "history": {k: history[k] for k in ("train", "valid", "best_epoch", "best_valid")}})
        (stage.path / f".{variant}.ckpt").unlink(missing_ok=True)
        outputs[variant] = [out.name]
        summary[variant] = {"best_valid_loss": history["best_valid"], "valid_loss_before": history.get("valid_before"),
                            "epochs": len(history["valid"]), "best_epoch": history["best_epoch"]}
    return stage.write_manifest(True, config_json, outputs, summary)


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
                              order=meta["order"], settings=settings)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return CGForceField(model.to(device), meta)


def model_files(config: Config) -> dict[str, Path]:
    """The saved models of a finished train stage, by variant."""
    return {v: train_dir(config) / f"{v}.pt" for v in config.train.variants}
