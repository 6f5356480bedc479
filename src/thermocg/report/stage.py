"""The report stage: one self-contained HTML page (figures inlined) plus the PNG figures.

Reads ``evaluate/results.json`` (and, for claims 4 and 5, ``convergence/summary.json`` and
``reference_check.json`` when ``bench/convergence.py`` and ``bench/reference_check.py`` have
been run on the study), so a report can be rebuilt without recomputing anything. Sections: the models and their training temperatures, the force-error
table, error-vs-temperature curves (training temperatures marked), RDF and ADF
overlays per temperature, D(T) of CG and all-atom and their ratio, and the config
and versions that produced it. Outputs in ``<run.directory>/report/``::

    report.html    the page (PNG figures embedded as data URIs: one file to send)
    results.md     the numbers by model and temperature, the claims, provenance (markdown)
    summary.json   the same, machine-readable
    *.png          the figures as files
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
from thermocg.io.records import Estimate, Results, SeedStatistics
from thermocg.io.strict import dumps
from thermocg.errors import DataFormatError
from thermocg.report.claims import Claim, assess, uncertainty
from thermocg.report.markdown import results_markdown, summary_json
from thermocg.stagedir import atomic_path, atomic_write_text
from thermocg.runlock import locked_stage

STAGE = "report"
SECTIONS = ("models", "claims", "force-errors", "error-vs-temperature", "structure", "dynamics", "provenance")


def report_dir(config: Config) -> Path:
    """This stage's directory for ``config`` (from the pipeline table)."""
    from thermocg import pipeline
    return pipeline.stage(STAGE).directory(config)


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


def series(res: Results) -> dict[str, list[str]]:
    """What the figures and tables show: label -> model groups. A model trained with several
    seeds is one group (its mean over seeds); the fm-each groups form one series, "fm-each",
    each at its own temperature."""
    out: dict[str, list[str]] = {}
    for g in res.group_names:
        single = res.variants.get(res.members(g)[0]) == "fm-each"
        out.setdefault("fm-each" if single else g, []).append(g)
    return out


def points(res: Results, label: str, groups: list[str], measure: str) -> list[tuple[float, SeedStatistics]]:
    """(temperature, statistics over seeds) of ``measure`` for one series (fm-each: each group at
    its own temperature only)."""
    pts = []
    for t in res.by_temperature:
        for g in groups:
            own = res.training_temperatures_K.get(res.members(g)[0], ())
            if label == "fm-each" and not any(abs(t - u) < 1e-9 for u in own):
                continue
            st = res.over_seeds(g, t, measure)
            if st is not None:
                pts.append((t, st))
    return pts


def trained_at(res: Results, groups: list[str]) -> set[float]:
    """The temperatures the groups of one series were trained at."""
    return {t for g in groups for t in res.training_temperatures_K.get(res.members(g)[0], ())}


def _figures(res: Results) -> dict[str, "object"]:
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
        for label, groups in lines.items():
            pts = points(res, label, groups, key)
            if not pts:
                continue
            t = [p for p, _ in pts]
            v = [st.mean for _, st in pts]
            err = [np.nan_to_num(uncertainty(st)) for _, st in pts]
            ax.errorbar(t, v, err, fmt="o-", color=colours[label], label=label, ms=4, capsize=2)
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
                ax.errorbar([p for p, _ in pts], [st.mean for _, st in pts],
                            [np.nan_to_num(uncertainty(st)) for _, st in pts], fmt="o-", color=colours[label],
                            label=label, ms=4, capsize=2)
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
<code>thermocg/report/claims.py</code>; a model trained with several seeds enters as its mean over seeds.</p>
{_claims(claims)}</section>
<section id="force-errors"><h2>Force errors on held-out reference frames</h2>
<p>Mean squared error against the mapped forces, (kcal/mol/Å)², ± standard error (over frames with one
seed; over seeds with several, whose number and spread follow); "excess" is over fm-each at that temperature
(the best a model trained there does, averaged over its seeds; THEORY.md §8).</p>{_table(res)}</section>
<section id="error-vs-temperature"><h2>Errors against temperature</h2>{img('error-vs-temperature', 'errors vs T')}
</section>
<section id="structure"><h2>Structure</h2>{img('rdf', 'RDF overlays')}{img('adf', 'ADF overlays')}{_numbers(res)}
</section>
<section id="dynamics"><h2>Dynamics</h2><p>D from NVE segments (Einstein fit; no finite-size correction,
the Yeh-Hummer term is in results.json).</p>{img('dynamics', 'diffusion')}</section>
{_mixture(res)}
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
    claims = assess(res, convergence_summary(config), reference_check(config), config.targets.method)
    page = render(res, claims, json.dumps(config_json, indent=1), versions, images)
    atomic_write_text(stage.path / "report.html", page)
    facts = provenance(config)
    atomic_write_text(stage.path / "results.md", results_markdown(res, claims, facts, [f"{n}.png" for n in images]))
    atomic_write_text(stage.path / "summary.json", dumps(summary_json(res, claims, facts), indent=1))
    outputs = {"report": ["report.html", "results.md", "summary.json"],
               "figures": [f"{name}.png" for name in images]}
    return stage.write_manifest(True, config_json, outputs,
                                {"sections": list(SECTIONS), "claims": {str(c.number): c.verdict for c in claims}},
                                {"html": "report.html", "markdown": "results.md", "summary": "summary.json",
                                 "figures": outputs["figures"]})


def convergence_summary(config: Config) -> dict | None:
    """The variants of ``bench/convergence.py``'s summary for this run (claim 4), or None when
    it has not been run. Not a stage: after a new convergence run, rebuild the report with
    ``thermocg report --force``."""
    path = config.run_dir / "convergence" / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())["variants"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataFormatError(f"{path}: not a summary of bench/convergence.py ({err!r}); run it again") from err


def reference_check(config: Config) -> dict | None:
    """``bench/reference_check.py``'s output for this run (``<run>/reference_check.json``, claim
    5), or None when it has not been run. Like the convergence summary: rebuild the report
    with ``thermocg report --force`` after a new check."""
    path = config.run_dir / "reference_check.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        data["yeh_hummer_fit"], data["published"]  # noqa: B018 - the keys claim 5 reads
        return data
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataFormatError(f"{path}: not an output of bench/reference_check.py ({err!r}); run it again") from err


def provenance(config: Config) -> dict:
    """What made this run: command, code (version and git commit, when thermocg runs from a
    checkout), machine, date, and each stage's wall time (over every run that worked on it)."""
    import datetime
    import os
    import subprocess
    import sys

    from thermocg import pipeline

    source = Path(__file__).resolve().parents[1]
    commit = "unknown (not a git checkout)"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            commit = head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
    try:
        import torch
        if torch.cuda.is_available():
            machine += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    walls = []
    for stage in pipeline.STAGES:
        if stage.name == STAGE:
            continue
        m = stage.stage_dir(config).read_manifest() or {}
        wall = m.get("wall_s")
        walls.append(f"{stage.name} {wall / 60:.1f} min" if isinstance(wall, (int, float)) else f"{stage.name} n/a")
    argv = sys.argv
    command = " ".join(["thermocg", *argv[1:]]) if argv and Path(argv[0]).name in ("thermocg", "main.py") else "?"
    return {"command": command, "config": str(config.source), "thermocg": __version__, "commit": commit,
            "machine": machine, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall time per stage": ", ".join(walls)}


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's line for a finished report stage: where the page is."""
    return [f"report: {Path(directory) / manifest['record']['html']}"]
