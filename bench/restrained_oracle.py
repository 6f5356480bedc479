"""Regression against restrained targets at equal MD cost, on the exact pairwise oracle (issue 15).

The oracle of THEORY.md §5 (64 beads, a hidden two-state variable per pair) has exact F, F1,
F2 at every configuration, and restrained sampling on it is exact: beads fixed, hidden states
drawn from their conditional law. Each method gets the same budget in picoseconds of MD, with
water's costs: a regression frame costs ``--frame-ps`` (1 ps: frames 1 ps apart, as in the
study); a restrained configuration costs its equilibration plus K samples ``--interval-fs``
apart, correlated at fixed R like water's local energy (integrated time ``--tau-fs``, 50 fs
measured by bench/restrained_targets.py). Both target sets are then fitted by the same pair
splines (:func:`thermocg.targets.baselines.fit_force_and_energy`: the oracle's F, F1, F2 are
pairwise, so the model class holds them exactly and the error is the targets' noise), and the
fits are scored against the exact values on held-out configurations: relative RMS error of
order 0, 1, 2.

Regression targets are the targets stage's own (:func:`thermocg.targets.stage.compute_targets`:
pair-spline baselines cross-fitted over the frames, local radius 6 Å >= the pair cutoff).

    python bench/restrained_oracle.py                      # ~5 min on 2 cores
    python bench/restrained_oracle.py --budgets-ps 50,100,200 --repeats 3

Prints a table; writes ``--out`` (JSON). Record it in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import numpy as np

from thermocg.config import config_from_dict
from thermocg.mapping import CGFrames
from thermocg.targets.baselines import PairBasis, fit_force_and_energy, pair_features
from thermocg.targets.local import neighbour_matrix
from thermocg.targets.oracle import PairTwoStateOracle
from thermocg.targets.restrained import conditional_moments
from thermocg.targets.stage import compute_targets

ORACLE = PairTwoStateOracle(e0=3.0, g=5.0, a=0.5)  # strong temperature dependence (bench/oracle_heads.py)
BOX = np.full(3, 12.0)
BETA = 1.0
N_BEADS = 64
R_E = 6.0  # >= the oracle's pair cutoff (5 Å): local targets are exact in the mean
BASIS = PairBasis(cutoff_A=5.5, n_basis=20)


def configurations(n, rng):
    return ORACLE.sample_frames(n, N_BEADS, BOX, BETA, rng, equilibration_sweeps=30, sweeps_between=3)


def spline_fit(positions, targets):
    """Pair-spline fit of a per-bead vector target over configurations; returns its coefficients."""
    dummy = np.zeros(positions.shape[:2])
    _, _, fit = fit_force_and_energy(positions, np.repeat(BOX[None], len(positions), 0), targets, dummy, BASIS,
                                     folds=2, ridge=1e-8)
    return fit.force_coef


def rel_error(coef, test_x, exact):
    pred = np.stack([pair_features(x, BOX, BASIS)[0] @ coef for x in test_x])
    return float(np.sqrt(np.mean((pred - exact) ** 2) / np.mean(exact**2)))


def regression(n_frames, rng, config):
    """The targets stage's regression targets from n_frames frames, one hidden draw each."""
    x = configurations(n_frames, rng)
    draws = [ORACLE.sample_hidden(xi, BOX, BETA, rng) for xi in x]
    f = np.stack([d[0] for d in draws])
    u = np.stack([d[1] for d in draws])
    cg = CGFrames(positions=x, forces=f, box=np.repeat(BOX[None], n_frames, 0), bead_masses=np.ones(N_BEADS),
                  bead_energy=u, potential_energy=u.sum(axis=1), temperature_K=1.0 / (BETA * 0.0019872041),
                  step=np.arange(n_frames))
    res = compute_targets(cg, config)
    return x, {0: f, 1: res["local"].t1, 2: res["local"].t2}


def restrained(n_configs, k, refresh, rng, blocks=10):
    """Per-configuration moments from K correlated restrained samples at each of n_configs."""
    x = configurations(n_configs, rng)
    out = {0: [], 1: [], 2: []}
    for xi in x:
        f, u_bead = ORACLE.sample_hidden_chain(xi, BOX, BETA, k, rng, refresh=refresh)
        u = (neighbour_matrix(xi, BOX, R_E) @ u_bead.T).T
        m = conditional_moments(f, u, blocks=min(blocks, k // 3))
        out[0].append(m.F)
        out[1].append(m.F1)
        out[2].append(m.F2)
    return x, {o: np.stack(v) for o, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budgets-ps", default="25,50,100,200")
    ap.add_argument("--frame-ps", type=float, default=1.0, help="MD cost of one regression frame")
    ap.add_argument("--interval-fs", type=float, default=10.0)
    ap.add_argument("--tau-fs", type=float, default=50.0, help="correlation time of u_loc at fixed R")
    ap.add_argument("--plans", default="0.2:100,1.0:400",
                    help="restrained plans, equilibration_ps:samples, comma-separated")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--test", type=int, default=20, help="held-out configurations")
    ap.add_argument("--out", default="bench/results/restrained_oracle.json")
    args = ap.parse_args()

    from thermocg.stagedir import atomic_write_text

    config = config_from_dict({"reference": {"n_molecules": N_BEADS, "density_g_cm3": 0.5, "cutoff_A": 6.0},
                               "targets": {"r_e_A": R_E, "baseline_cutoff_A": 5.5, "baseline_n_basis": 20,
                                           "cv_folds": 5},
                               "train": {"cutoff_A": 5.0, "dist_soft_max_A": 4.5},
                               "evaluate": {"rdf_r_max_A": 5.0, "adf_r_cut_A": 3.4}})
    # the refresh probability whose integrated correlation time (2 - q)/q samples is tau
    tau_samples = args.tau_fs / args.interval_fs
    refresh = 2.0 / (1.0 + 2.0 * tau_samples)
    rng = np.random.default_rng(15)
    test_x = configurations(args.test, rng)
    exact = [ORACLE.exact_frames(test_x, BOX, BETA)[k] for k in ("F", "F1", "F2")]
    plans = [tuple(float(v) for v in p.split(":")) for p in args.plans.split(",")]
    rows = []
    for budget in (float(b) for b in args.budgets_ps.split(",")):
        methods = [("regression", None)] + [(f"restrained {eq:g} ps + {int(k)} x {args.interval_fs:g} fs", (eq, int(k)))
                                            for eq, k in plans]
        for name, plan in methods:
            errs = []
            for rep in range(args.repeats):
                r = np.random.default_rng([15, int(budget), rep, 0 if plan is None else int(plan[1])])
                if plan is None:
                    n = int(budget / args.frame_ps)
                    x, t = regression(n, r, config)
                else:
                    eq, k = plan
                    n = int(budget / (eq + k * args.interval_fs / 1000))
                    if n < 2:
                        errs = None
                        break
                    x, t = restrained(n, k, refresh, r)
                errs.append([rel_error(spline_fit(x, t[o]), test_x, exact[o]) for o in range(3)])
            if errs is None:
                continue
            e = np.array(errs)
            rows.append({"budget_ps": budget, "method": name, "configurations": n,
                         "rel_error": e.mean(axis=0).tolist(), "rel_error_spread": e.std(axis=0).tolist()})
            print(f"{budget:>6g} ps  {name:<34}{n:>6} configs   order 0 {e[:, 0].mean():.3f}   "
                  f"order 1 {e[:, 1].mean():.3f}   order 2 {e[:, 2].mean():.3f}", flush=True)
    out = {"machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
           "args": vars(args), "refresh": refresh, "rows": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"\nrelative RMS error of the spline fit against the exact values on {args.test} held-out "
          f"configurations, mean of {args.repeats} repeats; wrote {args.out}")


if __name__ == "__main__":
    main()
