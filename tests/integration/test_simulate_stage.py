"""The simulate stage on the tiny trained run: H5MD trajectories per model and temperature,
continuous (unwrapped) positions, an interrupted run that resumes to the identical
trajectory, up-to-date re-runs, and a failing run that names model, step and temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from thermocg.errors import ConfigError, DataFormatError, SimulationError
from thermocg.io.h5md import read_h5md
from thermocg.simulate import engine
from thermocg import pipeline
from thermocg.simulate.plan import simulation_jobs
from tests.helpers import run_stage, stage_path, with_simulate

# slow: CG MD of the tiny models, the distilled engine: ~27 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

SHORT = dict(equilibration_ps=0.02, n_frames=3, frame_interval_ps=0.02, timestep_fs=2.0,
             nve={"n_segments": 1, "length_ps": 0.04, "frame_interval_fs": 20.0, "timestep_fs": 2.0})


def _config(config, tmp_path, **simulate):
    return with_simulate(config, tmp_path, **{**SHORT, **simulate})


@pytest.fixture(scope="module")
def simulated(tiny_trained, tmp_path_factory):
    config, _ = tiny_trained
    c = _config(config, tmp_path_factory.mktemp("sim"), models=("fm", "trf2"), temperatures_K=(300.0, 420.0))
    return c, run_stage("simulate", c, show_progress=False)


def test_trajectories_per_model_and_temperature(simulated):
    config, manifest = simulated
    assert manifest["complete"]
    for model in ("fm", "trf2"):
        for label in ("T300K", "T420K"):
            d = read_h5md(stage_path(config, "simulate") / model / f"{label}.h5md")
            x = d.elements["particles/all/position"]
            assert x.shape == (3, 64, 3)
            assert d.attrs["model"] == model and d.attrs["ensemble"] == "NVT"
            assert float(d.attrs["temperature_K"]) == float(label[1:-1])
            assert np.all(np.isfinite(d.elements["observables/temperature"]))
            # unwrapped: 10 steps of 2 fs move a bead far less than a box edge
            assert np.abs(np.diff(x, axis=0)).max() < 2.0
            np.testing.assert_allclose(d.step, [20, 30, 40])
            nve = read_h5md(stage_path(config, "simulate") / model / f"{label}-nve00.h5md")
            assert nve.elements["observables/total_energy"].shape == (3,)
            assert nve.attrs["ensemble"] == "NVE"
    assert set(manifest["summary"]["fm"]["nvt"]) >= {"T300K", "T420K", "ns_per_day_per_system"}
    pl = manifest["summary"]["fm"]["pair_list"]  # the skin list was searched, and reused in between
    assert 1 <= pl["searches"] < pl["force_calls"], pl


def test_mdanalysis_reads_the_trajectories(simulated):
    import MDAnalysis as mda

    config, _ = simulated
    d = stage_path(config, "simulate") / "trf2"
    ours = read_h5md(d / "T420K.h5md")
    u = mda.Universe(str(d / "beads.pdb"), str(d / "T420K.h5md"))
    assert len(u.atoms) == 64 and u.trajectory.n_frames == 3
    for i in range(3):
        ts = u.trajectory[i]
        np.testing.assert_allclose(ts.positions, ours.elements["particles/all/position"][i], rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(ts.velocities, ours.elements["particles/all/velocity"][i], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ts.dimensions[:3], ours.elements["particles/all/box/edges"][i], rtol=1e-6)


def test_rerun_is_up_to_date(simulated):
    config, manifest = simulated
    assert run_stage("simulate", config, show_progress=False) == manifest


def test_interrupted_run_resumes_to_the_same_trajectory(simulated, tiny_trained, tmp_path, monkeypatch):
    config, _ = simulated
    c = _config(tiny_trained[0], tmp_path, models=("fm",), temperatures_K=(300.0, 420.0))
    real_step = engine.Integrator.step
    calls = []

    def interrupted(self, n=1):
        calls.append(n)
        if len(calls) == 3:  # during the second frame interval after equilibration
            raise KeyboardInterrupt
        return real_step(self, n)

    monkeypatch.setattr(engine.Integrator, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_stage("simulate", c, show_progress=False)
    assert (stage_path(c, "simulate") / "fm" / ".nvt.ckpt").exists()
    assert not (stage_path(c, "simulate") / "fm" / "T300K.h5md").exists()
    monkeypatch.setattr(engine.Integrator, "step", real_step)
    run_stage("simulate", c, show_progress=False)
    for label in ("T300K", "T420K", "T300K-nve00"):
        resumed = read_h5md(stage_path(c, "simulate") / "fm" / f"{label}.h5md").elements
        straight = read_h5md(stage_path(config, "simulate") / "fm" / f"{label}.h5md").elements
        for key in ("particles/all/position", "particles/all/velocity"):
            np.testing.assert_array_equal(resumed[key], straight[key])
    assert not list((stage_path(c, "simulate") / "fm").glob(".*"))


def test_default_jobs_simulate_fm_each_only_at_its_temperature(tiny_trained, tmp_path):
    c = _config(tiny_trained[0], tmp_path)
    jobs = simulation_jobs(c, pipeline.read(c, "train"))
    assert jobs["fm-each-T300K"] == (300.0,) and jobs["fm-each-T500K"] == (500.0,)
    assert jobs["trf2"] == (300.0, 500.0)
    with pytest.raises(ConfigError, match="not models of this config"):
        simulation_jobs(_config(tiny_trained[0], tmp_path, models=("trf9",)), pipeline.read(c, "train"))


def test_a_failing_run_names_model_step_and_temperature(tiny_trained, tmp_path):
    c = _config(tiny_trained[0], tmp_path, models=("fm",), temperatures_K=(300.0,), max_force=1.0, unstable="stop")
    with pytest.raises(SimulationError, match=r"simulate fm: step \d+: system 0 \(T = 300 K\) has a force "
                                              r".* above max_force = 1; the frames so far are kept"):
        run_stage("simulate", c, show_progress=False)
    assert (stage_path(c, "simulate") / "fm" / ".T300K.h5md.part").exists()


def test_needs_a_trained_run(tiny_reference, tmp_path):
    """The first upstream stage missing, in pipeline order, is the one named."""
    config, _ = tiny_reference
    c = config.model_copy(update={"run": config.run.model_copy(update={"directory": tmp_path / "empty"})})
    with pytest.raises(DataFormatError, match="run `thermocg reference` first"):
        run_stage("simulate", c, show_progress=False)
    (tmp_path / "empty").mkdir(exist_ok=True)
    (tmp_path / "empty" / "reference").symlink_to(stage_path(config, "reference"))
    with pytest.raises(DataFormatError, match="run `thermocg train` first"):
        run_stage("simulate", c, show_progress=False)
    assert not (tmp_path / "empty" / "simulate").exists()  # refused before its directory was made


def test_multiple_time_steps_in_the_stage(tiny_trained, tmp_path):
    """mts_substeps in [simulate] and [simulate.nve]: frames at the same outer steps, the setting
    recorded in each file, and the NVE segment still conserves energy."""
    nve = {**SHORT["nve"], "mts_substeps": 4}
    c = _config(tiny_trained[0], tmp_path, models=("trf2",), temperatures_K=(420.0,), mts_substeps=2, nve=nve)
    manifest = run_stage("simulate", c, show_progress=False)
    assert manifest["complete"]
    d = read_h5md(stage_path(c, "simulate") / "trf2" / "T420K.h5md")
    np.testing.assert_allclose(d.step, [20, 30, 40])
    assert int(d.attrs["mts_substeps"]) == 2
    e = read_h5md(stage_path(c, "simulate") / "trf2" / "T420K-nve00.h5md")
    assert int(e.attrs["mts_substeps"]) == 4
    total, kinetic = e.elements["observables/total_energy"], e.elements["observables/kinetic_energy"]
    assert np.abs(total - total[0]).max() < 0.01 * kinetic.mean()


def test_the_distilled_engine_in_the_stage(tiny_trained, tmp_path):
    """engine = "distilled": each model is distilled on its training frames and simulated; the
    trajectories are written as with the network, and their structure stays liquid-like."""
    c = _config(tiny_trained[0], tmp_path, models=("trf2",), temperatures_K=(300.0,), engine="distilled",
                distilled_frames=3, distilled_r3_A=3.4)
    manifest = run_stage("simulate", c, show_progress=False)
    assert manifest["complete"]
    d = read_h5md(stage_path(c, "simulate") / "trf2" / "T300K.h5md")
    x = d.elements["particles/all/position"]
    assert x.shape == (3, 64, 3) and np.all(np.isfinite(x))
    assert np.all(np.abs(d.elements["observables/temperature"] - 300.0) < 150.0)


def _poison(monkeypatch, batch_size, temperature_K, from_step=10, systems=None):
    """Make the systems at ``temperature_K`` (or those of index ``systems``) fail the checks (NaN
    forces) from ``from_step`` on, in integrators of ``batch_size`` systems only (the Langevin
    batch or the NVE one)."""
    real_check = engine.Integrator._check

    def poisoned(self):
        if len(self.temperature) == batch_size and self.step_count >= from_step:
            hot = torch.isclose(self.temperature, torch.tensor(temperature_K, dtype=self.temperature.dtype))
            for k in (systems if systems is not None else torch.nonzero(hot)[:, 0].tolist()):
                self.forces[k] = float("nan")
        return real_check(self)

    monkeypatch.setattr(engine.Integrator, "_check", poisoned)


def test_an_unstable_system_is_recorded_and_the_others_are_as_without_it(simulated, tiny_trained, tmp_path,
                                                                           monkeypatch):
    """unstable = "record" (the default): fm at 420 K fails in Langevin; the stage finishes, its
    marker names step and check, evaluate says so, and fm at 300 K is the run of the batch with
    420 K to float32 round-off (each system's trajectory depends only on its own forces and random
    stream; a batch of one sums in another order). A re-run leaves it out without trying again."""
    alone_config, _ = simulated  # fm and trf2 at 300 and 420 K, run without failures
    c = _config(tiny_trained[0], tmp_path, models=("fm",), temperatures_K=(300.0, 420.0))
    _poison(monkeypatch, 2, 420.0)
    manifest = run_stage("simulate", c, show_progress=False)
    d = stage_path(c, "simulate") / "fm"
    marker = json.loads((d / "T420K.unstable.json").read_text())
    assert marker["phase"] == "nvt" and marker["step"] == 10 and "non-finite" in marker["reason"]
    assert not (d / "T420K.h5md").exists() and not list(d.glob(".*"))
    assert "fm/T420K.unstable.json" in manifest["outputs"]["fm"]
    record = pipeline.read(c, "simulate")
    assert record.temperatures("fm") == [300.0] and [u["temperature_K"] for u in record.unstable] == [420.0]
    for label in ("T300K", "T300K-nve00"):
        ours = read_h5md(d / f"{label}.h5md").elements["particles/all/position"]
        straight = read_h5md(stage_path(alone_config, "simulate") / "fm" / f"{label}.h5md").elements
        np.testing.assert_allclose(ours, straight["particles/all/position"], rtol=0, atol=1e-6)
    assert run_stage("simulate", c, show_progress=False) == manifest  # up to date, the marker kept
    results = run_stage("evaluate", c, show_progress=False)
    notes = json.loads((stage_path(c, "evaluate") / "results.json").read_text())["notes"]
    assert any(n.startswith("fm at 420 K: unstable in CG MD (NVT, step 10") for n in notes), notes
    assert results["complete"]


def test_an_unstable_nve_segment_keeps_the_langevin_frames(tiny_trained, tmp_path, monkeypatch):
    """A system failing in NVE keeps its Langevin frames and loses only its segments; "stop"
    instead stops the stage with the error."""
    nve = {**SHORT["nve"], "n_segments": 2}
    c = _config(tiny_trained[0], tmp_path, models=("fm",), temperatures_K=(300.0, 420.0), nve=nve)
    _poison(monkeypatch, 4, 420.0, from_step=0)  # 2 systems x 2 segments: the NVE batch only
    run_stage("simulate", c, show_progress=False)
    d = stage_path(c, "simulate") / "fm"
    assert json.loads((d / "T420K.unstable.json").read_text())["phase"] == "nve"
    assert (d / "T420K.h5md").exists() and not list(d.glob("T420K-nve*"))
    assert len(list(d.glob("T300K-nve*.h5md"))) == 2
    run = pipeline.read(c, "simulate").run("fm", 420.0)
    assert run.nve_files == () and run.file == "fm/T420K.h5md"
    (tmp_path / "stop").mkdir()
    stop = _config(tiny_trained[0], tmp_path / "stop", models=("fm",), temperatures_K=(300.0, 420.0), nve=nve,
                   unstable="stop")
    with pytest.raises(SimulationError, match=r"simulate fm: NVE segment: step 0: system [23] \(T = 420 K\)"):
        run_stage("simulate", stop, show_progress=False)


def test_every_system_unstable_and_an_unstable_first_replica(tiny_trained, tmp_path, monkeypatch):
    """A model whose only system fails still finishes the stage (nothing simulated, the marker
    recorded); with two replicas and the first unstable, evaluate goes on (it evaluates the first
    replica, so that temperature has no structure for the model) and says why."""
    from thermocg.errors import UnstableSystem
    import pickle

    c = _config(tiny_trained[0], tmp_path, models=("fm",), temperatures_K=(300.0,), max_force=1.0)
    manifest = run_stage("simulate", c, show_progress=False)
    assert manifest["outputs"]["fm"] == ["fm/T300K.unstable.json"]
    assert pipeline.read(c, "simulate").runs == ()
    run_stage("evaluate", c, show_progress=False)  # nothing simulated: force errors only, and why
    results = json.loads((stage_path(c, "evaluate") / "results.json").read_text())
    assert any(n.startswith("fm at 300 K: unstable in CG MD (NVT") for n in results["notes"])
    (tmp_path / "r").mkdir()
    two = _config(tiny_trained[0], tmp_path / "r", models=("fm",), temperatures_K=(300.0,), replicas=2)
    _poison(monkeypatch, 2, 300.0, systems=[0])  # replica 0 only: index 0 of the Langevin batch
    run_stage("simulate", two, show_progress=False)
    record = pipeline.read(two, "simulate")
    assert [(r.temperature_K, r.replica) for r in record.runs] == [(300.0, 1)]
    run_stage("evaluate", two, show_progress=False)
    notes = json.loads((stage_path(two, "evaluate") / "results.json").read_text())["notes"]
    assert any(n.startswith("fm at 300 K: unstable in CG MD (NVT") for n in notes), notes
    err = pickle.loads(pickle.dumps(UnstableSystem("step 3: system 1", 1, 3)))
    assert (str(err), err.system, err.step) == ("step 3: system 1", 1, 3)
