"""Issue 15's equal-cost comparison of the two target methods in one file,
``bench/results/targets.json``: per method and order the SNR and, on the exact oracle, the
error of the fitted F, F1, F2 at each MD budget; on water, per model and temperature, the
response scale a* and the held-out force error in excess of fm-each, and the response scale
against the exact response (``a_star_exact``, bench/restrained_response.py: the held-out a*
mixes in the mapped forces' noise and W0's error).

It gathers what the benches wrote (run them first):

    python bench/restrained_oracle.py                    # -> bench/results/restrained_oracle.json
    python bench/restrained_targets.py examples/study-cpu.toml --k 4000 --configs 3 --temperatures 300,250
    python bench/score_run.py examples/study-cpu.toml examples/study-cpu.toml --groups fm,trf1,trf2 \\
        --out bench/results/transfer_regression.json
    python bench/score_run.py examples/study-cpu.toml bench/configs/restrained-300K.toml \\
        --out bench/results/transfer_restrained.json
    python bench/restrained_response.py examples/study-cpu.toml --configs 8 --models \
        'runs/restrained-300K/train/trf*.pt' 'runs/study-cpu/train/trf*.pt'   # -> restrained_response.json
    python bench/targets_summary.py

and prints the water table.
"""

from __future__ import annotations

import argparse
import json
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--oracle", default="bench/results/restrained_oracle.json")
    ap.add_argument("--water-snr", default="bench/results/restrained_targets.json")
    ap.add_argument("--regression", default="bench/results/transfer_regression.json")
    ap.add_argument("--restrained", default="bench/results/transfer_restrained.json")
    ap.add_argument("--exact", default="bench/results/restrained_response.json")
    ap.add_argument("--out", default="bench/results/targets.json")
    args = ap.parse_args()

    from thermocg.stagedir import atomic_write_text

    def read(path):
        with open(path) as fh:
            return json.load(fh)

    oracle, snr = read(args.oracle), read(args.water_snr)
    out = {"sources": vars(args), "oracle": {}, "water": {"snr": {}, "transfer": {}}}
    for row in oracle["rows"]:
        method = "regression" if row["method"] == "regression" else "restrained"
        per = out["oracle"].setdefault(f"{row['budget_ps']:g} ps", {}).setdefault(row["method"], {
            "method": method, "configurations": row["configurations"]})
        for k in range(3):
            per[f"order{k}"] = {"relative_error": row["rel_error"][k], "spread": row["rel_error_spread"][k]}
    for label, t in snr["temperatures"].items():
        longest = t["by_samples"][max(t["by_samples"], key=int)]
        out["water"]["snr"][label] = {
            "regression": {"order1_per_frame": t["regression_snr_per_sample"]["1"],
                           "order2_per_frame": t["regression_snr_per_sample"]["2"]},
            "restrained": {"order0_per_configuration": longest["F"]["snr"],
                           "order1_per_configuration": longest["F1"]["snr"],
                           "order2_per_configuration": longest["F2"]["snr"],
                           "restraint_k": snr["args"]["k"], "md_ps_per_configuration": t["md_ps_per_config"]}}
    for method, path in (("regression", args.regression), ("restrained", args.restrained)):
        scores = read(path)
        for group, g in scores["groups"].items():
            out["water"]["transfer"][f"{group} ({method} targets)"] = {
                T: {"a_star": v["a_star_mean"], "a_star_sem": v.get("a_star_sem"),
                    "excess_force_mse": v["excess_mean"], "excess_force_mse_sem": v["excess_sem"]}
                for T, v in g["by_temperature"].items()}
    exact = read(args.exact)
    runs = {"restrained-300K": "restrained", "study-cpu": "regression"}
    for group, g in exact["models"].items():
        run, variant = group.split("/", 1)
        name = f"{variant} ({runs[run]} targets)" if run in runs else None
        if name in out["water"]["transfer"]:
            by_t = {float(T): row for T, row in out["water"]["transfer"][name].items()}
            for T, v in g["mean_sem"].items():
                if T != "T0_mse" and float(T) in by_t:
                    by_t[float(T)].update(a_star_exact=v["a_star"][0], a_star_exact_sem=v["a_star"][1])
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write_text(args.out, json.dumps(out, indent=1))
    temps = sorted({T for v in out["water"]["transfer"].values() for T in v}, key=float)
    print("water: excess held-out force MSE over fm-each, (kcal/mol/Å)^2 (a*: * against the exact "
          "response, else on held-out forces)")
    print(f"{'model':<32}" + "".join(f"{float(T):>14g} K" for T in temps))
    for name, v in out["water"]["transfer"].items():
        cells = ""
        for T in temps:
            exact = v[T].get("a_star_exact")
            a = v[T]["a_star"] if exact is None else exact
            cells += f"{v[T]['excess_force_mse']:>9.3f}" + (
                f" ({a:4.2f}{'*' if exact is not None else ' '})" if a is not None else " " * 8)
        print(f"{name:<32}{cells}")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
