"""The report's HTML page: one self-contained file, its PNG figures inlined as data URIs."""

from __future__ import annotations

import base64
import html

import numpy as np

from thermocg.io.results import Estimate, Results, SeedStatistics
from thermocg.report.claims import Claim, uncertainty
from thermocg.report.series import points, series

#: The documentation the page links to for what its numbers mean, by page and anchor: the docs/
#: folder as the repository renders it (no hosted copy of the mkdocs site exists yet). The site's
#: study page shows this report's own figures; the page links there instead of repeating its text.
DOCS_URL = "https://github.com/thermocg/thermocg/blob/main/docs/"
DOCS_LINKS = {"claims": "results.md#the-claims", "structure": "stages.md#noise-floor",
              "dynamics": "stages.md#noise-floor"}

SECTIONS = ("models", "claims", "force-errors", "error-vs-temperature", "structure", "dynamics", "provenance")


def _fmt(x: Estimate | None, digits: int = 3) -> str:
    if x is None or not np.isfinite(x.value):
        return "–"
    return f"{x.value:.{digits}g} ± {x.error:.2g}" if np.isfinite(x.error) else f"{x.value:.{digits}g}"


def _fmt_seeds(s: SeedStatistics | None, digits: int = 3) -> str:
    """A group's mean over seeds ± the standard error of that mean (the run's own error with one
    seed), and with several seeds their number and spread."""
    if s is None or not np.isfinite(s.mean):
        return "–"
    text = _fmt(Estimate(s.mean, uncertainty(s)), digits)
    return text + (f" <small>({s.n} seeds, spread {s.spread:.2g})</small>" if s.n > 1 else "")


def _table(res: Results) -> str:
    head = "".join(f"<th>{t:g} K</th>" for t in res.by_temperature)
    rows = []
    for label, groups in series(res).items():
        by_t = {t: None for t in res.by_temperature}
        for measure in ("force_mse", "force_mse_excess"):
            for t, st in points(res, label, groups, measure):
                by_t[t] = (by_t[t] or {}) | {measure: st}
        cells = []
        for t, got in by_t.items():
            got = got or {}
            ex = got.get("force_mse_excess")
            cell = _fmt_seeds(got.get("force_mse")) + (f"<br><small>excess {ex.mean:+.3g}</small>" if ex else "")
            cells.append(f"<td>{cell}</td>")
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


NUMBERS = (("rdf_iae", "RDF IAE (Å)"), ("rdf_peak_position", "RDF peak r (Å)"), ("rdf_peak_height", "RDF peak g"),
           ("adf_iae", "ADF IAE"), ("s2_kB", "s2 (kB)"), ("D_A2_per_ps", "D (Å²/ps)"),
           ("D_ratio_CG_over_FG", "D_CG/D_FG"), ("mean_kinetic_temperature_K", "T_kin (K)"))


def _numbers(res: Results) -> str:
    rows = []
    lines = series(res)
    for t in res.by_temperature:
        for label, groups in lines.items():
            stats = {key: dict(points(res, label, groups, key)).get(t) for key, _ in NUMBERS}
            if stats["rdf_iae"] is None:
                continue
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                f"{t:g} K", html.escape(label), *(_fmt_seeds(stats[k]) for k, _ in NUMBERS))) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("T", "model", *(h for _, h in NUMBERS)))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _mixture(res: Results) -> str:
    """A mixture's partial RDF errors (per type pair) and D_CG/D_FG per bead type, per model and
    temperature (each model as trained: seeds are not pooled here); empty for one bead type."""
    rows, pairs, kinds = [], [], []
    for t, entry in res.by_temperature.items():
        for m in sorted(entry.models):
            got = entry.models[m]
            if not got.rdf_partial_iae:
                continue
            pairs = pairs or list(got.rdf_partial_iae)
            kinds = kinds or list(got.D_ratio_by_type or {})
            ratio = got.D_ratio_by_type or {}
            cells = [f"{t:g} K", html.escape(m), *(_fmt(got.rdf_partial_iae.get(p)) for p in pairs),
                     *(_fmt(ratio.get(k)) for k in kinds)]
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("T", "model", *(f"g {html.escape(p)} IAE (Å)" for p in pairs),
                                             *(f"D_CG/D_FG {html.escape(k)}" for k in kinds)))
    return ('<section id="mixture"><h2>Mixture: partial RDFs and D per bead type</h2><p>Integrated absolute '
            "error of each partial g_AB(r) against the reference, and each bead type's D_CG/D_FG (results.json: "
            f"rdf_partial, D_by_type_A2_per_ps).</p><table><tr>{head}</tr>{''.join(rows)}</table></section>")


def _claims(claims: list[Claim]) -> str:
    items = []
    for c in claims:
        evidence = "".join(f"<li>{html.escape(line)}</li>" for line in c.evidence)
        items.append(f'<li><b>{c.number}. {html.escape(c.text)}</b>: <span class="verdict">{c.verdict}</span>'
                     f"<ul>{evidence}</ul></li>")
    return f"<ol class=\"claims\">{''.join(items)}</ol>"


def render(res: Results, claims: list[Claim], config_text: str, versions: dict, images: dict[str, bytes]) -> str:
    """The HTML page from the results, the config and the PNG images (embedded)."""
    def img(name, alt):
        data = base64.b64encode(images[name]).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'

    def temps_of(m):
        return ", ".join(f"{t:g}" for t in res.training_temperatures_K.get(m, ()))

    def seeds_of(g):
        seeds = [res.seeds[m] for m in res.members(g) if m in res.seeds]
        return f" (seeds {', '.join(str(x) for x in seeds)})" if len(seeds) > 1 else ""

    trained = "".join(f"<li><b>{html.escape(g)}</b>: trained at {temps_of(res.members(g)[0])} K{seeds_of(g)}</li>"
                      for g in res.group_names)
    notes = ("<p>Not computed:</p><ul class=\"notes\">" + "".join(f"<li>{html.escape(n)}</li>" for n in res.notes)
             + "</ul>") if res.notes else ""
    version_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                           for k, v in versions.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>thermocg report</title>
<style>
body {{ font-family: sans-serif; max-width: 1300px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
img {{ max-width: 100%; }} pre {{ background: #f5f5f5; padding: 1em; overflow-x: auto; }}
</style></head><body>
<h1>thermocg: CG models against the all-atom reference</h1>
<section id="models"><h2>Models</h2><p>Reference temperature T0 = {res.T0_K:g} K.</p><ul>{trained}</ul>
{notes}</section>
<section id="claims"><h2>The paper's claims</h2><p>Each answered from this run's numbers by the rules in
<code>thermocg/report/claims.py</code>; a model trained with several seeds enters as its mean over seeds
(<a href="{DOCS_URL}{DOCS_LINKS['claims']}">the rules and the published water study</a>).</p>
{_claims(claims)}</section>
<section id="force-errors"><h2>Force errors on held-out reference frames</h2>
<p>Mean squared error against the mapped forces, (kcal/mol/Å)², ± standard error (over frames with one
seed; over seeds with several, whose number and spread follow); "excess" is over fm-each at that temperature
(the best a model trained there does, averaged over its seeds; THEORY.md §8).</p>{_table(res)}</section>
<section id="error-vs-temperature"><h2>Errors against temperature</h2>{img('error-vs-temperature', 'errors vs T')}
</section>
<section id="structure"><h2>Structure</h2><p>Integrated absolute errors against the reference; the grey band
and the <code>*_iae_floor</code> numbers of results.json are the noise floor, what sampling alone gives
(<a href="{DOCS_URL}{DOCS_LINKS['structure']}">how it is measured</a>).</p>{img('rdf', 'RDF overlays')}{img('adf', 'ADF overlays')}{_numbers(res)}
</section>
<section id="dynamics"><h2>Dynamics</h2><p>D from NVE segments (Einstein fit, error over segments; no
finite-size correction, the Yeh-Hummer term is in results.json;
<a href="{DOCS_URL}{DOCS_LINKS['dynamics']}">what the evaluation computes</a>).</p>{img('dynamics', 'diffusion')}</section>
{_mixture(res)}
<section id="provenance"><h2>Config and versions</h2><table>{version_rows}</table><pre>{html.escape(config_text)}</pre>
</section>
</body></html>
"""
