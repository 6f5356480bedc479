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
that temperature) is near zero for a model as good as one trained there. Every model is
trained by ``thermocg.models.stage.fit_variant``, as ``thermocg train`` trains it, with
the [train] settings of the config (plus the overrides named in ``MODELS``).

    python bench/transfer.py bench/configs/transfer.toml            # every model: 1-1.5 h on 2 cores
    python bench/transfer.py bench/configs/transfer.toml --models fm,trf2 --epochs 20
    python bench/transfer.py bench/configs/transfer.toml --models trf1 --targets-baseline hipnn

``--targets-baseline hipnn`` trains the thermal heads on targets whose baselines (F0, U_J,
v) are HIP-NN-TS networks instead of the config's pair splines: does a better baseline
remove the -e d bias of the order-1 target (THEORY.md §3)? Those targets are computed
here from the training frames only (cross-fitted over them, ``--baseline-folds`` folds of
``--baseline-epochs``), cached in ``<run>/transfer/targets-hipnn-<T>.npz``, and printed
with the baselines' R² next to the splines' on the same frames; result keys get ``+hipnn``.

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

import numpy as np
import torch

from thermocg.config import load_config
from thermocg import pipeline
from thermocg.device import pick_device
from thermocg.evaluate.stage import response_scale
from thermocg.labels import temperature_label
from thermocg.targets.hipnn import HipnnBaseline
from thermocg.models.saved import load_model, save_model
from thermocg.models.stage import ORDER, fit_variant, training_data
from thermocg.models.training import TrainingData
from thermocg.stagedir import atomic_path, atomic_write_text
from thermocg.targets.stage import compute_targets
from thermocg.units import beta_of

#: name -> (variant of `thermocg train`, training temperatures (None: T0), [train] overrides)
MODELS = {
    "fm": ("fm", None, {}),
    "fm-each": ("fm", "each", {}),
    "em-total": ("em", None, {"em_energy": "total"}),
    "em-per-molecule": ("em", None, {"em_energy": "per-molecule"}),
    "trf1": ("trf1", None, {}),
    "trf2": ("trf2", None, {}),
    "trf2-energy-entropy": ("trf2", None, {"form": "energy-entropy"}),
    "trf-multi-separate": ("trf-multi", "multi", {"shared_representation": False}),
    "trf-multi": ("trf-multi", "multi", {}),
    # trf-multi's control: the same frames (all --multi temperatures) pooled into one
    # force-matched model without temperature dependence
    "fm-multi": ("fm", "multi", {}),
    # network choices, on force matching (accuracy vs cost at T0)
    "fm-cutoff5": ("fm", None, {"cutoff_A": 5.0, "dist_soft_max_A": 4.5}),
    "fm-cutoff7": ("fm", None, {"cutoff_A": 7.0, "dist_soft_max_A": 6.5}),
    "fm-sensitivities6": ("fm", None, {"n_sensitivities": 6}),
    "fm-sensitivities20": ("fm", None, {"n_sensitivities": 20}),
    "fm-features16": ("fm", None, {"n_features": 16}),
    "fm-features64": ("fm", None, {"n_features": 64}),
    "fm-interactions2": ("fm", None, {"n_interaction_layers": 2}),
    "fm-vec": ("fm", None, {"interaction": "vec"}),
    "fm-scalar": ("fm", None, {"interaction": "scalar"}),
}


def held_out_mse(model, targets, temp, n_train):
    data, _ = training_data(targets, [temp], 0, frames=slice(n_train, None))
    pred = np.concatenate([model.forces_numpy(data.positions[k:k + 4], data.box[k:k + 4], temp)
                           for k in range(0, len(data.positions), 4)])
    return float(np.mean((pred - data.targets[0]) ** 2))


def response_at(model, targets, temp, t0, n_train):
    """a* and <dF^2> of ``model`` (loaded) on the held-out frames at ``temp``
    (:func:`thermocg.evaluate.stage.response_scale`)."""
    data, _ = training_data(targets, [temp], 0, frames=slice(n_train, None))
    return response_scale(model, data.positions, data.box, data.targets[0], temp, t0)


def hipnn_targets(config, temp, n_train, folds, epochs, cache_dir):
    """Order 0-2 targets at ``temp`` from HIP-NN-TS baselines, cross-fitted over the first
    ``n_train`` frames only (the held-out frames stay unseen), with the baselines' R² and
    the order-1 signal-to-noise for these and for the spline baselines on the same frames."""
    cache = cache_dir / f"targets-hipnn-{temperature_label(temp)}-{n_train}-{folds}x{epochs}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files if k != "summary"}, json.loads(str(z["summary"]))
    cg = pipeline.read(config, "reference").cg_frames(temp)
    cg = replace(cg, **{k: getattr(cg, k)[:n_train] for k in
                         ("positions", "forces", "box", "bead_energy", "potential_energy", "step")})
    hip = config.model_copy(update={"targets": config.targets.model_copy(update={
        "baseline": "hipnn", "cv_folds": folds, "baseline_max_epochs": epochs})})
    start = time.perf_counter()
    res = compute_targets(cg, hip, HipnnBaseline.from_config(hip, temp, show_progress=True))
    spline = compute_targets(cg, config)["summary"]
    keep = ("force_baseline_r2", "energy_baseline_r2", "order1", "order2")
    summary = {"hipnn": {k: res["summary"][k] for k in keep}, "pair-spline": {k: spline[k] for k in keep},
               "baseline_s": time.perf_counter() - start}
    arrays = {"positions": cg.positions, "box": cg.box, "t0": cg.forces, "t1": res["local"].t1,
              "t2": res["local"].t2}
    with atomic_path(cache, ".npz") as tmp:
        np.savez(tmp, summary=json.dumps(summary), **arrays)
    return arrays, summary


def train_one(config, variant, t_model, temps, n_train, data=None):
    """Train one model exactly as `thermocg train` does (its [train] settings in ``config``) at
    T0 = ``t_model`` on the first ``n_train`` frames of each of ``temps`` (or on ``data``)."""
    order = ORDER[variant]
    em = config.train.em_energy if variant == "em" else None
    if data is None:
        data, _ = training_data(pipeline.read(config, "targets"), temps, order, em=em, frames=slice(0, n_train))
    start = time.perf_counter()
    model, histories = fit_variant(config, variant, order, t_model, data, pick_device(config.run.device))
    history = histories[list(histories)[-1]]  # the last phase: the thermal heads' or U's, else W0's
    return model, {"train_s": time.perf_counter() - start, "epochs": sum(len(h["valid"]) for h in histories.values()),
                   "best_valid": history["best_valid"], "training_temperatures_K": list(temps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--epochs", type=int, default=None, help="default: [train] max_epochs")
    ap.add_argument("--held-out", type=int, default=30, help="last frames of every temperature, never trained on")
    ap.add_argument("--multi", default="250,400", help="trf-multi training temperatures, K")
    ap.add_argument("--targets-baseline", choices=("config", "hipnn"), default="config",
                    help="baselines of the thermal targets: the config's, or HIP-NN-TS networks")
    ap.add_argument("--baseline-folds", type=int, default=3)
    ap.add_argument("--baseline-epochs", type=int, default=40)
    args = ap.parse_args()

    config = load_config(args.config)
    torch.set_num_threads(os.cpu_count() or 1)
    pipeline.stage("targets").run(config)
    temps = list(config.reference.temperatures_K)
    t0 = config.train.T0_K
    targets = pipeline.read(config, "targets")
    n_train = config.reference.n_frames - args.held_out
    epochs = args.epochs or config.train.max_epochs
    out_dir = config.run_dir / "transfer"
    out_dir.mkdir(exist_ok=True)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    multi = [float(x) for x in args.multi.split(",")]

    for name in args.models.split(","):
        variant, which, overrides = MODELS[name]
        study = config.model_copy(update={"train": config.train.model_copy(
            update={"max_epochs": epochs, **overrides})})
        if which == "each":
            jobs = [(f"fm-each-{temperature_label(t)}", t, [t]) for t in temps]
        else:
            jobs = [(name, t0, multi if which == "multi" else [t0])]
        for job, t_model, job_temps in jobs:
            data = None
            if args.targets_baseline == "hipnn":
                if variant not in ("trf1", "trf2", "trf-multi"):
                    raise SystemExit(f"--targets-baseline hipnn: {name} does not use the thermal targets")
                job += "+hipnn"
                parts = []
                for t in job_temps:
                    arrays, summary = hipnn_targets(config, t, n_train, args.baseline_folds, args.baseline_epochs,
                                                    out_dir)
                    print(f"   targets at {t:g} K:", json.dumps(summary), flush=True)
                    parts.append((arrays, t))
                data = TrainingData(positions=np.concatenate([a["positions"] for a, _ in parts]),
                                    box=np.concatenate([a["box"] for a, _ in parts]),
                                    targets={k: np.concatenate([a[f"t{k}"] for a, _ in parts])
                                             for k in range(ORDER[variant] + 1)},
                                    beta=np.concatenate([np.full(len(a["box"]), beta_of(t)) for a, t in parts]))
            key = f"{job}@{epochs}"
            if key in results:
                continue
            print(f"-- {job}: T0 {t_model:g} K, trained at {job_temps} K", flush=True)
            model, info = train_one(study, variant, t_model, job_temps, n_train, data)
            save_model(out_dir / f"{job}.pt", model, {"variant": job, **info})
            info["mse"] = {str(t): held_out_mse(model, targets, t, n_train) for t in temps}
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

    # the response of the temperature-dependent models, at the temperatures they were not trained at
    print("\nresponse scale a* [<dF^2>] of dF = F(T) - F(T0) on the held-out frames (mixes in W0's error)")
    print(f"{'model':<22}" + "".join(f"{temperature_label(t):>18}" for t in temps if t != t0))
    for key, info in results.items():
        name, ep = key.rsplit("@", 1)
        if int(ep) != epochs or name.startswith("fm") or not (out_dir / f"{name}.pt").exists():
            continue
        model = load_model(out_dir / f"{name}.pt")
        cells = ""
        for t in temps:
            if t != t0:
                a, msq = response_at(model, targets, t, t0, n_train)
                cells += f"{a:>10.2f}{f'[{msq:.2f}]':>8}"
        print(f"{name:<22}{cells}")


if __name__ == "__main__":
    main()
