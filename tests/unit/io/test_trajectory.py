"""The one resumable-trajectory writer of the reference and simulate stages: a resume keeps
exactly the frames the checkpoint has seen, disagreeing or unreadable part files restart the
run, and only complete trajectories are promoted to their final names."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.errors import SimulationError
from thermocg.io.h5md import H5MDWriter, read_h5md
from thermocg.io.trajectory import ResumableTrajectories, nve_start_frames, steps


def _writer(path, i):
    return H5MDWriter(path, species=np.ones(2, dtype=np.int32), mass=np.ones(2), particle_fields=("position",),
                      attrs={"system": i})


def _frame(k):
    return {"particles/all/position": np.full((2, 3), float(k)), "particles/all/box/edges": np.full(3, 5.0)}


def _run(tmp_path, n_written, checkpoint_step):
    """Two trajectories with ``n_written`` frames each and a checkpoint at ``checkpoint_step``."""
    finals = [tmp_path / "a.h5md", tmp_path / "b.h5md"]
    out = ResumableTrajectories(finals, tmp_path / ".ckpt", "test")
    out.start(_writer)
    for k in range(n_written):
        for i in range(2):
            out.append(i, 10 * (k + 1), float(k), _frame(k))
    out.save_checkpoint(lambda p: p.write_text(str(checkpoint_step)))
    out.close()
    return finals


def test_resume_truncates_to_the_frames_the_checkpoint_has_seen(tmp_path):
    finals = _run(tmp_path, n_written=3, checkpoint_step=20)  # a kill after frame 3, before its checkpoint
    out = ResumableTrajectories(finals, tmp_path / ".ckpt", "test")
    restored = []
    done = out.resume(lambda p: int(p.read_text()), restored.append, lambda step: step // 10)
    assert done == 2 and out.n_frames == [2, 2] and restored == [tmp_path / ".ckpt"]
    for k in range(2, 4):
        for i in range(2):
            out.append(i, 10 * (k + 1), float(k), _frame(k))
    out.finish(4)
    for f in finals:
        d = read_h5md(f)
        np.testing.assert_array_equal(d.step, [10, 20, 30, 40])  # no duplicate, no gap
        np.testing.assert_array_equal(d.elements["particles/all/position"][:, 0, 0], [0, 1, 2, 3])
    assert not (tmp_path / ".ckpt").exists() and not list(tmp_path.glob(".*.part"))


def test_fewer_frames_than_the_checkpoint_restarts(tmp_path, caplog):
    finals = _run(tmp_path, n_written=1, checkpoint_step=30)
    out = ResumableTrajectories(finals, tmp_path / ".ckpt", "test")
    restored = []
    assert out.resume(lambda p: int(p.read_text()), restored.append, lambda step: step // 10) is None
    assert "hold 1 frames but the checkpoint expects 3; restarting" in caplog.text
    assert not restored  # the dynamics were left as a fresh run finds them
    out.start(_writer)  # a fresh start removes the stale parts and checkpoint
    assert out.n_frames == [0, 0] and not (tmp_path / ".ckpt").exists()
    out.close()


def test_unusable_checkpoint_or_unreadable_part_restarts(tmp_path):
    finals = _run(tmp_path, n_written=2, checkpoint_step=20)
    out = ResumableTrajectories(finals, tmp_path / ".ckpt", "test")
    never = lambda p: pytest.fail("restored from a checkpoint that cannot be resumed")  # noqa: E731
    assert out.resume(lambda p: None, never, lambda step: step // 10) is None  # another config's checkpoint
    (tmp_path / ".b.h5md.part").write_bytes(b"not hdf5")
    assert out.resume(lambda p: 20, never, lambda step: step // 10) is None


def test_finish_promotes_nothing_when_a_trajectory_is_short(tmp_path):
    finals = [tmp_path / "a.h5md", tmp_path / "b.h5md"]
    out = ResumableTrajectories(finals, tmp_path / ".ckpt", "test")
    out.start(_writer)
    out.append(0, 10, 0.0, _frame(0))
    with pytest.raises(SimulationError, match=r"test: part files hold \[1, 0\] frames, expected 1"):
        out.finish(1)
    assert not any(f.exists() for f in finals)
    assert (tmp_path / ".a.h5md.part").exists()


def test_helpers():
    assert steps(1000.0, 2.0) == 500 and steps(0.0, 4.0) == 0
    assert nve_start_frames(100, 4) == [24, 49, 74, 99]  # spread over the run, the last frame included
    assert nve_start_frames(3, 3) == [0, 1, 2]


def test_a_part_file_is_readable_before_its_first_frame(tmp_path):
    """A kill during equilibration (no frame yet) must leave a part file the re-run can open:
    otherwise the equilibration, checkpointed, is thrown away."""
    import shutil

    out = ResumableTrajectories([tmp_path / "a.h5md"], tmp_path / ".ckpt", "test")
    out.start(_writer)
    shutil.copy(tmp_path / ".a.h5md.part", tmp_path / "copy.h5md")  # what a kill -9 leaves on disk
    assert read_h5md(tmp_path / "copy.h5md").step.shape == (0,)
    out.close()
