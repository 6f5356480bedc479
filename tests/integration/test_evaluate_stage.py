"""The evaluate stage on the tiny run: every model and temperature gets force errors on the
held-out frames, structure and dynamics against the reference, with uncertainties; the
same analysis of the reference against itself gives zero; fm-each is its own floor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thermocg.errors import DataFormatError
from thermocg.evaluate.stage import Structure
from thermocg.frames import read_reference
from thermocg.mapping import map_reference
from tests.helpers import run_stage, stage_path, with_simulate

# slow: simulates and evaluates the tiny models: ~70 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

SHORT = dict(equilibration_ps=0.02, n_frames=4, frame_interval_ps=0.02, timestep_fs=2.0,
             nve={"n_segments": 2, "length_ps": 0.1, "frame_interval_fs": 10.0, "timestep_fs": 2.0})


@pytest.fixture(scope="module")
def evaluated(tiny_trained, tmp_path_factory):
    config = with_simulate(tiny_trained[0], tmp_path_factory.mktemp("eval"), **SHORT)
    run_stage("simulate", config, show_progress=False)
    manifest = run_stage("evaluate", config, show_progress=False)
    return config, manifest, json.loads((stage_path(config, "evaluate") / "results.json").read_text())


def test_every_model_and_temperature_has_its_numbers(evaluated):
    config, manifest, res = evaluated
    assert manifest["complete"] and res["temperatures_K"] == [300.0, 500.0]
    assert set(res["models"]) == {"fm", "trf2", "trf-multi", "em", "fm-each-T300K", "fm-each-T500K"}
    for label in ("T300K", "T500K"):
        entry = res["by_temperature"][label]
        ref = entry["reference"]
        assert len(ref["rdf"]["g"]) == 60 and ref["D_A2_per_ps"]["value"] > 0 and ref["segments"] == 1
        for name, m in entry["models"].items():
            assert m["force_mse"]["value"] > 0 and np.isfinite(m["force_mse"]["error"])
            if "rdf_iae" in m:  # simulated here
                for key in ("rdf_iae", "adf_iae", "rdf_peak_position", "s2_kB", "D_A2_per_ps", "D_ratio_CG_over_FG"):
                    assert np.isfinite(m[key]["value"]), (label, name, key)
                assert m["rdf_iae"]["error"] > 0
                for key in ("rdf", "adf"):  # the noise floor: each half against the other, and the pair's
                    h_m, h_ref = m[f"{key}_halves_iae"], ref[f"{key}_halves_iae"]
                    assert h_m > 0 and h_ref > 0
                    assert m[f"{key}_iae_floor"] == pytest.approx(np.hypot(h_m, h_ref) / 2, rel=1e-12)
        # fm-each at its own temperature is the floor the excess is measured from
        assert entry["models"][f"fm-each-{label}"]["force_mse_excess"] == 0.0
        # fm-each-T300K is simulated only at 300 K, but its force error is known at both
        assert ("rdf_iae" in entry["models"]["fm-each-T300K"]) == (label == "T300K")
    # the 300 K-trained fm model has no temperature dependence: its force errors at 300 K and
    # 500 K come from the same function
    assert res["training_temperatures_K"]["trf-multi"] == [300.0, 500.0]


def test_reference_against_itself_is_zero(evaluated):
    config, _, res = evaluated
    cg = map_reference(read_reference(stage_path(config, "reference") / "T300K.h5md"))
    s = Structure(config, cg.positions, cg.box).summary(Structure(config, cg.positions, cg.box))
    assert s["rdf_iae"]["value"] == 0.0 and s["adf_iae"]["value"] == 0.0
    ref = res["by_temperature"]["T300K"]["reference"]
    assert s["s2_kB"]["value"] == pytest.approx(ref["s2_kB"]["value"], rel=1e-12)
    # water beads: a structured liquid has s2 < 0; the first RDF peak near 2.8 Å
    assert s["s2_kB"]["value"] < 0
    assert 2.5 < s["rdf_peak_position"]["value"] < 3.1


def test_rerun_is_up_to_date_and_needs_simulations(evaluated, tiny_trained, tmp_path):
    config, manifest, _ = evaluated
    assert run_stage("evaluate", config, show_progress=False) == manifest
    with pytest.raises(DataFormatError, match="run `thermocg simulate` first"):
        run_stage("evaluate", with_simulate(tiny_trained[0], tmp_path, **SHORT), show_progress=False)


def test_report_has_every_section_and_its_images_decode(evaluated):
    """The page parses, has every section, and every figure is an embedded PNG that decodes
    (the page needs no other file). In a real browser: test_report_renders_in_headless_chromium."""
    import base64
    import io
    from html.parser import HTMLParser

    import matplotlib.image as mpimg

    from thermocg.report.html import DOCS_LINKS, DOCS_URL, SECTIONS

    config, _, _ = evaluated
    manifest = run_stage("report", config, show_progress=False)
    page = (stage_path(config, "report") / "report.html").read_text()

    class Collect(HTMLParser):
        ids, images, links = [], [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if "id" in a:
                self.ids.append(a["id"])
            if tag == "img":
                self.images.append(a["src"])
            if tag in ("link", "script", "iframe") or "src" in a and tag != "img":
                self.loads.append(a)
            if tag == "a" and "href" in a:
                self.links.append(a["href"])

    p = Collect()
    p.loads = []
    p.feed(page)
    assert set(SECTIONS) <= set(p.ids) and not p.loads
    assert set(p.links) == {DOCS_URL + target for target in DOCS_LINKS.values()}
    assert len(p.images) == 4
    for src in p.images:
        assert src.startswith("data:image/png;base64,")
        img = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0  # a drawn figure, not blank
    for name in manifest["outputs"]["figures"]:
        assert (stage_path(config, "report") / name).stat().st_size > 1000
    assert "fm-each-T300K" in page and "T0 = 300 K" in page


def test_report_without_fm_each_says_why_a_panel_is_empty(evaluated):
    """No fm-each models (the quick demo): the excess panel says there is nothing to show,
    the legend moves to a drawn panel, and matplotlib has nothing to warn about."""
    import copy
    import warnings

    from thermocg.io.results import Results
    from thermocg.report.figures import figures

    _, _, res = evaluated
    res = copy.deepcopy(res)
    res["models"] = [m for m in res["models"] if not m.startswith("fm-each")]
    for entry in res["by_temperature"].values():
        entry["models"] = {m: v for m, v in entry["models"].items() if not m.startswith("fm-each")}
        for v in entry["models"].values():
            v.pop("force_mse_excess", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figs = figures(Results.from_json(res))
    excess, rdf, _ = figs["error-vs-temperature"].axes
    assert not excess.lines and "no fm-each" in excess.texts[0].get_text()
    assert rdf.get_legend() is not None and rdf.lines


@pytest.mark.browser
def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    """Chromium, driven by Playwright, opens report.html from disk: no console error, page
    error or failed request; every section is laid out; every figure loaded with its size;
    the rendered page is not blank. Runs on request (``pytest -m browser``): it needs the
    ``browser`` extra and a Chromium (Debian: ``apt-get install chromium``)."""
    import os
    import shutil

    import matplotlib.image as mpimg
    from playwright.sync_api import sync_playwright

    from thermocg.report.html import SECTIONS

    exe = os.environ.get("THERMOCG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "needs Chromium: `apt-get install chromium`, or THERMOCG_CHROMIUM=/path/to/chrome"
    config, _, _ = evaluated
    run_stage("report", config, show_progress=False)
    problems = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
            page.goto((stage_path(config, "report") / "report.html").resolve().as_uri(), wait_until="load")
            images = page.evaluate("""Array.from(document.images).map(i => ({complete: i.complete,
                natural: [i.naturalWidth, i.naturalHeight], shown: i.getBoundingClientRect().width}))""")
            boxes = {s: page.locator(f"#{s}").bounding_box() for s in SECTIONS}
            title = page.title()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, problems
    assert "thermocg" in title.lower()
    assert len(images) == 4
    for im in images:
        assert im["complete"] and min(im["natural"]) > 100 and im["shown"] > 100, im
    for section, box in boxes.items():
        assert box is not None and box["height"] > 10 and box["width"] > 100, (section, box)
    tops = [boxes[s]["y"] for s in SECTIONS]
    assert tops == sorted(tops)  # laid out in order, one below the other
    shot = mpimg.imread(tmp_path / "report.png")
    assert shot.shape[0] > 900 and shot.std() > 0.01  # a long page with drawn content


def test_run_skips_every_stage_that_is_up_to_date(evaluated, caplog):
    """`thermocg run` on a finished run: every stage reports itself up to date and the
    report is (re)made from the evaluation alone."""
    import argparse
    import logging

    from thermocg.cli.main import run_verb
    
    config, manifest, _ = evaluated
    with caplog.at_level(logging.INFO):
        run_verb("run", config, argparse.Namespace(force=False, quiet=True))
    text = caplog.text
    for stage in ("reference", "targets", "train", "simulate", "evaluate"):
        assert f"{stage}: up to date" in text, stage
    assert (stage_path(config, "report") / "report.html").exists()


def test_time_scale_ratio_error_is_propagated_or_unknown():
    """D_CG/D_FG: relative errors add in quadrature (10 % and 7.5 % make 12.5 %); a D from one NVE
    segment has no error, and then the ratio's error is unknown, not the other D's alone."""
    from thermocg.evaluate.stage import _ratio

    r = _ratio({"value": 2.0, "error": 0.2}, {"value": 4.0, "error": 0.3})
    assert r["value"] == 0.5 and r["error"] == pytest.approx(0.5 * 0.125)
    one_segment = _ratio({"value": 2.0, "error": float("nan")}, {"value": 4.0, "error": 0.3})
    assert one_segment["value"] == 0.5 and np.isnan(one_segment["error"])


def test_a_mixture_with_one_solute_molecule_has_the_partials_it_can_have():
    """One solute bead among 60 solvent beads (infinite dilution): no solute-solute g(r) (one
    bead has no partner), solute-solvent and solvent-solvent partials; PDB residue names stay
    the type names when they fit in three characters, else T0, T1, ..."""
    from thermocg.config import config_from_dict
    from thermocg.simulate.batch import residue_names

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 20.0, (3, 61, 3))
    types = np.r_[[1], np.zeros(60, dtype=int)]
    s = Structure(config_from_dict({}), x, np.full((3, 3), 20.0), types, ("SOL", "LIG"))
    assert set(s.partial) == {"SOL-SOL", "SOL-LIG"}
    assert set(s.summary(s)["rdf_partial_iae"]) == {"SOL-SOL", "SOL-LIG"}
    assert residue_names(("MOH", "HOH")) == ["MOH", "HOH"]
    assert residue_names(("H2O", "CH4O")) == ["T0", "T1"]  # "CH4O" would be cut to "CH4"
    assert residue_names(("ABCD", "ABCE")) == ["T0", "T1"]
