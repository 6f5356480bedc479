"""Held-out force scores of another run's models against a study: does a variant trained
differently (issue 15: restrained thermal targets) transfer better than the study's?

Every model of RUN's train stage is scored as the study's evaluate stage and
bench/convergence.py score theirs: the force MSE on the STUDY's held-out frames at each of
its temperatures, in excess of the study's fm-each (mean over its seeds), and the response
scale a* (:func:`thermocg.evaluate.stage.response_scale`: the scale of the learned response
that fits the held-out forces best, which mixes in W0's error and the forces' noise;
bench/restrained_response.py measures the response's size). RUN must share the study's [reference] (its held-out frames are the
study's). Models are grouped over seeds: mean ± standard error.

    python bench/score_run.py examples/study-cpu.toml bench/configs/restrained-300K.toml

Writes ``<RUN directory>/scores.json`` (all models; with ``--groups`` only ``--out``) and
``--out`` (JSON); prints a table. Scoring the study itself (RUN = STUDY) gives its own models'
numbers on the same footing. Record it in
bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="the study's config (finished reference, train and evaluate stages)")
    ap.add_argument("run", help="the config of the run whose models are scored (finished train stage)")
    ap.add_argument("--groups", default=None, help="only these models, comma-separated (e.g. fm,trf1,trf2)")
    ap.add_argument("--out", default=None, help="also write the scores here (JSON)")
    args = ap.parse_args()

    from convergence import floor_of, scorer  # bench/: the study's scoring, shared

    from thermocg import pipeline
    from thermocg.config import load_config
    from thermocg.models.saved import load_model
    from thermocg.stagedir import atomic_write_text

    study, run = load_config(args.study), load_config(args.run)
    if study.section_hash("reference") != run.section_hash("reference"):
        raise SystemExit(f"{args.run}: its [reference] differs from the study's: the held-out frames would not "
                         "be the ones the study scores")
    start = time.monotonic()
    trained = pipeline.read(run, "train")
    score, floor, temps, t0 = scorer(study), floor_of(study), study.reference.temperatures_K, study.train.T0_K
    groups: dict[str, list[dict]] = {}
    wanted = None if args.groups is None else set(args.groups.split(","))
    for entry in trained.models:
        if wanted is not None and entry.group not in wanted:
            continue
        groups.setdefault(entry.group, []).append(score(load_model(trained.path(entry.name))))
    out = {"study": args.study, "run": args.run, "machine": f"{platform.machine()} {platform.processor() or ''}, "
           f"{os.cpu_count()} cores", "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                                              capture_output=True, text=True).stdout.strip(),
           "floor_fm_each_mse": {str(t): floor[t] for t in temps}, "groups": {}}
    print("excess held-out force MSE over the study's fm-each, (kcal/mol/Å)^2: mean ± s.e. over seeds")
    print(f"{'model':<10}{'seeds':>6}" + "".join(f"{t:>14g} K" for t in temps))
    for group, scores in groups.items():
        by_t, cells = {}, ""
        for t in temps:
            ex = np.array([s[str(t)]["mse"] - floor[t] for s in scores])
            # a* only where there is a response: fm's differs from 0 by float rounding alone
            a = [s[str(t)]["a_star"] for s in scores if s[str(t)]["a_star"] is not None
                 and np.isfinite(s[str(t)]["a_star"]) and s[str(t)]["dF2"] > 1e-8]
            sem = float(ex.std(ddof=1) / np.sqrt(len(ex))) if len(ex) > 1 else None
            by_t[str(t)] = {"excess_mean": float(ex.mean()), "excess_sem": sem,
                            "a_star_mean": float(np.mean(a)) if a else None,
                            "a_star_sem": float(np.std(a, ddof=1) / np.sqrt(len(a))) if len(a) > 1 else None}
            cells += f"{ex.mean():>10.3f}" + (f"±{sem:<6.2g}" if sem is not None else " " * 7)
        out["groups"][group] = {"seeds": len(scores), "by_temperature": by_t}
        print(f"{group:<10}{len(scores):>6}{cells}")
    print("\nresponse scale a* on held-out forces (mean over seeds; mixes in W0's error: "
          "bench/restrained_response.py measures the response's size)")
    print(f"{'model':<10}" + "".join(f"{t:>9g} K" for t in temps if t != t0))
    for group, g in out["groups"].items():
        if any(g["by_temperature"][str(t)]["a_star_mean"] is not None for t in temps if t != t0):
            print(f"{group:<10}" + "".join(f"{g['by_temperature'][str(t)]['a_star_mean']:>11.2f}"
                                           for t in temps if t != t0))
    out["seconds"] = time.monotonic() - start
    text = json.dumps(out, indent=1)
    if wanted is None:
        atomic_write_text(run.run_dir / "scores.json", text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        atomic_write_text(args.out, text)
    print("\nwrote " + " and ".join(([] if wanted is not None else [str(run.run_dir / "scores.json")])
                                   + ([args.out] if args.out else [])))


if __name__ == "__main__":
    main()
