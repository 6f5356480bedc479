"""``[run] scheduler``: per-temperature work on Dask distributed (issue 17), on a LocalCluster
of 2 worker processes: the same results as the local processes, a worker killed in the middle
of a task retried without a frame lost or written twice, and a clear error when no scheduler
answers."""

from __future__ import annotations

import threading
import time

import h5py
import numpy as np
import pytest

from thermocg.errors import SimulationError
from thermocg.io.h5md import read_h5md
from thermocg.io.records import ReferenceRun

from tests.helpers import run_stage, stage_path, tiny_config, with_simulate


def _with(config, **run):
    return config.model_copy(update={"run": config.run.model_copy(update=run)})


@pytest.mark.slow  # ~20 s on 2 cores; CI runs it
def test_reference_on_dask_equals_local_processes(tiny_reference, tmp_path):
    """The tiny reference run's first 15 frames at 300 K again, on a LocalCluster: the same frames
    (the same seed: a temperature's seed is the run seed's child of its index, and 300 K is the
    first either way; one OpenMM thread per temperature either way)."""
    local, _ = tiny_reference
    n = 15
    reference = local.reference.model_copy(update={
        "temperatures_K": (300.0,), "n_frames": n,
        "nve": local.reference.nve.model_copy(update={"n_segments": 0})})
    config = _with(local, directory=tmp_path / "run", scheduler="local:2").model_copy(
        update={"reference": reference})
    manifest = run_stage("reference", config, show_progress=False)
    assert manifest["complete"] and set(manifest["summary"]) == {"T300K"}
    ours, theirs = ReferenceRun.read(stage_path(config, "reference")), ReferenceRun.read(stage_path(local, "reference"))
    da, db = read_h5md(theirs.nvt_path(300.0)), read_h5md(ours.nvt_path(300.0))
    np.testing.assert_array_equal(db.step, da.step[:n])
    for name, value in da.elements.items():
        np.testing.assert_allclose(db.elements[name], value[:n], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.slow  # ~20 s on 2 cores; CI runs it
def test_a_worker_killed_mid_task_is_retried_and_no_frame_is_lost_or_doubled(tmp_path):
    """Both workers are killed while the 300 K task writes its frames; Dask reschedules it on a
    fresh worker, which resumes from the part file and checkpoint: the file ends with every frame
    exactly once, evenly spaced in MD steps."""
    import psutil

    config = _with(tiny_config(tmp_path, temperatures_K=[300.0], n_frames=30, equilibration_ps=1.0,
                               nve={"n_segments": 0, "length_ps": 1.0, "frame_interval_fs": 20.0,
                                    "timestep_fs": 1.0}), scheduler="local:2")
    part = stage_path(config, "reference") / ".T300K.h5md.part"
    outcome = {}

    def run():
        try:
            outcome["manifest"] = run_stage("reference", config, show_progress=False)
        except BaseException as err:  # noqa: BLE001 - reported by the assertions below
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    deadline, frames = time.monotonic() + 120, 0
    while time.monotonic() < deadline and frames < 5 and thread.is_alive():
        time.sleep(0.2)
        try:  # the worker holds the file open for writing: read without HDF5's file lock
            with h5py.File(part, "r", locking=False) as f:
                frames = f["particles/all/box/edges/value"].shape[0]
        except Exception:  # noqa: BLE001 - not there yet, or caught mid-write
            pass
    assert frames >= 5, f"the task never wrote its first frames ({outcome})"
    # LocalCluster's nannies live in this process and spawn the workers as its children
    workers = [c for c in psutil.Process().children(recursive=True)
               if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]
    assert workers, "no Dask worker processes found"
    for w in workers:
        w.kill()
    thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    d = read_h5md(stage_path(config, "reference") / "T300K.h5md")
    assert len(d.step) == config.reference.n_frames
    steps = np.diff(d.step)
    assert np.all(steps == steps[0]) and steps[0] > 0, d.step  # no frame twice, none missing


def test_an_unreachable_scheduler_is_a_clear_error_within_seconds(monkeypatch):
    from thermocg import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)  # the default 5 s: the same path, slower
    start = time.monotonic()
    with pytest.raises(SimulationError, match=r"scheduler = 'tcp://127.0.0.1:9': no Dask scheduler answered within"):
        with cluster.client_for("tcp://127.0.0.1:9"):
            pass
    assert time.monotonic() - start < 5


def test_scheduler_values():
    from thermocg.config import config_from_dict
    from thermocg.errors import ConfigError

    assert config_from_dict({"run": {"scheduler": "local:3"}}).run.scheduler == "local:3"
    for bad in ("local:0", "local", "127.0.0.1:8786"):
        with pytest.raises(ConfigError, match="expected \"local:N\""):
            config_from_dict({"run": {"scheduler": bad}})


# ~50 s with its share of the trained fixture: slow (the default suite reached 620 s on a fresh
# clone); the reference test keeps Dask-equals-local in the default suite
@pytest.mark.slow
def test_simulate_and_evaluate_on_dask_equal_the_local_run(tiny_trained, tmp_path):
    """CG MD (a task per model: its batch of temperatures) and the evaluation (a task per
    temperature) on a Dask cluster of 2 single-threaded workers, given by its address: the
    trajectories of the local run (the same seeds; torch on one thread per worker, so equal to
    rounding, 1e-4 Å after 30 steps), and, from the same trajectories, the same results.json."""
    import json

    from thermocg import pipeline

    short = dict(models=("trf2",), temperatures_K=(300.0, 420.0), equilibration_ps=0.02, n_frames=3,
                 frame_interval_ps=0.02, timestep_fs=2.0,
                 nve={"n_segments": 2, "length_ps": 0.04, "frame_interval_fs": 20.0, "timestep_fs": 2.0})
    for d in ("local", "dask", "eval"):
        (tmp_path / d).mkdir()
    local = with_simulate(tiny_trained[0], tmp_path / "local", **short)
    run_stage("simulate", local, show_progress=False)
    expected = run_stage("evaluate", local, show_progress=False)
    # one LocalCluster of 2 for both stages, at its address (the path of a cluster started
    # elsewhere; its workers keep their imports between the stages)
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        address = lc.scheduler_address
        on_dask = _with(with_simulate(tiny_trained[0], tmp_path / "dask", **short), scheduler=address)
        manifest = run_stage("simulate", on_dask, show_progress=False)
        assert manifest["complete"] and list(manifest["outputs"]) == ["trf2"]
        ours, theirs = pipeline.read(on_dask, "simulate"), pipeline.read(local, "simulate")
        assert [(r.model, r.temperature_K) for r in ours.runs] == [(r.model, r.temperature_K) for r in theirs.runs]
        for a, b in zip(theirs.runs, ours.runs):
            for pa, pb in zip((a.file, *a.nve_files), (b.file, *b.nve_files)):
                da, db = read_h5md(theirs.directory / pa), read_h5md(ours.directory / pb)
                np.testing.assert_array_equal(db.step, da.step)
                np.testing.assert_allclose(db.elements["particles/all/position"], da.elements["particles/all/position"],
                                           rtol=0, atol=1e-4, err_msg=pb)
        # the evaluation on Dask of the local run's trajectories
        evaluated = _with(with_simulate(tiny_trained[0], tmp_path / "eval", **short), scheduler=address)
        (evaluated.run_dir / "simulate").symlink_to(local.run_dir / "simulate")
        assert run_stage("evaluate", evaluated, show_progress=False)["summary"] == expected["summary"]
    a = json.loads((stage_path(local, "evaluate") / "results.json").read_text())
    b = json.loads((stage_path(evaluated, "evaluate") / "results.json").read_text())
    _assert_close(b, a)


def _assert_close(b, a, where="results"):
    """Equal JSON, numbers to 1e-6 (the held-out force errors: torch on another thread count)."""
    if isinstance(a, dict):
        assert set(b) == set(a), where
        for k in a:
            _assert_close(b[k], a[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(b) == len(a), where
        for i, (x, y) in enumerate(zip(b, a)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-12), where
    else:
        assert b == a, where
