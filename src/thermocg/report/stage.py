"""The report stage: one self-contained HTML page (figures inlined) plus the PNG figures.

Reads ``evaluate/results.json`` (and, for claims 4 and 5, ``convergence/summary.json`` and
``reference_check.json`` when ``bench/convergence.py`` and ``bench/reference_check.py`` have
been run on the study; ``exact_response.json``, the models against the exact mean force, from
``bench/restrained_response.py --out``), so a report can be rebuilt without recomputing anything. Sections: the models and their training temperatures, the force-error
table, error-vs-temperature curves (training temperatures marked), RDF and ADF
overlays per temperature, D(T) of CG and all-atom and their ratio, and the config
and versions that produced it. Outputs in ``<run.directory>/report/``::

    report.html    the page (PNG figures embedded as data URIs: one file to send)
    results.md     the numbers by model and temperature, the claims, provenance (markdown)
    summary.json   the same, machine-readable
    *.png          the figures as files

The parts: :mod:`~thermocg.report.series` (what the figures and tables show),
:mod:`~thermocg.report.figures`, :mod:`~thermocg.report.html` (the page),
:mod:`~thermocg.report.markdown` (results.md, summary.json), :mod:`~thermocg.report.claims`
(the paper's claims judged) and :mod:`~thermocg.report.provenance`.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from thermocg import __version__
from thermocg.io.strict import dumps
from thermocg.report.claims import assess
from thermocg.report.figures import figures, png
from thermocg.report.html import SECTIONS, render
from thermocg.report.markdown import results_markdown, summary_json
from thermocg.report.provenance import convergence_summary, exact_response, provenance, reference_check
from thermocg.stagedir import StageContext, StageResult, atomic_path, atomic_write_text


def run_report(ctx: StageContext) -> StageResult:
    """Write report.html, results.md, summary.json and the PNG figures from the evaluate stage's
    results."""
    import matplotlib.pyplot as plt

    config, res = ctx.config, ctx.record("evaluate")
    images = {}
    for name, fig in figures(res).items():
        images[name] = png(fig)
        plt.close(fig)
        with atomic_path(ctx.path / f"{name}.png") as tmp:
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
    page = render(res, claims, json.dumps(ctx.config_json, indent=1), versions, images)
    atomic_write_text(ctx.path / "report.html", page)
    facts, exact = provenance(config, ctx.walls), exact_response(config)
    atomic_write_text(ctx.path / "results.md", results_markdown(res, claims, facts, [f"{n}.png" for n in images],
                                                                exact))
    atomic_write_text(ctx.path / "summary.json", dumps(summary_json(res, claims, facts, exact), indent=1))
    outputs = {"report": ["report.html", "results.md", "summary.json"],
               "figures": [f"{name}.png" for name in images]}
    return StageResult(outputs, {"sections": list(SECTIONS), "claims": {str(c.number): c.verdict for c in claims}},
                       {"html": "report.html", "markdown": "results.md", "summary": "summary.json",
                        "figures": outputs["figures"]})


def describe(manifest: dict, directory: Path) -> list[str]:
    """The CLI's line for a finished report stage: where the page is."""
    return [f"report: {Path(directory) / manifest['record']['html']}"]
