"""``[targets] method = "restrained"`` on the tiny reference run (issue 15): files in the
targets-file contract, with standard errors, the estimates consistent with their errors,
resume after an interruption, and training on them unchanged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from thermocg.config import config_from_dict
from thermocg.errors import ConfigError
from thermocg.io.records import ReferenceRun
from thermocg.io.records import TargetSet
from thermocg.models.stage import training_data
from thermocg.targets import restrained
from tests.helpers import run_stage, stage_path

# slow: restrained sampling of the tiny run: ~27 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

SETTINGS = {"method": "restrained", "restrained_configurations": 3, "restrained_samples": 60,
            "restrained_interval_fs": 10.0, "restrained_equilibration_ps": 0.2, "restrained_blocks": 5,
            "restraint_k": 1000.0}


def _restrained_config(tiny_reference, tmp_path, train=None, **changes):
    """The tiny config with restrained targets, in a run directory of its own that holds a copy of
    the tiny reference run (so the session's regression targets stay untouched)."""
    config, _ = tiny_reference
    data = config.model_dump(exclude={"source"})
    data["run"]["directory"] = str(tmp_path / "run")
    data["targets"].update(SETTINGS, **changes)
    data["train"].update(train or {})
    new = config_from_dict(data, source=tmp_path / "config.toml")
    shutil.copytree(stage_path(config, "reference"), stage_path(new, "reference"))
    return new


@pytest.fixture(scope="module")
def restrained_run(tiny_reference, tmp_path_factory):
    # with trf2-regression the T0 file carries the regression targets too (issue 29)
    config = _restrained_config(tiny_reference, tmp_path_factory.mktemp("restrained"),
                                train={"variants": [*tiny_reference[0].train.variants, "trf2-regression"]})
    return config, run_stage("targets", config, show_progress=False)


def test_files_keep_the_contract_and_carry_errors(restrained_run):
    """Every frame keeps its mapped forces (order 0, as with regression targets); the first
    three carry restrained thermal targets with standard errors, the rest none (NaN)."""
    config, manifest = restrained_run
    out = stage_path(config, "targets")
    assert manifest["complete"] and set(manifest["outputs"]) == {"T300K", "T500K"}
    assert not list(out.glob(".*")), "resume state or temporary files left behind"
    for temp in config.reference.temperatures_K:
        tf = TargetSet.read(out).frames(temp)
        cg = ReferenceRun.read(stage_path(config, "reference")).cg_frames(temp)
        assert tf.attrs["method"] == "restrained"
        np.testing.assert_array_equal(tf.forces, cg.forces)  # order 0: the frames' mapped forces
        np.testing.assert_array_equal(tf.positions, cg.positions)
        for name in ("t1", "t2", "f0", "t0_se", "t1_se", "t2_se"):
            assert np.all(np.isfinite(tf.targets[name][:3])) and np.all(np.isnan(tf.targets[name][3:])), name
        for name in ("t0_se", "t1_se", "t2_se"):
            assert np.all(tf.targets[name][:3] > 0)
        # the conditional mean force is far less noisy than one sample's mapped force
        assert np.sqrt(np.mean(tf.targets["t0_se"][:3] ** 2)) < 0.5 * np.sqrt(np.mean(tf.forces**2))
        # ... and the frame's own mapped force is one draw about it: within a few thermal spreads
        assert np.sqrt(np.mean((tf.forces[:3] - tf.targets["f0"][:3]) ** 2)) < 2 * np.sqrt(np.mean(tf.forces**2))
        # the baselines are the sample means themselves
        np.testing.assert_array_equal(tf.targets["c"][:3], tf.targets["u_loc"][:3])
        # the per-molecule energies of every frame sum to its potential energy (em reads them)
        np.testing.assert_allclose(tf.targets["bead_energy"].sum(axis=1), tf.potential_energy, rtol=1e-6)
        s = manifest["summary"][f"T{temp:g}K"]
        assert s["configurations"] == 3 and s["frames"] == len(cg.positions)
        assert s["order0"]["snr_per_configuration"] > 3.0
        assert 0.005 < s["offset_rms_A"] < 0.05  # springs of 1000 kcal/mol/Å²: 0.024 Å at 300 K
        assert s["order1"]["offset_correction_rms"] == 0.0  # the offsets regression is off by default


def test_rows_must_be_the_first_frames(restrained_run):
    """restrained_frames pairs the sampled configurations with the first frames, and refuses a
    configuration whose step or springs' centres are not its frame's."""
    config, _ = restrained_run
    cg = ReferenceRun.read(stage_path(config, "reference")).cg_frames(300.0)
    n = cg.positions.shape[1]
    row = {"step": cg.step[0], "centres": cg.positions[0] + cg.box[0], "box": cg.box[0],  # one image away: fine
           **{k: np.zeros((n, 3)) for k in ("F", "F1", "F2", "F_se", "F1_se", "F2_se", "F_raw", "F1_raw", "F2_raw",
                                            "F1_global", "F2_global")},
           **{k: np.zeros(n) for k in ("U", "v", "bead_energy")}, "U_global": 0.0, "offset_rms": 0.01}
    assert restrained.restrained_frames(cg, [row])["summary"]["configurations"] == 1
    with pytest.raises(ValueError, match="step"):
        restrained.restrained_frames(cg, [{**row, "step": cg.step[1]}])
    moved = row["centres"].copy()
    moved[5] += 0.1
    with pytest.raises(ValueError, match="centres"):
        restrained.restrained_frames(cg, [{**row, "centres": moved}])


def test_training_reads_the_sampled_frames_as_targets_and_the_rest_as_missing(restrained_run):
    config, _ = restrained_run
    data, sources = training_data(TargetSet.read(stage_path(config, "targets")), [300.0], 2)
    n = len(data.positions)
    assert set(data.targets) == {0, 1, 2} and set(data.weights) == {1, 2} and sources == ["T300K.h5md"]
    for k in (1, 2):
        assert np.all(data.weights[k][:3] == 1.0) and np.all(data.weights[k][3:] == 0.0)
        assert np.all(np.isfinite(data.targets[k]))
    ivar, _ = training_data(TargetSet.read(stage_path(config, "targets")), [300.0], 2, weighting="inverse-variance")
    se = TargetSet.read(stage_path(config, "targets")).frames(300.0).targets["t1_se"][:3]
    w = ivar.weights[1][:3]
    # inverse variance below the cap: the weight ratio of two components is their variance ratio
    free = w < w.max()
    i, j = np.argwhere(free)[:2]
    assert w[tuple(i)] / w[tuple(j)] == pytest.approx((se[tuple(j)] / se[tuple(i)]) ** 2, rel=1e-9)
    assert np.all(ivar.weights[1][3:] == 0.0) and n == 40


def test_the_regression_variants_read_the_papers_targets_and_w0_can_read_the_mean_forces(restrained_run,
                                                                                        tiny_targets):
    """Issue 29. trf2-regression's thermal targets in a restrained run are exactly those of a
    regression run of the same frames (T0 only); ``w0_targets = "restrained"`` fits W0 to the
    conditional mean force where a configuration was sampled and to the mapped force elsewhere."""
    config, manifest = restrained_run
    regression_config, _ = tiny_targets
    assert regression_config.targets.method == "regression"
    targets = TargetSet.read(stage_path(config, "targets"))
    paper = TargetSet.read(stage_path(regression_config, "targets")).frames(300.0)
    t0 = targets.frames(300.0)
    np.testing.assert_array_equal(t0.targets["t1_regression"], paper.targets["t1"])
    np.testing.assert_array_equal(t0.targets["t2_regression"], paper.targets["t2"])
    assert "t1_regression" not in targets.frames(500.0).targets  # T0 only
    assert manifest["summary"]["T300K"]["regression"]["frames"] == len(paper.positions)
    data, _ = training_data(targets, [300.0], 2, thermal="regression")
    np.testing.assert_array_equal(data.targets[1], paper.targets["t1"])
    assert not data.weights  # every frame has a regression target
    with pytest.raises(ConfigError, match="no regression thermal targets"):
        training_data(targets, [500.0], 1, thermal="regression")
    mapped, _ = training_data(targets, [300.0], 0)
    mean, _ = training_data(targets, [300.0], 0, w0="restrained")
    np.testing.assert_array_equal(mean.targets[0][:3], t0.targets["f0"][:3])
    np.testing.assert_array_equal(mean.targets[0][3:], mapped.targets[0][3:])
    np.testing.assert_array_equal(mapped.targets[0], t0.forces)
    with pytest.raises(ConfigError, match="w0_targets = 'restrained' needs restrained targets"):
        training_data(TargetSet.read(stage_path(regression_config, "targets")), [300.0], 0, w0="restrained")


def test_the_thermal_heads_train_on_the_sampled_configurations_only(restrained_run):
    """trf2: W0 on every training frame (as fm), the thermal heads on the 3 sampled ones."""
    from thermocg.models.stage import fit_variant, training_frames

    config, _ = restrained_run
    data, _ = training_data(TargetSet.read(stage_path(config, "targets")), [300.0], 2, frames=training_frames(config))
    _, hist = fit_variant(config, "trf2", 2, 300.0, data, show_progress=False, seed=3)
    assert len(hist["trf2-W0"]["train_frames"]) + len(hist["trf2-W0"]["valid_frames"]) == len(data.positions)
    assert sorted(hist["trf2-thermal"]["train_frames"] + hist["trf2-thermal"]["valid_frames"]) == [0, 1, 2]
    # ... for as many optimiser steps as a phase over every frame: more epochs than [train] max_epochs
    assert len(hist["trf2-thermal"]["valid"]) > config.train.max_epochs
    # trf-multi fits every order jointly at both temperatures, the unsampled frames' thermal
    # targets weighing nothing: its loss must fall from the untrained network's
    both, _ = training_data(TargetSet.read(stage_path(config, "targets")), [300.0, 500.0], 2,
                            frames=training_frames(config))
    _, hist = fit_variant(config, "trf-multi", 2, 300.0, both, show_progress=False, seed=3)
    assert np.isfinite(hist["trf-multi"]["best_valid"])
    assert hist["trf-multi"]["best_valid"] < hist["trf-multi"]["valid_before"]


def test_only_the_named_temperatures_are_sampled(tiny_reference, tmp_path):
    """restrained_temperatures_K = [300]: T500K keeps order 0 only; trf-multi, which needs
    thermal targets at 500 K too, is refused by the config. (Here with the springs' offsets
    regressed out, within 3 Å.)"""
    with pytest.raises(ConfigError, match="trf-multi, which needs thermal targets at 500 K"):
        _restrained_config(tiny_reference, tmp_path / "a", restrained_temperatures_K=[300.0],
                           restrained_configurations=2, restrained_samples=30, restrained_blocks=3)
    config = _restrained_config(tiny_reference, tmp_path / "b", restrained_temperatures_K=[300.0],
                                restrained_configurations=2, restrained_samples=60, restrained_blocks=5,
                                restrained_offset_radius_A=3.0, train={"variants": ["fm", "trf2"]})
    manifest = run_stage("targets", config, show_progress=False)
    assert manifest["summary"]["T500K"]["configurations"] == 0
    # with the offsets regression on, the estimates move off the plain ones (and stay finite)
    s = manifest["summary"]["T300K"]
    assert s["order1"]["offset_correction_rms"] > 0 and np.isfinite(s["order1"]["signal_rms"])
    tf = TargetSet.read(stage_path(config, "targets")).frames(500.0)
    assert np.all(np.isnan(tf.targets["t1"])) and np.all(np.isfinite(tf.forces))
    with pytest.raises(ConfigError, match="no order-1 targets at"):
        training_data(TargetSet.read(stage_path(config, "targets")), [500.0], 1)


def test_an_interrupted_run_samples_only_what_is_missing(tiny_reference, tmp_path, monkeypatch):
    config = _restrained_config(tiny_reference, tmp_path, restrained_configurations=2, restrained_samples=30,
                                restrained_blocks=3)
    real, calls = restrained.sample_configuration, []

    def dies_after_three(task):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the stage
        calls.append((task.temperature_K, task.index))
        return real(task)

    monkeypatch.setattr(restrained, "sample_configuration", dies_after_three)
    config = config.model_copy(update={"run": config.run.model_copy(update={"processes": 1})})
    with pytest.raises(KeyboardInterrupt):
        run_stage("targets", config, show_progress=False)
    assert len(list((stage_path(config, "targets") / ".restrained").rglob("c*.npz"))) == 3
    calls.clear()
    monkeypatch.setattr(restrained, "sample_configuration", lambda task: (calls.append(task.index), real(task))[1])
    manifest = run_stage("targets", config, show_progress=False)
    assert manifest["complete"] and len(calls) == 1  # the fourth configuration only


def test_one_sampling_reduced_at_several_radii(tiny_reference, tmp_path, monkeypatch):
    """sample_configuration(task, *more_radii): the same samples reduced at another local radius
    equal that radius's own reduction of them (the sampler is held fixed: one real sampling
    served to every call), the mean force is the same at both radii and the order-1 estimate is
    not; tasks that differ in anything else are refused."""
    from dataclasses import replace

    from thermocg.reference.restrained import RestrainedSampler

    config, _ = tiny_reference
    reference = ReferenceRun.read(stage_path(config, "reference"))
    frames = reference.frames(300.0)
    task = restrained.ConfigurationTask(
        temperature_K=300.0, index=0, positions_A=frames.positions[0], box_A=frames.box[0], step=int(frames.step[0]),
        system_xml=(reference.directory / "system.xml").read_text(), molecule_index=frames.molecule_index,
        r_e_A=6.5, offset_radius_A=None, restraint_k=1000.0, timestep_fs=config.reference.timestep_fs,
        friction_per_ps=config.reference.friction_per_ps, equilibration_ps=0.1, samples=30, interval_fs=10.0,
        blocks=3, seed=11, device="cpu", threads=1, out=tmp_path / "a.npz", key="a")
    samples = RestrainedSampler(task.system_xml, task.molecule_index, 300.0, 1000.0, task.timestep_fs,
                                task.friction_per_ps, "cpu", 1).sample(task.positions_A, task.box_A, 100.0, 30,
                                                                       10.0, 11, "test")

    class Fixed:
        def sample(self, *args):
            return samples

    handle = (task.temperature_K, task.restraint_k, task.timestep_fs, task.friction_per_ps, task.system_xml)
    monkeypatch.setattr(restrained, "_SAMPLERS", {handle: Fixed()})
    near = replace(task, r_e_A=4.0, out=tmp_path / "b.npz", key="b")
    restrained.sample_configuration(task, near)
    a, b = (restrained.load_configuration(tmp_path / f"{n}.npz", n) for n in "ab")
    np.testing.assert_array_equal(a["F"], b["F"])
    assert not np.allclose(a["F1"], b["F1"])
    restrained.sample_configuration(replace(near, out=tmp_path / "c.npz", key="c"))
    alone = restrained.load_configuration(tmp_path / "c.npz", "c")
    for name in ("F1", "F1_se", "F2", "U", "v"):
        np.testing.assert_array_equal(alone[name], b[name])
    with pytest.raises(ValueError, match=r"differ in \['seed'\]"):
        restrained.sample_configuration(task, replace(near, seed=12))
