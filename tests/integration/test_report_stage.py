"""The report stage on its own, from a Results record made here: the page shows exactly the
numbers it was given (tables and plotted points), handles a temperature without reference
data, and needs a finished evaluate stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thermocg import pipeline
from thermocg.config import config_from_dict
from thermocg.errors import DataFormatError
from thermocg.io.results import Curve, Estimate, Measures, Results, TemperatureResults
from tests.helpers import run_stage, stage_path

# slow: the report and the CLI on the evaluated tiny run: ~12 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

R = np.linspace(2.0, 6.0, 41)
TH = np.linspace(0.0, np.pi, 30)


def _measures(shift, mse=None, excess=None, d=None, ratio=None):
    return Measures(rdf=Curve(R, 1 + np.exp(-(R - 2.8 - shift) ** 2)), adf=Curve(TH, np.sin(TH) / 2),
                    s2_kB=Estimate(-3.1 - shift, 0.1), rdf_peak_position=Estimate(2.8 + shift, 0.01),
                    rdf_peak_height=Estimate(2.0, 0.02), adf_peak_position=Estimate(1.57, 0.01),
                    adf_peak_height=Estimate(0.5, 0.01), rdf_iae=Estimate(0.4 + shift, 0.05),
                    adf_iae=Estimate(0.2, 0.01), mean_kinetic_temperature_K=300.0, D_A2_per_ps=d,
                    D_ratio_CG_over_FG=ratio, force_mse=mse, force_mse_excess=excess,
                    rdf_iae_floor=0.1 + shift, adf_iae_floor=0.05)


@pytest.fixture
def evaluated(tmp_path):
    config = config_from_dict({"run": {"directory": str(tmp_path / "run")},
                               "reference": {"n_molecules": 64, "temperatures_K": [300.0, 500.0], "cutoff_A": 6.0},
                               "targets": {"baseline_cutoff_A": 6.0}, "evaluate": {"rdf_r_max_A": 6.0}},
                              source=tmp_path / "c.toml")
    ref = Measures(rdf=Curve(R, 1 + np.exp(-(R - 2.8) ** 2)), adf=Curve(TH, np.sin(TH) / 2),
                   D_A2_per_ps=Estimate(0.24, 0.01))
    res = Results(
        temperatures_K=(300.0, 420.0), models=("fm", "trf-multi"), T0_K=300.0,
        training_temperatures_K={"fm": (300.0,), "trf-multi": (250.0, 400.0)}, variants={"fm": "fm"},
        by_temperature={
            300.0: TemperatureResults(300.0, ref, {
                "fm": _measures(0.0, Estimate(12.4, 0.3), 0.11, Estimate(1.9, 0.1), Estimate(7.9, 0.5)),
                "trf-multi": _measures(0.1, Estimate(12.2, 0.3), -0.09)}),
            420.0: TemperatureResults(420.0, None, {"fm": _measures(0.2)})})
    stage = pipeline.stage("evaluate").stage_dir(config)
    stage.path.mkdir(parents=True)
    res.write(stage.path / Results.FILE)
    stage.write_manifest(True, {}, {"results": [Results.FILE]}, {}, {"results": Results.FILE})
    return config, res


def test_the_page_shows_the_numbers_it_was_given(evaluated):
    from thermocg.report.html import SECTIONS

    config, _ = evaluated
    manifest = run_stage("report", config, show_progress=False)
    page = (stage_path(config, "report") / "report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in page
    assert "<b>trf-multi</b>: trained at 250, 400 K" in page and "T0 = 300 K" in page
    assert "<th>300 K</th><th>420 K</th>" in page  # temperatures as numbers, not file labels
    assert "12.4 ± 0.3<br><small>excess +0.11</small>" in page
    assert "12.2 ± 0.3<br><small>excess -0.09</small>" in page
    assert "<td>300 K</td><td>fm</td><td>0.4 ± 0.05</td>" in page
    assert "<td>420 K</td><td>fm</td><td>0.6 ± 0.05</td>" in page  # no reference there: still reported
    assert page.count('src="data:image/png;base64,') == 4
    assert manifest["record"] == {"html": "report.html", "markdown": "results.md", "summary": "summary.json",
                                  "figures": manifest["outputs"]["figures"]}
    md = (stage_path(config, "report") / "results.md").read_text()
    assert "| fm | 12.4 ± 0.3* | – |" in md  # force MSE: trained at 300 K (*), none held out at 420 K
    assert "| trf-multi | 0.5 ± 0.05 | – |" in md  # RDF IAE 0.4 + 0.1
    assert "| trf-multi | 0.2 | – |" in md and "| fm | 0.1* | 0.3 |" in md  # the RDF IAE's floor, 0.1 + shift
    assert "| **all-atom** | 0.24 ± 0.01 | – |" in md and "| fm | 1.9 ± 0.1* | – |" in md  # D
    summary = json.loads((stage_path(config, "report") / "summary.json").read_text())
    assert summary["by_temperature"]["T300K"]["models"]["fm"]["force_mse"] == {
        "mean": 12.4, "seed_spread": None, "within_run_error": 0.3, "n_seeds": 1}
    assert summary["by_temperature"]["T420K"]["models"]["fm"]["rdf_iae_floor"]["mean"] == pytest.approx(0.3)
    assert summary["by_temperature"]["T300K"]["models"]["trf-multi"]["adf_iae_floor"]["mean"] == 0.05
    assert summary["by_temperature"]["T420K"]["reference"] is None
    assert [c["verdict"] for c in summary["claims"]] == ["not tested"] * 5  # no trf2, em: nothing to answer
    assert run_stage("report", config, show_progress=False) == manifest  # up to date


def test_the_figures_plot_the_given_values(evaluated):
    from thermocg.report.figures import figures

    _, res = evaluated
    figs = figures(res)
    excess, rdf_iae, _ = figs["error-vs-temperature"].axes
    def plotted(ax):  # series drawn with error bars: label -> data line
        return {c.get_label(): c.lines[0] for c in ax.containers}

    points = {label: (list(line.get_xdata()), list(line.get_ydata())) for label, line in plotted(excess).items()}
    assert points == {"fm": ([300.0], [0.11]), "trf-multi": ([300.0], [-0.09])}
    fm_iae = plotted(rdf_iae)["fm"]
    np.testing.assert_allclose(np.asarray(fm_iae.get_xdata(), float), [300.0, 420.0])
    np.testing.assert_allclose(np.asarray(fm_iae.get_ydata(), float), [0.4, 0.6])
    # the noise floor as a band from 0: the mean over the models simulated at each temperature
    band = next(c for c in rdf_iae.collections if c.get_label() == "noise floor")
    top = {round(float(x), 6): float(y) for x, y in band.get_paths()[0].vertices if y > 0}
    assert top == pytest.approx({300.0: (0.1 + 0.2) / 2, 420.0: 0.3})
    d_axis, ratio_axis = figs["dynamics"].axes
    assert [t.get_text() for t in d_axis.get_legend().get_texts()] == ["all-atom", "fm"]
    titles = [ax.get_title() for ax in figs["rdf"].axes if ax.get_title()]
    assert titles == ["300 K", "420 K"]


def test_needs_a_finished_evaluation(tmp_path):
    
    config = config_from_dict({"run": {"directory": str(tmp_path / "empty")}})
    with pytest.raises(DataFormatError, match="run `thermocg evaluate` first"):
        run_stage("report", config, show_progress=False)


def test_cli_prints_only_thermocg_lines(evaluated, tmp_path):
    """`thermocg report` in a fresh process: its own lines, not the notes other libraries log
    when imported (MDAnalysis' netCDF4 note, via hippynn; those appear with --debug)."""
    import subprocess
    import sys

    config, _ = evaluated
    (tmp_path / "c.toml").write_text(f'[run]\ndirectory = "{config.run_dir}"\n'
                                     '[reference]\nn_molecules = 64\ntemperatures_K = [300.0, 500.0]\ncutoff_A = 6.0\n'
                                     '[targets]\nbaseline_cutoff_A = 6.0\n[evaluate]\nrdf_r_max_A = 6.0\n')
    out = subprocess.run([sys.executable, "-m", "thermocg.cli.main", "report", str(tmp_path / "c.toml"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"thermocg: report: {config.run_dir / 'report' / 'report.html'}"], lines

