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
from thermocg.reference.stage import reference_dir, run_reference

from tests.conftest import tiny_config


def _with(config, **run):
    return config.model_copy(update={"run": config.run.model_copy(update=run)})


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
    manifest = run_reference(config, show_progress=False)
    assert manifest["complete"] and set(manifest["summary"]) == {"T300K"}
    ours, theirs = ReferenceRun.read(reference_dir(config)), ReferenceRun.read(reference_dir(local))
    da, db = read_h5md(theirs.nvt_path(300.0)), read_h5md(ours.nvt_path(300.0))
    np.testing.assert_array_equal(db.step, da.step[:n])
    for name, value in da.elements.items():
        np.testing.assert_allclose(db.elements[name], value[:n], rtol=1e-12, atol=1e-12, err_msg=name)


def test_a_worker_killed_mid_task_is_retried_and_no_frame_is_lost_or_doubled(tmp_path):
    """Both workers are killed while the 300 K task writes its frames; Dask reschedules it on a
    fresh worker, which resumes from the part file and checkpoint: the file ends with every frame
    exactly once, evenly spaced in MD steps."""
    import psutil

    config = _with(tiny_config(tmp_path, temperatures_K=[300.0], n_frames=30, equilibration_ps=1.0,
                               nve={"n_segments": 0, "length_ps": 1.0, "frame_interval_fs": 20.0,
                                    "timestep_fs": 1.0}), scheduler="local:2")
    part = reference_dir(config) / ".T300K.h5md.part"
    outcome = {}

    def run():
        try:
            outcome["manifest"] = run_reference(config, show_progress=False)
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
    d = read_h5md(reference_dir(config) / "T300K.h5md")
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
