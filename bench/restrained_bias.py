"""The springs' bias on water (issue 15): restrained estimates at several stiffnesses, raw and
with the offsets regressed out.

Reads the raw samples that ``bench/restrained_targets.py --save-samples DIR`` keeps (the same
configurations, one run per ``--k``), and for each estimator -- raw, and the offsets of the
beads within 0 (own), 3.5, 5 Å and r_e regressed out
(:func:`thermocg.targets.restrained.conditional_moments` with ``offsets``) -- prints per
stiffness the signal and error of each order, and per pair of stiffnesses the rms difference of
the estimates *beyond their noise*: ``sqrt(max(<(a - b)^2> - <se_a^2 + se_b^2>, 0))`` over the
beads of every configuration. The bias of finite springs falls as 1/k, so an estimator whose
values still move between stiffnesses carries it; one that does not has removed it (within
the noise). There is no exact answer on water: the oracle's test of the same estimators is in
bench/RESULTS.md.

    python bench/restrained_targets.py examples/study-cpu.toml --configs 4 --k 1000 --save-samples runs/bias/samples
    (the same with --k 4000 and --k 250)
    python bench/restrained_bias.py runs/bias/samples --r-e 6.5

Writes ``--out`` (JSON). Record the table in bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import platform
import re
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", help="directory of <T>-k<k>-c<i>.npz from bench/restrained_targets.py")
    ap.add_argument("--r-e", type=float, default=6.5, help="local radius of u_loc, Å")
    ap.add_argument("--radii", default="0,3.5,5", help="regression radii besides r_e, Å")
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--out", default="bench/results/restrained_bias.json")
    args = ap.parse_args()

    from thermocg.stagedir import atomic_write_text
    from thermocg.targets.local import neighbour_matrix
    from thermocg.targets.restrained import conditional_moments

    files = sorted(glob.glob(os.path.join(args.samples, "*-k*-c*.npz")))
    runs: dict[tuple[str, float], dict[int, str]] = {}
    for path in files:
        m = re.match(r"(.+)-k([0-9.eE+]+)-c(\d+)\.npz$", os.path.basename(path))
        if m:
            runs.setdefault((m.group(1), float(m.group(2))), {})[int(m.group(3))] = path
    if not runs:
        raise SystemExit(f"{args.samples}: no <T>-k<k>-c<i>.npz files")
    radii = [float(r) for r in args.radii.split(",") if r] + [args.r_e]
    estimators = ["raw"] + [f"within {r:g} A" for r in radii]
    est: dict = {}
    start = time.perf_counter()
    for (label, k), configs in sorted(runs.items()):
        for c, path in sorted(configs.items()):
            z = np.load(path)
            u_loc = (neighbour_matrix(z["centres"], z["box"], args.r_e) @ z["molecule_energies"].T).T
            for name, radius in zip(estimators, [None] + radii):
                kw = {} if radius is None else {
                    "offsets": z["offsets"], "regress_on": neighbour_matrix(z["centres"], z["box"], radius)
                    if radius > 0 else None}
                m = conditional_moments(z["forces"], u_loc, args.blocks, **kw)
                est[(label, k, c, name)] = m
    seconds = time.perf_counter() - start
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))  # noqa: E731
    out = {"machine": f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores",
           "args": vars(args), "seconds_estimators": seconds, "per_stiffness": [], "between_stiffnesses": []}
    print(f"{len(files)} sampled configurations; estimators {seconds:.0f} s")
    print(f"\n{'T':>6}{'k':>7}  {'estimator':<14}" + "".join(f"{o + ' signal':>11}{o + ' error':>10}" for o in ("F", "F1", "F2")))
    for (label, k), configs in sorted(runs.items()):
        for name in estimators:
            ms = [est[(label, k, c, name)] for c in sorted(configs)]
            row = {"T": label, "k": k, "estimator": name}
            cells = ""
            for o, get in (("F", lambda m: (m.F, m.F_se)), ("F1", lambda m: (m.F1, m.F1_se)),
                           ("F2", lambda m: (m.F2, m.F2_se))):
                e = np.array([get(m)[0] for m in ms])
                s = np.array([get(m)[1] for m in ms])
                sig, err = float(np.sqrt(max(np.mean(e**2) - np.mean(s**2), 0.0))), rms(s)
                row[o] = {"signal_rms": sig, "error_rms": err}
                cells += f"{sig:>11.3g}{err:>10.3g}"
            out["per_stiffness"].append(row)
            print(f"{label:>6}{k:>7g}  {name:<14}{cells}")
    print("\nrms difference beyond the noise between stiffnesses (same configurations):")
    print(f"{'T':>6}{'k_a':>7}{'k_b':>7}  {'estimator':<14}{'F':>9}{'F1':>9}{'F2':>9}{'  (F1 noise)':>12}")
    labels = sorted({label for label, _ in runs})
    for label in labels:
        ks = sorted(k for lab, k in runs if lab == label)
        for ka, kb in itertools.combinations(ks, 2):
            common = sorted(set(runs[(label, ka)]) & set(runs[(label, kb)]))
            if not common:
                continue
            for name in estimators:
                row = {"T": label, "k_a": ka, "k_b": kb, "estimator": name, "configurations": len(common)}
                cells = ""
                for o, get in (("F", lambda m: (m.F, m.F_se)), ("F1", lambda m: (m.F1, m.F1_se)),
                               ("F2", lambda m: (m.F2, m.F2_se))):
                    a = np.array([get(est[(label, ka, c, name)]) for c in common])
                    b = np.array([get(est[(label, kb, c, name)]) for c in common])
                    excess = np.mean((a[:, 0] - b[:, 0]) ** 2) - np.mean(a[:, 1] ** 2 + b[:, 1] ** 2)
                    row[o] = {"difference_beyond_noise_rms": float(np.sqrt(max(excess, 0.0))),
                              "excess_mean_square": float(excess),
                              "noise_rms": float(np.sqrt(np.mean(a[:, 1] ** 2 + b[:, 1] ** 2)))}
                    cells += f"{row[o]['difference_beyond_noise_rms']:>9.3g}"
                out["between_stiffnesses"].append(row)
                print(f"{label:>6}{ka:>7g}{kb:>7g}  {name:<14}{cells}{row['F1']['noise_rms']:>12.3g}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
