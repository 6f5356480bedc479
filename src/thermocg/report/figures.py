"""The report's figures (matplotlib, Agg): error against temperature, RDF and ADF overlays,
D(T) and the time-scale ratio; and a figure as PNG bytes."""

from __future__ import annotations

import io

import numpy as np

from thermocg.io.results import Results
from thermocg.report.claims import uncertainty
from thermocg.report.series import points, series, trained_at


def figures(res: Results) -> dict[str, "object"]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    temps = list(res.by_temperature)
    entries = list(res.by_temperature.values())
    lines = series(res)
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(lines)}

    # error vs temperature, per series (mean over seeds, error bars: its standard error), training
    # temperatures marked
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, ylabel in zip(axes, ("force_mse_excess", "rdf_iae", "adf_iae"),
                               ("force MSE excess over fm-each ((kcal/mol/Å)²)", "RDF IAE (Å)", "ADF IAE")):
        floor = noise_floor(res, key) if key != "force_mse_excess" else []
        if floor:  # what sampling noise alone gives: an IAE inside the band cannot tell models apart
            ax.fill_between([t for t, _ in floor], 0.0, [f for _, f in floor], color="0.85", zorder=0,
                            label="noise floor")
        for label, groups in lines.items():
            pts = points(res, label, groups, key)
            if not pts:
                continue
            t = [p for p, _ in pts]
            v = [st.mean for _, st in pts]
            err = [np.nan_to_num(uncertainty(st)) for _, st in pts]
            ax.errorbar(*gaps(t, v, err, temps), fmt="o-", color=colours[label], label=label, ms=4, capsize=2)
            trained = trained_at(res, groups)
            tv = [(ti, vi) for ti, vi in zip(t, v) if ti in trained]
            if tv:
                ax.plot(*zip(*tv), "s", color=colours[label], ms=9, mfc="none")
        ax.set_xlabel("T (K)")
        ax.set_ylabel(ylabel)
        if not ax.lines:
            why = "no fm-each models: no excess to show" if key == "force_mse_excess" else "no values"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=8)
    drawn = [ax for ax in axes if ax.lines]
    if drawn:
        drawn[0].legend(fontsize=7)
        drawn[0].set_title("open squares: training temperatures", fontsize=8)
    fig.tight_layout()
    figs["error-vs-temperature"] = fig

    # RDF and ADF overlays per temperature (per series, the first seed simulated there)
    for kind, xlabel, ylabel in (("rdf", "r (Å)", "g(r)"), ("adf", "angle (degrees)", "P(θ)")):
        n = len(temps)
        cols = min(n, 3)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.2 * rows), squeeze=False)
        for ax, t, e in zip(axes.flat, temps, entries):
            conv = np.degrees if kind == "adf" else (lambda x: x)
            ref = getattr(e.reference, kind) if e.reference is not None else None
            if ref is not None:
                ax.plot(conv(ref.x), ref.y, "k-", lw=2.2, label="all-atom")
            for label, groups in lines.items():
                curve = next((getattr(e.models[m], kind) for g in groups for m in res.members(g)
                              if m in e.models and getattr(e.models[m], kind) is not None), None)
                if curve is not None:
                    ax.plot(conv(curve.x), curve.y, color=colours[label], lw=1, label=label)
            ax.set_title(f"{t:g} K")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        figs[kind] = fig

    # D(T) and the ratio
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ref_pts = [(t, e.reference.D_A2_per_ps) for t, e in zip(temps, entries)
               if e.reference is not None and e.reference.D_A2_per_ps is not None]
    if ref_pts:
        t, d = zip(*ref_pts)
        a1.errorbar(t, [x.value for x in d], [np.nan_to_num(x.error) for x in d], fmt="ko-", label="all-atom")
    for label, groups in lines.items():
        for ax, key in ((a1, "D_A2_per_ps"), (a2, "D_ratio_CG_over_FG")):
            pts = points(res, label, groups, key)
            if pts:
                ax.errorbar(*gaps([p for p, _ in pts], [st.mean for _, st in pts],
                                  [np.nan_to_num(uncertainty(st)) for _, st in pts], temps),
                            fmt="o-", color=colours[label], label=label, ms=4, capsize=2)
    a1.set_xlabel("T (K)")
    a1.set_ylabel("D (Å²/ps)")
    a1.legend(fontsize=7)
    a2.axhline(1.0, color="0.6", lw=1)
    a2.set_xlabel("T (K)")
    a2.set_ylabel("D_CG / D_FG")
    fig.tight_layout()
    figs["dynamics"] = fig
    return figs


def gaps(t, v, err, temps) -> tuple[list, list, list]:
    """(t, v, err) with a NaN point wherever the series skips a temperature of ``temps`` between
    two of its points (a model unstable there, say), so that the line breaks instead of joining
    its neighbours across it."""
    out_t, out_v, out_e = [], [], []
    for i, (ti, vi, ei) in enumerate(zip(t, v, err)):
        if i and any(t[i - 1] < u < ti for u in temps):
            out_t.append(next(u for u in temps if t[i - 1] < u < ti))
            out_v.append(np.nan)
            out_e.append(0.0)
        out_t.append(ti)
        out_v.append(vi)
        out_e.append(ei)
    return out_t, out_v, out_e


def noise_floor(res: Results, key: str) -> list[tuple[float, float]]:
    """(temperature, the mean over the simulated models of ``<key>_floor``), where any model has
    one: the IAE against the reference that the runs' sampling noise alone gives (issue 29)."""
    out = []
    for t, entry in res.by_temperature.items():
        values = [getattr(m, f"{key}_floor") for m in entry.models.values() if getattr(m, f"{key}_floor") is not None]
        if values:
            out.append((t, float(np.mean(values))))
    return out


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
