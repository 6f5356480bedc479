"""Signal-to-noise of the thermal-response targets: on the exact 3-D oracle and on water.

Oracle: 64 beads of the pairwise two-state liquid (thermocg.targets.oracle), MC
configurations, exact hidden states and exact baselines; signal = RMS of the
exact F1 (F2) over beads and components, noise = RMS of (target - exact).
Water: the summaries the targets stage wrote (cross-fitted estimate, pair-spline
baselines) for each temperature of a run directory.

"frames for 10 %" = (noise/signal)^2 / 0.1^2 / (3 N): frames of N beads needed to
pin the mean to 10 % if every bead component were an independent sample
(optimistic; one frame's samples are correlated).

    python bench/target_noise.py                       # oracle only
    python bench/target_noise.py --run runs/quick      # plus the water targets of a run
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from thermocg.mapping import CGFrames
from thermocg.targets.build import thermal_targets
from thermocg.targets.oracle import PairTwoStateOracle


def oracle_rows(n_configs: int, beta: float, seed: int) -> list[tuple]:
    o = PairTwoStateOracle()
    box = np.full(3, 12.0)
    rng = np.random.default_rng(seed)
    x, _ = o.sample_positions(64, box, beta, rng, sweeps=40)
    pos, f, u, ex = [], [], [], []
    for _ in range(n_configs):
        x, _ = o.sample_positions(64, box, beta, rng, sweeps=3, start=x)
        e = o.exact(x, box, beta, r_e=o.cutoff_A)
        fi, ui = o.sample_hidden(x, box, beta, rng)
        pos.append(x.copy())
        f.append(fi)
        u.append(ui)
        ex.append(e)
    n = len(pos)
    u = np.stack(u)
    cg = CGFrames(positions=np.stack(pos), forces=np.stack(f), box=np.repeat(box[None], n, 0),
                  bead_masses=np.ones(64), bead_energy=u, potential_energy=u.sum(1), temperature_K=0.0,
                  step=np.arange(n))
    stack = {k: np.stack([e[k] for e in ex]) for k in ("F", "U", "v", "F1", "F2")}
    rows = []
    for r_e, label in ((o.cutoff_A, "local r_e = cutoff"), (None, "global")):
        v = stack["v"] if r_e is not None else None
        if r_e is None:  # global: exact variance of the total energy = sum of pair variances
            v_tot = np.stack([np.full(64, _total_var(o, p, box, beta)) for p in pos])
            v = v_tot
        t = thermal_targets(cg, stack["F"], stack["U"], r_e, variance=v)
        for order, target, exact in ((1, t.t1, stack["F1"]), (2, t.t2, stack["F2"])):
            signal = float(np.sqrt(np.mean(exact**2)))
            noise = float(np.sqrt(np.mean((target - exact) ** 2)))
            rows.append((f"oracle, {label}", order, signal, noise, signal / noise,
                         (noise / signal) ** 2 / 0.01 / (3 * 64)))
    return rows


def _total_var(o, x, box, beta):
    _, _, _, r = o.pairs(x, box)
    p = o.p(r, beta)
    return float(np.sum(o.eps(r) ** 2 * p * (1 - p)))


def water_rows(run: Path) -> list[tuple]:
    manifest = json.loads((run / "targets" / "manifest.json").read_text())
    rows = []
    for label, s in manifest["summary"].items():
        for order, key in ((1, "order1"), (2, "order2"), (1, "order1_global")):
            d = s.get(key)
            if d:
                rows.append((f"water {label} ({s['beads']} beads, {'global' if 'global' in key else 'local'} "
                             f"r_e={s['r_e_A']:g})", order, d["signal_rms"], d["noise_rms"], d["snr_per_sample"],
                             d["frames_for_10_percent"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a run directory whose targets stage has finished")
    ap.add_argument("--configs", type=int, default=200, help="oracle configurations")
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = oracle_rows(args.configs, args.beta, args.seed)
    if args.run:
        rows += water_rows(args.run)
    print("| system | order | signal RMS | noise RMS | SNR per sample | frames for 10 % |")
    print("|---|---|---|---|---|---|")
    for name, order, s, n, snr, frames in rows:
        print(f"| {name} | {order} | {s:.4g} | {n:.4g} | {snr:.3g} | {frames:.3g} |")


if __name__ == "__main__":
    main()
