"""The targets stage on the tiny reference run: files, formulas, provenance, local vs global."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import run_stage, stage_path, tiny_config
from thermocg.errors import ConfigError, DataFormatError
from thermocg.frames import read_reference
from thermocg.io.h5md import read_h5md
from thermocg.mapping import map_reference
from thermocg.targets.baselines import PairBasis, fit_force_and_energy


def test_outputs_and_provenance(tiny_targets):
    config, manifest = tiny_targets
    out = stage_path(config, "targets")
    assert manifest["complete"] and set(manifest["outputs"]) == {"T300K", "T500K", "convergence"}
    d = read_h5md(out / "T300K.h5md")
    assert d.attrs["source_file"] == "T300K.h5md"
    assert d.attrs["source_config_hash"] == config.section_hash("reference")
    assert d.attrs["r_e_A"] == config.targets.r_e_A
    assert d.elements["thermocg/t1"].shape == (config.reference.n_frames, 64, 3)
    conv = json.loads((out / "convergence.json").read_text())
    assert [row["r_e_A"] for row in conv["T300K"]] == list(config.targets.r_e_check_A)
    assert not list(out.glob(".*")), "temporary files left behind"


def test_stored_targets_follow_the_estimators(tiny_targets):
    config, _ = tiny_targets
    d = read_h5md(stage_path(config, "targets") / "T500K.h5md").elements
    f, f0 = d["particles/all/force"], d["thermocg/f0"]
    du = (d["thermocg/u_loc"] - d["thermocg/c"])[..., None]
    np.testing.assert_allclose(d["thermocg/t1"], -(f - f0) * du, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(d["thermocg/t2"], (f - f0) * (du**2 - d["thermocg/v"][..., None]), rtol=1e-12,
                               atol=1e-7)
    dg = (d["thermocg/u_global"] - d["thermocg/c_global"])[:, None, None]
    np.testing.assert_allclose(d["thermocg/t1_global"], -(f - f0) * dg, rtol=1e-12, atol=1e-9)
    # mapped forces and positions are those of the reference frames
    cg = map_reference(read_reference(stage_path(config, "reference") / "T500K.h5md"))
    np.testing.assert_allclose(f, cg.forces)
    np.testing.assert_allclose(d["particles/all/position"], cg.positions)


def test_local_and_global_order1_targets_agree_in_expectation(tiny_targets):
    """E[t1_loc - t1_glob | R] = Cov(f, u_far) + e d_far: zero when the force does not feel the
    energies beyond r_e and the baselines are fair. Test: regress the difference D with the
    pairwise force model (cross-fitted), and check that the fitted function's overlap with D,
    mean(p D), is zero within 4.5 standard errors (blocks of frames). For scale, the same
    statistic for t1 itself must be clearly positive (the test can tell signal from none)."""
    config, _ = tiny_targets
    d = read_h5md(stage_path(config, "targets") / "T300K.h5md")
    el = d.elements
    pos, box = el["particles/all/position"], el["particles/all/box/edges"]
    basis = PairBasis(cutoff_A=6.0, n_basis=12)

    def overlap(target):
        p, _, _ = fit_force_and_energy(pos, box, target, el["thermocg/bead_energy"], basis, folds=5)
        per_frame = np.mean(p * target, axis=(1, 2))
        blocks = np.array([b.mean() for b in np.array_split(per_frame, 8)])
        return per_frame.mean(), blocks.std(ddof=1) / np.sqrt(len(blocks))

    diff_mean, diff_se = overlap(el["thermocg/t1"] - el["thermocg/t1_global"])
    assert abs(diff_mean) < 4.5 * diff_se, (diff_mean, diff_se)
    t1_mean, t1_se = overlap(el["thermocg/t1"])
    assert t1_mean > 0


def test_rerun_is_up_to_date_and_changes_are_refused(tiny_targets):
    config, manifest = tiny_targets
    assert run_stage("targets", config, show_progress=False) == manifest
    changed = config.model_copy(update={"targets": config.targets.model_copy(update={"r_e_A": 5.0})})
    with pytest.raises(ConfigError, match=r"different \[reference\]/\[targets\] config"):
        run_stage("targets", changed, show_progress=False)


def test_mismatched_frames_are_refused(tiny_targets):
    import dataclasses
    from thermocg.targets.stage import check_frames
    config, _ = tiny_targets
    source = stage_path(config, "reference") / "T300K.h5md"
    cg = map_reference(read_reference(source))
    check_frames(cg, config, source)  # the real thing passes
    with pytest.raises(DataFormatError, match="63 molecules, but the config has n_molecules = 64"):
        check_frames(dataclasses.replace(cg, positions=cg.positions[:, :63], bead_type=cg.bead_type[:63]), config,
                     source)
    with pytest.raises(DataFormatError, match="box edges"):
        check_frames(dataclasses.replace(cg, box=cg.box * 1.01), config, source)
    with pytest.raises(DataFormatError, match="not in temperatures_K"):
        check_frames(dataclasses.replace(cg, temperature_K=301.0), config, source)
    with pytest.raises(DataFormatError, match="3 frames, but the config has n_frames = 40"):
        check_frames(dataclasses.replace(cg, positions=cg.positions[:3]), config, source)
    box = cg.box.copy()
    box[5] = box[5] * 1.01  # only frame 5: the message shows that frame, not an equal first one
    with pytest.raises(DataFormatError, match=r"box edges \[.*\] Å in frame 5"):
        check_frames(dataclasses.replace(cg, box=box), config, source)


def test_missing_reference_is_a_clear_error(tmp_path):
    with pytest.raises(DataFormatError, match="no finished reference stage.*run `thermocg reference`"):
        run_stage("targets", tiny_config(tmp_path), show_progress=False)
