"""Excess force error against temperature for chosen variants of a bench/convergence.py summary.

    python bench/plot_transfer.py bench/results/restrained_transfer.json docs/v1/restrained-transfer.png \\
        "fm n=100" "trf2 n=100 r_e=6.5" "trf2 restrained m=20 w0=regression n=100"
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    summary_path, out, *keys = sys.argv[1:]
    variants = json.load(open(summary_path))["variants"]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key in keys:
        rows = variants[key]["by_temperature"]
        temps = sorted(float(t) for t in rows)
        ax.errorbar(temps, [rows[str(t)]["excess_mean"] for t in temps],
                    [rows[str(t)]["excess_sem"] or 0.0 for t in temps], marker="o", ms=3, capsize=2, label=key)
    ax.axvline(300.0, color="grey", lw=0.5)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel("excess force MSE over fm-each ((kcal/mol/Å)²)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
