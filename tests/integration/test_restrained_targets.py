"""``[targets] method = "restrained"`` on the tiny reference run (issue 15): files in the
targets-file contract, with standard errors, the estimates consistent with their errors,
resume after an interruption, and training on them unchanged."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from thermocg.config import config_from_dict
from thermocg.io.records import TargetSet
from thermocg.models.stage import training_data
from thermocg.reference.stage import reference_dir
from thermocg.targets import restrained
from thermocg.targets.stage import run_targets, targets_dir

SETTINGS = {"method": "restrained", "restrained_configurations": 3, "restrained_samples": 60,
            "restrained_interval_fs": 10.0, "restrained_equilibration_ps": 0.2, "restrained_blocks": 5,
            "restraint_k": 1000.0}


def _restrained_config(tiny_reference, tmp_path, **changes):
    """The tiny config with restrained targets, in a run directory of its own that holds a copy of
    the tiny reference run (so the session's regression targets stay untouched)."""
    config, _ = tiny_reference
    data = config.model_dump(exclude={"source"})
    data["run"]["directory"] = str(tmp_path / "run")
    data["targets"].update(SETTINGS, **changes)
    new = config_from_dict(data, source=tmp_path / "config.toml")
    shutil.copytree(reference_dir(config), reference_dir(new))
    return new


@pytest.fixture(scope="module")
def restrained_run(tiny_reference, tmp_path_factory):
    config = _restrained_config(tiny_reference, tmp_path_factory.mktemp("restrained"))
    return config, run_targets(config, show_progress=False)


def test_files_keep_the_contract_and_carry_errors(restrained_run):
    config, manifest = restrained_run
    out = targets_dir(config)
    assert manifest["complete"] and set(manifest["outputs"]) == {"T300K", "T500K"}
    assert not list(out.glob(".*")), "resume state or temporary files left behind"
    for temp in config.reference.temperatures_K:
        tf = TargetSet.read(out).frames(temp)
        assert tf.positions.shape == (3, 64, 3) and tf.attrs["method"] == "restrained"
        for name in ("t0_se", "t1_se", "t2_se"):
            assert tf.targets[name].shape == (3, 64, 3) and np.all(tf.targets[name] > 0)
        # the order-0 target is the mean force at fixed R: far less noisy than one sample
        assert np.sqrt(np.mean(tf.targets["t0_se"] ** 2)) < 0.5 * np.sqrt(np.mean(tf.forces**2))
        # the baselines are the sample means themselves
        np.testing.assert_array_equal(tf.targets["f0"], tf.forces)
        np.testing.assert_array_equal(tf.targets["c"], tf.targets["u_loc"])
        # the summed per-molecule energies average to the mean total energy of each configuration
        np.testing.assert_allclose(tf.targets["bead_energy"].sum(axis=1), tf.potential_energy, rtol=1e-9)
        s = manifest["summary"][f"T{temp:g}K"]
        assert s["order0"]["snr_per_configuration"] > 3.0
        assert 0.005 < s["offset_rms_A"] < 0.05  # springs of 1000 kcal/mol/Å²: 0.024 Å at 300 K


def test_configurations_are_the_first_training_frames(restrained_run):
    config, _ = restrained_run
    ref = TargetSet.read(targets_dir(config)).frames(300.0)
    from thermocg.io.records import ReferenceRun
    cg = ReferenceRun.read(reference_dir(config)).cg_frames(300.0)
    np.testing.assert_array_equal(ref.step, cg.step[:3])
    np.testing.assert_allclose(ref.positions, cg.positions[:3], atol=1e-9)  # the springs' centres


def test_training_reads_them_unchanged(restrained_run):
    config, _ = restrained_run
    data, sources = training_data(TargetSet.read(targets_dir(config)), [300.0], 2)
    assert data.positions.shape == (3, 64, 3) and set(data.targets) == {0, 1, 2}
    assert sources == ["T300K.h5md"]


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
        run_targets(config, show_progress=False)
    assert len(list((targets_dir(config) / ".restrained").rglob("c*.npz"))) == 3
    calls.clear()
    monkeypatch.setattr(restrained, "sample_configuration", lambda task: (calls.append(task.index), real(task))[1])
    manifest = run_targets(config, show_progress=False)
    assert manifest["complete"] and len(calls) == 1  # the fourth configuration only
