"""The report's plain-text outputs: ``results.md`` (tables by model and temperature, the
claims, provenance) and ``summary.json`` (the same numbers, machine-readable).

A study publishes these two files and the report's PNG figures as they are
(``docs/results.md`` and ``docs/results.json`` of the water study). Every number is a
model group's mean over its training seeds with the standard error of that mean (the run's
own error with one seed), the number of seeds and their spread; the fm-each row holds each
fm-each model at its own temperature.
"""

from __future__ import annotations

import math

from thermocg.io.results import Results, SeedStatistics
from thermocg.labels import temperature_label
from thermocg.report.claims import Claim, uncertainty
from thermocg.report.series import points, series, trained_at

#: (measure, heading, unit, digits) of the tables, in order
TABLES = (("force_mse", "Held-out force error (MSE against the mapped forces)", "(kcal/mol/Å)²", 4),
          ("force_mse_excess", "Force error in excess of fm-each at that temperature", "(kcal/mol/Å)²", 2),
          ("rdf_iae", "RDF integrated absolute error against all-atom", "Å", 2),
          ("rdf_iae_floor", "Noise floor of the RDF IAE: what sampling alone gives (issue 29)", "Å", 2),
          ("adf_iae", "ADF integrated absolute error against all-atom", "", 2),
          ("adf_iae_floor", "Noise floor of the ADF IAE", "", 2),
          ("rdf_peak_position", "RDF first-peak position", "Å", 3),
          ("rdf_peak_height", "RDF first-peak height", "", 3),
          ("D_A2_per_ps", "Self-diffusion coefficient D_CG", "Å²/ps", 3),
          ("D_ratio_CG_over_FG", "Time-scale ratio D_CG/D_FG", "", 3))

#: the reference's own measures in the all-atom rows
REFERENCE = ("rdf_peak_position", "rdf_peak_height", "D_A2_per_ps")


def _cell(s: SeedStatistics | None, digits: int) -> str:
    if s is None or not math.isfinite(s.mean):
        return "–"
    err = uncertainty(s)
    text = f"{s.mean:.{digits}g}" + (f" ± {err:.1g}" if math.isfinite(err) else "")
    return text + (f" ({s.n})" if s.n > 1 else "")


def table(res: Results, measure: str, digits: int, lines: dict[str, list[str]]) -> list[str]:
    """One markdown table: a row per series, a column per temperature (* = trained there)."""
    temps = list(res.by_temperature)
    out = ["| model | " + " | ".join(f"{t:g} K" for t in temps) + " |", "|---" * (len(temps) + 1) + "|"]
    if measure in REFERENCE:
        ref = []
        for t in temps:
            e = res.by_temperature[t].reference
            v = None if e is None else getattr(e, measure)
            ref.append("–" if v is None else f"{v.value:.{digits}g}"
                       + (f" ± {v.error:.1g}" if math.isfinite(v.error) else ""))
        out.append("| **all-atom** | " + " | ".join(ref) + " |")
    for label, groups in lines.items():
        got = dict(points(res, label, groups, measure))
        if not got:
            continue
        trained = trained_at(res, groups)
        cells = [_cell(got.get(t), digits) + ("*" if t in trained and t in got else "") for t in temps]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def exact_lines(exact: dict | None) -> list[str]:
    """The section on the models' error against the exact mean force (``bench/restrained_response.py``,
    :func:`thermocg.report.provenance.exact_response`): empty when it was not measured."""
    if not exact:
        return []
    temps = sorted({k for g in exact["models"].values() for k in g if k != "T0"}, key=float)

    def cell(v):
        m, s = v if v is not None else (None, None)
        return "n/a" if m is None else f"{m:.3g}" + ("" if s is None else f" ± {s:.2g}")

    out = ["## Against the exact mean force", "",
           f"Force MSE against the exact mean force F(R, T), beyond its sampling noise, (kcal/mol/Å)², on "
           f"{exact['configurations']} held-out configurations from {exact['frames_at_K']:g} K sampled with every bead "
           f"restrained (`bench/restrained_response.py`); mean ± s.e. over seeds. At T0 = {exact['T0_K']:g} K this is "
           "W0's own error.", "",
           "| model | T0 | " + " | ".join(f"{t} K" for t in temps) + " |", "|---|---|" + "---|" * len(temps)]
    out += [f"| {group} | {cell(g.get('T0'))} | " + " | ".join(cell(g.get(t)) for t in temps) + " |"
            for group, g in exact["models"].items()]
    return out + [""]


def results_markdown(res: Results, claims: list[Claim], provenance: dict, figures: list[str],
                     exact: dict | None = None) -> str:
    """The whole ``results.md`` page (``exact``: the models against the exact mean force, when measured)."""
    lines = series(res)
    md = ["# Results", ""]
    md += ["## Provenance", ""] + [f"- **{k}**: {v}" for k, v in provenance.items()] + [""]
    md += ["## The claims", "",
           "Each answered from this run's numbers by the rules in `thermocg/report/claims.py`, fixed before the run "
           "(one correction since: claim 3's ratio errors where a D has none, see its docstring).",
           ""]
    for c in claims:
        md.append(f"{c.number}. **{c.text}**: **{c.verdict}**")
        md += [f"   - {e}" for e in c.evidence]
    md += ["", "## Numbers by model and temperature", "",
           "Mean over training seeds ± the standard error of that mean (with one seed: the run's own error); "
           "(n): the number of seeds when more than one. *: a temperature the model was trained at. "
           "fm-each: the model trained at each temperature, there. Force errors on the held-out reference "
           "frames; structure from the Langevin frames, dynamics from the NVE segments. Noise floor: the IAE "
           "that sampling alone gives, from the IAE between the two halves of the model's run and of the reference "
           "(`iae_floor` in `thermocg/evaluate/stage.py`); an IAE near its floor cannot tell models apart.", ""]
    for measure, heading, unit, digits in TABLES:
        rows = table(res, measure, digits, lines)
        if len(rows) <= 2:
            continue
        md += [f"### {heading}" + (f" ({unit})" if unit else ""), ""] + rows + [""]
    md += exact_lines(exact)
    if res.notes:
        md += ["## Not computed", ""] + [f"- {n}" for n in res.notes] + [""]
    if figures:
        md += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    return "\n".join(md)


def summary_json(res: Results, claims: list[Claim], provenance: dict, exact: dict | None = None) -> dict:
    """``summary.json``: by temperature and model group, every measure over seeds; the reference's
    own measures; the claims; provenance; the models against the exact mean force (``exact``, when
    measured)."""
    lines = series(res)
    measures = [m for m, *_ in TABLES]
    by_t = {}
    for t, entry in res.by_temperature.items():
        ref = entry.reference
        models = {}
        for label, groups in lines.items():
            got = {m: dict(points(res, label, groups, m)).get(t) for m in measures}
            got = {m: s.to_json() for m, s in got.items() if s is not None}
            if got:
                trained = trained_at(res, groups)
                models[label] = {"trained_here": t in trained, **got}
        by_t[temperature_label(t)] = {
            "temperature_K": t,
            "reference": None if ref is None else {
                k: v.to_json() if hasattr(v, "to_json") else v
                for k, v in (("rdf_peak_position", ref.rdf_peak_position), ("rdf_peak_height", ref.rdf_peak_height),
                             ("D_A2_per_ps", ref.D_A2_per_ps),
                             ("yeh_hummer_correction_A2_per_ps", ref.yeh_hummer_correction_A2_per_ps),
                             ("yeh_hummer_times_viscosity", ref.yeh_hummer_times_viscosity)) if v is not None},
            "models": models}
    return {"provenance": provenance, "T0_K": res.T0_K,
            "models": {label: {"groups": groups, "seeds": [res.seeds.get(m) for g in groups for m in res.members(g)],
                               "training_temperatures_K": sorted(trained_at(res, groups))}
                       for label, groups in lines.items()},
            "claims": [c.to_json() for c in claims], "by_temperature": by_t, "notes": list(res.notes),
            "exact_mean_force": exact}
