"""Model choices measured on the pairwise 3-D oracle (THEORY.md §5), where F, F^(1), F^(2)
are exact at every configuration.

Part A (no network): which temperature form extrapolates better when its heads are exact:
the beta expansion (a Taylor series in beta) or energy/entropy, W = U - T S - (T - T0)^2/2 C
(a Taylor series in T, matched to the same derivatives at T0).

Part B (networks): trf2 trained on the exact conditional means at beta0 with different
network settings: shared representation vs a network per head, width, interaction layers,
and the two temperature forms. Held-out relative RMS errors of F, F^(1), F^(2) and of the
temperature response F(beta) - F(beta0), and the cost per epoch.

    python bench/oracle_heads.py                 # ~8 minutes on 2 CPU cores
    python bench/oracle_heads.py --epochs 80 --frames 96

Prints two tables; record them in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import numpy as np
import torch

from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, build_network
from thermocg.models.training import TrainingData, TrainSettings, _predictions, train_heads
from thermocg.targets.oracle import PairTwoStateOracle
from thermocg.units import KB

ORACLE = PairTwoStateOracle(e0=3.0, g=5.0, a=0.5)  # the oracle of tests/unit/models/test_oracle_training.py
BOX = np.full(3, 12.0)
BETA0 = 1.0
BETAS = (0.5, 0.6, 0.8, 1.25, 1.5)

BASE = NetworkSettings(cutoff_A=5.5, dist_soft_min_A=1.5, dist_soft_max_A=5.0, n_features=16)
#: name -> (network settings, form); "shared-16": one representation, 16 features, 1 interaction layer
GRID = {
    "shared-16": (BASE, "beta"),
    "separate-16": (replace(BASE, shared=False), "beta"),
    "shared-8": (replace(BASE, n_features=8), "beta"),
    "shared-32": (replace(BASE, n_features=32), "beta"),
    "shared-16-2-interactions": (replace(BASE, n_interaction_layers=2), "beta"),
    "shared-16-energy-entropy": (BASE, "energy-entropy"),
}


def rel(pred, exact):
    return float(np.sqrt(np.mean((pred - exact) ** 2)) / np.sqrt(np.mean(exact**2)))


def part_a(x):
    """Relative error of F(beta) from exact heads: fm, Taylor in beta and Taylor in T, orders 1 and 2."""
    e0 = ORACLE.exact_frames(x, BOX, BETA0)
    f, f1, f2 = e0["F"], e0["F1"], e0["F2"]
    t0 = 1.0 / (KB * BETA0)
    db_dt, d2b_dt2 = -KB * BETA0**2, 2 * KB**2 * BETA0**3
    df_dt, d2f_dt2 = f1 * db_dt, f2 * db_dt**2 + f1 * d2b_dt2
    rows = []
    for beta in BETAS:
        exact = ORACLE.exact_frames(x, BOX, beta)["F"]
        db, dt = beta - BETA0, 1.0 / (KB * beta) - t0
        rows.append((beta, BETA0 / beta, rel(f, exact), rel(f + db * f1, exact),
                     rel(f + db * f1 + db * db / 2 * f2, exact), rel(f + dt * df_dt, exact),
                     rel(f + dt * df_dt + dt * dt / 2 * d2f_dt2, exact)))
    return rows


def part_b(x, n_train, epochs, names):
    e0 = ORACLE.exact_frames(x, BOX, BETA0)
    targets = {0: e0["F"], 1: e0["F1"], 2: e0["F2"]}
    box = np.tile(BOX, (len(x), 1))
    tr, te = slice(0, n_train), slice(n_train, None)
    response_exact = ORACLE.exact_frames(x[te], BOX, 0.6)["F"] - e0["F"][te]
    rows = []
    for name in names:
        settings, form = GRID[name]
        torch.manual_seed(0)
        prior = RepulsivePrior.fit(x[tr], box[tr], targets[0][tr], r_max_A=5.5)
        model = ThermalForceField(build_network(settings), prior, BETA0, order=2, settings=settings, form=form)
        n_params = sum(p.numel() for p in model.parameters() if p.is_floating_point())
        data = TrainingData(x[tr], box[tr], {k: t[tr] for k, t in targets.items()})
        start = time.perf_counter()
        h = train_heads(model, data, TrainSettings(max_epochs=epochs, batch_frames=4, learning_rate=3e-3,
                                                   lr_patience=5), show_progress=False)
        per_epoch = (time.perf_counter() - start) / len(h["valid"])
        species, xt, cell = model._tensors(x[te], BOX)
        pred = {k: v.detach().numpy() for k, v in
                _predictions(model, xt, cell, species, [0, 1, 2], create_graph=False).items()}
        response = model.forces_numpy(x[te], BOX, 1 / (KB * 0.6)) - model.forces_numpy(x[te], BOX, 1 / (KB * BETA0))
        rows.append((name, n_params, per_epoch, rel(pred[0], targets[0][te]), rel(pred[1], targets[1][te]),
                     rel(pred[2], targets[2][te]), rel(response, response_exact)))
        print(f"  {name}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64, help="training + held-out frames of 64 beads")
    ap.add_argument("--held-out", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--only", default=",".join(GRID), help="comma-separated subset of: " + ", ".join(GRID))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    x = ORACLE.sample_frames(args.frames, 64, BOX, BETA0, np.random.default_rng(0))

    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; oracle {ORACLE}, "
          f"beta0 = {BETA0} mol/kcal")
    print("\nA. relative RMS error of F(beta) from exact heads at beta0")
    print(f"{'beta':>6}{'T/T0':>7}{'fm':>9}{'beta-1':>9}{'beta-2':>9}{'T-1':>9}{'T-2':>9}")
    for row in part_a(x):
        print(f"{row[0]:>6.2f}{row[1]:>7.2f}" + "".join(f"{v:>9.4f}" for v in row[2:]))

    print(f"\nB. trf2 trained {args.epochs} epochs on {args.frames - args.held_out} frames of exact targets; "
          f"relative RMS errors on {args.held_out} held-out frames")
    rows = part_b(x, args.frames - args.held_out, args.epochs, args.only.split(","))
    print(f"{'network':<30}{'params':>8}{'s/epoch':>9}{'F':>8}{'F1':>8}{'F2':>8}{'dF(0.6)':>9}")
    for name, n, t, *errs in rows:
        print(f"{name:<30}{n:>8d}{t:>9.2f}" + "".join(f"{v:>8.3f}" for v in errs[:3]) + f"{errs[3]:>9.3f}")


if __name__ == "__main__":
    main()
