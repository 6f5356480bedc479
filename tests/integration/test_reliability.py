"""An adversarial user, on tiny systems: kill the main process of a multi-process reference
run (no worker may outlive it; the re-run completes), damage finished outputs (detected and
rebuilt, derived files with them), a diverging training (an error, no model), and an output
path that cannot be written (one line)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from thermocg import pipeline
from thermocg.errors import DataFormatError, TrainingError
from thermocg.io.h5md import read_h5md
from tests.helpers import tiny_config, with_simulate

# slow: kills, damages and re-runs whole stages: ~65 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow


def _children(pid: int) -> set[int]:
    """Every process whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig,scheduler", [(signal.SIGKILL, None), (signal.SIGTERM, None),
                                           pytest.param(signal.SIGKILL, "local:2", marks=pytest.mark.slow)],
                         ids=["kill-9", "SIGTERM", "dask-kill-9"])
def test_killing_the_main_process_leaves_no_worker_and_the_rerun_completes(tmp_path, sig, scheduler):
    """The main process killed while its workers (local processes, or the worker processes of a
    Dask LocalCluster, which Dask ends with their parent) sample: none outlives it, and the re-run
    completes."""
    reference = {"n_molecules": 64, "temperatures_K": [300.0, 500.0], "cutoff_A": 6.0, "equilibration_ps": 1.0,
                 "n_frames": 3, "frame_interval_ps": 0.02, "nve": {"n_segments": 0}}
    toml = ('[run]\ndirectory = "run"\nseed = 3\ndevice = "cpu"\nprocesses = 2\n'
            + (f'scheduler = "{scheduler}"\n' if scheduler else "") + '[reference]\n'
            + "".join(f"{k} = {v}\n" for k, v in reference.items() if k != "nve")
            + "[reference.nve]\nn_segments = 0\n[targets]\nbaseline_cutoff_A = 6.0\n[train]\ncutoff_A = 6.0\n"
            "[evaluate]\nrdf_r_max_A = 6.0\n")
    (tmp_path / "c.toml").write_text(toml)
    main = subprocess.Popen([sys.executable, "-m", "thermocg.cli.main", "reference", str(tmp_path / "c.toml"),
                             "--quiet"], stderr=subprocess.PIPE, text=True)
    run = tmp_path / "run" / "reference"
    deadline = time.monotonic() + 120
    workers = set()
    while time.monotonic() < deadline:  # until both temperatures are being sampled
        workers = {p for p in _children(main.pid) if _alive(p)}
        if len(list(run.glob(".T*.h5md.part"))) == 2 and len(workers) >= 2:
            break
        time.sleep(0.2)
    else:
        main.kill()
        pytest.fail(f"the run did not start sampling: {main.stderr.read() if main.poll() is not None else ''}")
    os.kill(main.pid, sig)
    main.wait(timeout=30)
    if sig == signal.SIGTERM:
        assert main.returncode == 130 and "interrupted; re-run the same command to resume" in main.stderr.read()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the main process"
    assert not (run / "T300K.h5md").exists()  # killed during equilibration: nothing was promoted
    if sig == signal.SIGTERM:
        return  # the re-run after a kill is checked once (kill -9)

    from thermocg.config import load_config
    manifest = pipeline.stage("reference").run(load_config(tmp_path / "c.toml"), show_progress=False)
    assert manifest["complete"]
    for t in ("T300K", "T500K"):
        assert read_h5md(run / f"{t}.h5md").elements["particles/all/position"].shape[0] == 3
    assert not list(run.glob(".*.part")) and not list(run.glob(".*.chk"))


@pytest.fixture
def copied_run(tiny_trained, tmp_path):
    """A copy of the tiny run's reference, targets and train stages (damaged freely here)."""
    config, _ = tiny_trained
    mine = tiny_config(tmp_path)
    for stage in ("reference", "targets", "train"):
        shutil.copytree(config.run_dir / stage, mine.run_dir / stage)
    return mine


def _drop_frames(path: Path, keep: int) -> None:
    """Truncate every element of an H5MD file to ``keep`` frames (a readable, shorter file)."""
    with h5py.File(path, "a") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "value" in obj:
                for key in ("step", "time", "value"):
                    obj[key].resize(keep, axis=0)
        f.visititems(visit)


def test_a_shortened_reference_file_is_refused_downstream(copied_run):
    _drop_frames(copied_run.run_dir / "reference" / "T500K.h5md", 3)
    with pytest.raises(DataFormatError, match=r"T500K.h5md: damaged .*run `thermocg reference` to regenerate it"):
        pipeline.stage("targets").run(copied_run, force=True, show_progress=False)


def test_a_truncated_model_is_detected_and_only_it_and_its_W0_users_are_retrained(copied_run, caplog):
    """fm.pt damaged: fm is trained again, and so are the models that take its W0 (trf2, em and
    the fm-each at T0), which must carry the new one; the others are kept untouched."""
    import logging

    train = copied_run.run_dir / "train"
    data = (train / "fm.pt").read_bytes()
    (train / "fm.pt").write_bytes(data[: len(data) // 2])
    users = {"fm.pt", "trf2.pt", "em.pt", "fm-each-T300K.pt"}
    before = {p.name: p.stat().st_mtime_ns for p in train.glob("*.pt") if p.name not in users}
    assert set(before) == {"trf-multi.pt", "fm-each-T500K.pt"}
    with caplog.at_level(logging.WARNING):
        manifest = pipeline.stage("train").run(copied_run, show_progress=False)
    assert "fm.pt is damaged" in caplog.text and manifest["complete"]
    assert all(manifest["summary"][p[:-3]] != "up to date" for p in users)
    assert manifest["summary"]["trf2"]["w0_from"] == "fm"
    assert manifest["summary"]["trf-multi"] == "up to date"
    assert {p.name: p.stat().st_mtime_ns for p in train.glob("*.pt") if p.name not in users} == before
    assert pipeline.stage("train").run(copied_run, show_progress=False)["summary"] == manifest["summary"]


def test_a_regenerated_trajectory_regenerates_the_nve_segment_started_from_it(copied_run, caplog):
    """The NVE segment records a fingerprint of the frame it started from; when the NVT file is
    replaced (deleted and regenerated, here: its start frame changed), the segment is redone."""
    import logging

    from thermocg.io.trajectory import check_existing, frame_fingerprint

    ref = copied_run.run_dir / "reference"
    nve, nvt = ref / "T300K-nve00.h5md", ref / "T300K.h5md"
    start = int(read_h5md(nve).attrs["start_frame"])
    h = pipeline.stage("reference").config_hash(copied_run)
    assert read_h5md(nve).attrs["start_fingerprint"] == frame_fingerprint(nvt, start)
    assert check_existing(nve, h, "[reference]", n_frames=51, start=(nvt, start))
    with h5py.File(nvt, "a") as f:
        f["particles/all/position/value"][start] += 0.34
    with caplog.at_level(logging.WARNING):
        assert not check_existing(nve, h, "[reference]", n_frames=51, start=(nvt, start))
    assert "does not start from frame" in caplog.text and not nve.exists()


def test_a_diverging_training_fails_and_writes_no_model(copied_run, tmp_path):
    config = copied_run.model_copy(update={"train": copied_run.train.model_copy(update={
        "learning_rate": 1e6, "variants": ("fm",), "max_epochs": 3})})
    shutil.rmtree(config.run_dir / "train")
    with pytest.raises(TrainingError, match=r"training (diverged at epoch \d|did not improve).*learning_rate"):
        pipeline.stage("train").run(config, show_progress=False)
    train = config.run_dir / "train"
    assert not (train / "fm.pt").exists() and not list(train.glob(".*.ckpt"))
    assert not pipeline.stage("train").stage_dir(config).read_manifest()["complete"]


def test_an_unwritable_run_directory_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "c.toml").write_text('[run]\ndirectory = "file/run"\n')
    out = subprocess.run([sys.executable, "-m", "thermocg.cli.main", "report", str(tmp_path / "c.toml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == [f"thermocg report: error: {tmp_path / 'file' / 'run'}: Not a directory"], lines


def test_results_say_what_was_not_computed(tiny_trained, tmp_path):
    """test_frames = 0: no force errors, and results.json says why (strict JSON, no NaN)."""
    import json

    from thermocg.io.results import Results

    config = with_simulate(tiny_trained[0], tmp_path, equilibration_ps=0.02, n_frames=2, frame_interval_ps=0.02,
                           models=("fm",), temperatures_K=(300.0,), nve={"n_segments": 0})
    pipeline.stage("simulate").run(config, show_progress=False)
    pipeline.stage("evaluate").run(config, show_progress=False)
    res = Results.read(config.run_dir / "evaluate")
    assert any("CG D and D_CG/D_FG not computed: [simulate.nve] n_segments = 0" in n for n in res.notes)
    assert res.model("fm", 300.0).D_A2_per_ps is None and res.model("fm", 300.0).force_mse is not None
    json.loads((config.run_dir / "evaluate" / "results.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_notes_name_every_metric_left_out(tmp_path):
    from thermocg.evaluate.stage import _notes
    from thermocg.io.records import ModelEntry, ReferenceRun, TrainedModels, Trajectories, TrajectoryRun

    models = TrainedModels(tmp_path, (ModelEntry("fm", "fm", 0, 300.0, (300.0,)),), (40, 40))
    runs = Trajectories(tmp_path, tuple(TrajectoryRun("fm", t, 0, f"fm/T{t:g}K.h5md",
                                                      tuple(f"fm/T{t:g}K-nve{k:02d}.h5md" for k in range(2)))
                                        for t in (300.0, 420.0)))
    notes = _notes(ReferenceRun(tmp_path, (300.0, 500.0), 0), models, runs, [300.0, 420.0])
    assert not any("[simulate.nve]" in n for n in notes)  # the CG runs have NVE segments
    nothing = Trajectories(tmp_path, tuple(TrajectoryRun("fm", t, 0, f"fm/T{t:g}K.h5md", ()) for t in (300.0,)))
    assert "CG D and D_CG/D_FG not computed: [simulate.nve] n_segments = 0" in _notes(
        ReferenceRun(tmp_path, (300.0,), 1), models, nothing, [300.0])
    assert "force errors not computed: [train] test_frames = 0 holds out no reference frames" in notes
    assert "force_mse_excess not computed: no fm-each model was trained ([train] variants)" in notes
    assert "all-atom D and D_CG/D_FG not computed: [reference.nve] n_segments = 0" in notes
    assert any(n.startswith("no all-atom reference at 420 K") for n in notes)
