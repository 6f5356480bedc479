"""The report stage: one self-contained HTML page (figures inlined) plus the PNG figures.

Reads ``evaluate/results.json`` only, so a report can be rebuilt without recomputing
anything. Sections: the models and their training temperatures, the force-error
table, error-vs-temperature curves (training temperatures marked), RDF and ADF
overlays per temperature, D(T) of CG and all-atom and their ratio, and the config
and versions that produced it. Outputs in ``<run.directory>/report/``::

    report.html    the page (PNG figures embedded as data URIs: one file to send)
    *.png          the same figures as files
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from pathlib import Path

import numpy as np

from thermocg import __version__
from thermocg.config import Config
from thermocg.io.records import Estimate, Measures, Results
from thermocg.stagedir import atomic_path, atomic_write_text
from thermocg.runlock import locked_stage

STAGE = "report"
SECTIONS = ("models", "force-errors", "error-vs-temperature", "structure", "dynamics", "provenance")


def report_dir(config: Config) -> Path:
    """This stage's directory for ``config`` (from the pipeline table)."""
    from thermocg import pipeline
    return pipeline.stage(STAGE).directory(config)


def _fmt(x: Estimate | None, digits: int = 3) -> str:
    if x is None or not np.isfinite(x.value):
        return "–"
    return f"{x.value:.{digits}g} ± {x.error:.2g}" if np.isfinite(x.error) else f"{x.value:.{digits}g}"


def _value(x) -> float | None:
    """A measure as a number (an Estimate's value), None when not measured."""
    return x.value if isinstance(x, Estimate) else x


def _figures(res: Results) -> dict[str, "object"]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    temps = list(res.by_temperature)
    entries = list(res.by_temperature.values())
    models = res.models
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}

    # error vs temperature, per model, with training temperatures marked
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, ylabel in zip(axes, ("force_mse_excess", "rdf_iae", "adf_iae"),
                               ("force MSE excess over fm-each ((kcal/mol/Å)²)", "RDF IAE (Å)", "ADF IAE")):
        for m in models:
            pts = [(t, _value(getattr(e.models.get(m, Measures()), key))) for t, e in zip(temps, entries)]
            pts = [(t, v) for t, v in pts if v is not None]
            if not pts:
                continue
            t, v = zip(*pts)
            ax.plot(t, v, "o-", color=colours[m], label=m, ms=4)
            trained = res.training_temperatures_K.get(m) or ()
            tv = [(ti, vi) for ti, vi in pts if ti in trained]
            if tv:
                ax.plot(*zip(*tv), "s", color=colours[m], ms=9, mfc="none")
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

    # RDF and ADF overlays per temperature
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
            for m, s in e.models.items():
                curve = getattr(s, kind)
                if curve is not None:
                    ax.plot(conv(curve.x), curve.y, color=colours[m], lw=1, label=m)
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
    for m in models:
        pts = [(t, e.models[m]) for t, e in zip(temps, entries)
               if m in e.models and e.models[m].D_A2_per_ps is not None]
        if pts:
            t, s = zip(*pts)
            a1.errorbar(t, [x.D_A2_per_ps.value for x in s], [np.nan_to_num(x.D_A2_per_ps.error) for x in s],
                        fmt="o-", color=colours[m], label=m, ms=4)
            r = [(ti, x.D_ratio_CG_over_FG) for ti, x in zip(t, s) if x.D_ratio_CG_over_FG is not None]
            if r:
                a2.errorbar([x for x, _ in r], [y.value for _, y in r], [np.nan_to_num(y.error) for _, y in r],
                            fmt="o-", color=colours[m], label=m, ms=4)
    a1.set_xlabel("T (K)")
    a1.set_ylabel("D (Å²/ps)")
    a1.legend(fontsize=7)
    a2.axhline(1.0, color="0.6", lw=1)
    a2.set_xlabel("T (K)")
    a2.set_ylabel("D_CG / D_FG")
    fig.tight_layout()
    figs["dynamics"] = fig
    return figs


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _table(res: Results) -> str:
    head = "".join(f"<th>{t:g} K</th>" for t in res.by_temperature)
    rows = []
    for m in res.models:
        cells = []
        for e in res.by_temperature.values():
            s = e.models.get(m, Measures())
            ex = s.force_mse_excess
            cell = _fmt(s.force_mse) + (f"<br><small>excess {ex:+.3g}</small>" if ex is not None else "")
            cells.append(f"<td>{cell}</td>")
        rows.append(f"<tr><th>{html.escape(m)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>model</th>{head}</tr>{''.join(rows)}</table>"


def _numbers(res: Results) -> str:
    rows = []
    for t, e in res.by_temperature.items():
        for m, s in e.models.items():
            if s.rdf_iae is None:
                continue
            rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
                f"{t:g} K", html.escape(m), _fmt(s.rdf_iae), _fmt(s.rdf_peak_position),
                _fmt(s.rdf_peak_height), _fmt(s.adf_iae), _fmt(s.s2_kB), _fmt(s.D_A2_per_ps),
                _fmt(s.D_ratio_CG_over_FG), f"{s.mean_kinetic_temperature_K:.0f}")) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("T", "model", "RDF IAE (Å)", "RDF peak r (Å)", "RDF peak g",
                                             "ADF IAE", "s2 (kB)", "D (Å²/ps)", "D_CG/D_FG", "T_kin (K)"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render(res: Results, config_text: str, versions: dict, images: dict[str, bytes]) -> str:
    """The HTML page from the results, the config and the PNG images (embedded)."""
    def img(name, alt):
        data = base64.b64encode(images[name]).decode()
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'

    def temps_of(m):
        return ", ".join(f"{t:g}" for t in res.training_temperatures_K.get(m, ()))

    trained = "".join(f"<li><b>{html.escape(m)}</b>: trained at {temps_of(m)} K</li>" for m in res.models)
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
<section id="force-errors"><h2>Force errors on held-out reference frames</h2>
<p>Mean squared error against the mapped forces, (kcal/mol/Å)², ± standard error over frames; "excess" is
over fm-each at that temperature (the best a model trained there does; THEORY.md §8).</p>{_table(res)}</section>
<section id="error-vs-temperature"><h2>Errors against temperature</h2>{img('error-vs-temperature', 'errors vs T')}
</section>
<section id="structure"><h2>Structure</h2>{img('rdf', 'RDF overlays')}{img('adf', 'ADF overlays')}{_numbers(res)}
</section>
<section id="dynamics"><h2>Dynamics</h2><p>D from NVE segments (Einstein fit; no finite-size correction,
the Yeh-Hummer term is in results.json).</p>{img('dynamics', 'diffusion')}</section>
<section id="provenance"><h2>Config and versions</h2><table>{version_rows}</table><pre>{html.escape(config_text)}</pre>
</section>
</body></html>
"""


@locked_stage
def run_report(config: Config, force: bool = False, show_progress: bool = True) -> dict:
    """Write report.html and the PNG figures from the evaluate stage's results."""
    import matplotlib.pyplot as plt

    from thermocg import pipeline

    res: Results = pipeline.read(config, "evaluate")
    stage = pipeline.stage(STAGE).stage_dir(config)
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest
    images = {}
    for name, fig in _figures(res).items():
        images[name] = _png(fig)
        plt.close(fig)
        with atomic_path(stage.path / f"{name}.png") as tmp:
            tmp.write_bytes(images[name])
    import h5py
    import hippynn
    import openmm
    import torch
    versions = {"thermocg": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "hippynn": getattr(hippynn, "__version__", "?"), "openmm": openmm.__version__,
                "h5py": h5py.__version__, "machine": f"{platform.machine()} {platform.system()}",
                "config file": str(config.source)}
    page = render(res, json.dumps(config_json, indent=1), versions, images)
    atomic_write_text(stage.path / "report.html", page)
    outputs = {"report": ["report.html"], "figures": [f"{name}.png" for name in images]}
    return stage.write_manifest(True, config_json, outputs, {"sections": list(SECTIONS)},
                                {"html": "report.html", "figures": outputs["figures"]})


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's line for a finished report stage: where the page is."""
    return [f"report: {Path(directory) / manifest['record']['html']}"]
