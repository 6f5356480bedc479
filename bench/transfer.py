"""Temperature transfer of the trained variants: force errors on held-out frames at every
reference temperature, for models trained at T0 (and trf-multi at its training set).

What it measures (issue 5): which temperature form transfers better (beta expansion vs
energy/entropy), shared vs separate representations for the W0, W1, W2 heads, and
fm / em / trf2 / trf-multi against fm-each (the structural bound at each temperature).

The metric is the mean squared error of the model force against the mapped force on
frames no model trained on (the last ``--held-out`` frames of every temperature).
The mapped force is the mean force plus noise that does not depend on the model, so
``MSE = |F_model - F_mean|^2 + noise``: differences between models at one temperature
are differences of their mean-force errors, and ``excess`` (MSE minus fm-each's MSE at
that temperature) is near zero for a model as good as one trained there.

    python bench/transfer.py bench/configs/transfer.toml            # every model: 1-1.5 h on 2 cores
    python bench/transfer.py bench/configs/transfer.toml --models fm,trf2 --epochs 20

Needs the reference stage of the config (``thermocg reference CONFIG``); runs the targets
stage itself. Each trained model and its errors are kept in ``<run>/transfer/`` (written
as they finish; a re-run skips the models already there). Prints a table; record it in
bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from thermocg.config import load_config
from thermocg.io.h5md import read_h5md
from thermocg.models.prior import RepulsivePrior
from thermocg.models.stage import network_settings, save_model
from thermocg.models.thermal import ThermalForceField, build_network
from thermocg.models.training import TrainingData, TrainSettings, train_heads
from thermocg.reference.sampler import temperature_label
from thermocg.stagedir import atomic_write_text
from thermocg.targets.stage import run_targets, targets_dir
from thermocg.units import beta_of

#: name -> (order, form, training temperatures (None: T0), energy target, shared representation)
MODELS = {
    "fm": (0, "beta", None, None, True),
    "fm-each": (0, "beta", "each", None, True),
    "em-total": (1, "em", None, "total", False),  # U on its own network, as `thermocg train` does
    "em-per-molecule": (1, "em", None, "per-molecule", False),
    "em-total-shared": (1, "em", None, "total", True),
    "trf1": (1, "beta", None, None, True),
    "trf2": (2, "beta", None, None, True),
    "trf2-energy-entropy": (2, "energy-entropy", None, None, True),
    "trf2-separate": (2, "beta", None, None, False),
    "trf-multi": (2, "beta", "multi", None, True),
}


def load_frames(config, temps):
    out = {}
    for temp in temps:
        el = read_h5md(targets_dir(config) / f"{temperature_label(temp)}.h5md").elements
        out[temp] = {"x": el["particles/all/position"], "box": el["particles/all/box/edges"],
                     0: el["particles/all/force"], 1: el["thermocg/t1"], 2: el["thermocg/t2"],
                     "total": el["observables/potential_energy"], "per-molecule": el["thermocg/bead_energy"]}
    return out


def training_data(frames, temps, order, energy, n_train):
    def cat(key):
        return np.concatenate([frames[t][key][:n_train] for t in temps])
    beta = np.concatenate([np.full(n_train, beta_of(t)) for t in temps])
    if energy is not None:
        return TrainingData(cat("x"), cat("box"), {0: cat(0)}, beta, energies={1: cat(energy)})
    return TrainingData(cat("x"), cat("box"), {k: cat(k) for k in range(order + 1)}, beta)


def held_out_mse(model, frames, temp, n_train):
    f = frames[temp]
    pred = np.concatenate([model.forces_numpy(f["x"][k:k + 4], f["box"][k:k + 4], temp)
                           for k in range(n_train, len(f["x"]), 4)])
    return float(np.mean((pred - f[0][n_train:]) ** 2))


def train_one(config, frames, spec, t_model, temps, n_train, epochs):
    """Train one model (order, form, energy target, representation from ``spec``) at
    T0 = ``t_model`` on the first ``n_train`` frames of each of ``temps``."""
    order, form, _, energy, shared = spec
    t = config.train
    data = training_data(frames, temps, order, energy, n_train)
    torch.manual_seed(config.run.seed)
    net_settings = replace(network_settings(config), shared=shared)
    prior = RepulsivePrior.fit(data.positions, data.box, data.targets[0], width_A=t.prior_width_A, p=t.prior_p)
    model = ThermalForceField(build_network(net_settings), prior, beta_of(t_model), order=order,
                              settings=net_settings, form=form)
    settings = TrainSettings(max_epochs=epochs, batch_frames=t.batch_frames, learning_rate=t.learning_rate,
                             lr_patience=t.lr_patience, early_stop_patience=t.early_stop_patience,
                             valid_fraction=t.valid_fraction, weights=t.loss_weights, seed=config.run.seed)
    start = time.perf_counter()
    history = train_heads(model, data, settings, show_progress=True)
    return model, {"train_s": time.perf_counter() - start, "epochs": len(history["valid"]),
                   "best_valid": history["best_valid"], "training_temperatures_K": list(temps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--epochs", type=int, default=None, help="default: [train] max_epochs")
    ap.add_argument("--held-out", type=int, default=30, help="last frames of every temperature, never trained on")
    ap.add_argument("--multi", default="250,400", help="trf-multi training temperatures, K")
    args = ap.parse_args()

    config = load_config(args.config)
    torch.set_num_threads(os.cpu_count() or 1)
    run_targets(config)
    temps = list(config.reference.temperatures_K)
    t0 = config.train.T0_K
    frames = load_frames(config, temps)
    n_train = len(frames[t0]["x"]) - args.held_out
    epochs = args.epochs or config.train.max_epochs
    out_dir = config.run_dir / "transfer"
    out_dir.mkdir(exist_ok=True)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    multi = [float(x) for x in args.multi.split(",")]

    for name in args.models.split(","):
        spec = MODELS[name]
        if spec[2] == "each":
            jobs = [(f"fm-each-{temperature_label(t)}", t, [t]) for t in temps]
        else:
            jobs = [(name, t0, multi if spec[2] == "multi" else [t0])]
        for job, t_model, job_temps in jobs:
            key = f"{job}@{epochs}"
            if key in results:
                continue
            print(f"-- {job}: T0 {t_model:g} K, trained at {job_temps} K", flush=True)
            model, info = train_one(config, frames, spec, t_model, job_temps, n_train, epochs)
            save_model(out_dir / f"{job}.pt", model, {"variant": job, **info})
            info["mse"] = {str(t): held_out_mse(model, frames, t, n_train) for t in temps}
            info["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            results[key] = info
            atomic_write_text(results_path, json.dumps(results, indent=1))

    # the table: MSE and excess over fm-each at every temperature
    each = {t: results.get(f"fm-each-{temperature_label(t)}@{epochs}", {}).get("mse", {}).get(str(t)) for t in temps}
    print(f"\n{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}; {n_train} training + {args.held_out} held-out frames per temperature, "
          f"{epochs} epochs max, T0 = {t0:g} K")
    print("held-out force MSE, (kcal/mol/Å)^2  [excess over fm-each at that temperature]")
    head = "".join(f"{temperature_label(t):>18}" for t in temps)
    print(f"{'model':<22}{head}{'train s':>10}{'epochs':>8}")
    for key, info in results.items():
        name, ep = key.rsplit("@", 1)
        if int(ep) != epochs:
            continue
        cells = ""
        for t in temps:
            mse = info["mse"][str(t)]
            ex = f"[{mse - each[t]:+.2f}]" if each.get(t) is not None else ""
            cells += f"{mse:>10.2f}{ex:>8}"
        print(f"{name:<22}{cells}{info['train_s']:>10.0f}{info['epochs']:>8}")


if __name__ == "__main__":
    main()
