"""MDAnalysis on thermocg's trajectories (issue 33): :func:`thermocg.io.mdanalysis.universe` gives
MDAnalysis the file's frame interval, so MDAnalysis' Einstein D equals thermocg's on the same
frames. Oracle: a random walk with a known D (steps of variance 2 D dt per axis) written as a CG
NVE segment every 50 fs."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.analysis.dynamics import MSD
from thermocg.io.h5md import H5MDWriter
from thermocg.io.mdanalysis import frame_interval_ps, universe
from thermocg.simulate.batch import write_bead_topology

D_TRUE, DT_PS, FRAMES, BEADS = 0.5, 0.05, 400, 256


@pytest.fixture
def walk(tmp_path):
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(scale=np.sqrt(2 * D_TRUE * DT_PS), size=(FRAMES, BEADS, 3)), axis=0) + 10.0
    box = np.full(3, 20.0)
    write_bead_topology(tmp_path / "beads.pdb", x[0] % 20.0, box)
    with H5MDWriter(tmp_path / "T300K-nve00.h5md", species=np.full(BEADS, 8), mass=np.full(BEADS, 18.0)) as out:
        for k in range(FRAMES):
            out.append(k * 25, k * DT_PS, {"particles/all/position": x[k], "particles/all/box/edges": box})
    return tmp_path / "T300K-nve00.h5md", x


def test_mdanalysis_gives_thermocgs_diffusion_coefficient(walk):
    from MDAnalysis.analysis.msd import EinsteinMSD

    path, x = walk
    u = universe(path)
    assert u.trajectory.dt == pytest.approx(DT_PS) and u.trajectory.n_frames == FRAMES
    msd = EinsteinMSD(u, select="all", msd_type="xyz", fft=False).run()
    lag = np.arange(FRAMES) * u.trajectory.dt
    ours = MSD((0.2, 0.6)).compute(x, DT_PS)
    w = ours._window()
    theirs = np.polyfit(lag[w], msd.results.timeseries[w], 1)[0] / 6.0
    assert theirs == pytest.approx(ours.diffusion_coefficient, rel=1e-4)
    assert abs(ours.diffusion_coefficient - D_TRUE) < 0.15 * D_TRUE  # the walk's own D; its sampling error is 5 %
    import MDAnalysis as mda

    # what the helper is for: MDAnalysis' own guess of the interval is 1 ps, a D 20x too small
    assert mda.Universe(str(path.parent / "beads.pdb"), str(path)).trajectory.dt == pytest.approx(1.0)


def test_uneven_frames_are_refused(tmp_path):
    with H5MDWriter(tmp_path / "x.h5md", species=np.full(2, 8)) as out:
        for t in (0.0, 0.05, 0.2):
            out.append(0, t, {"particles/all/position": np.zeros((2, 3)), "particles/all/box/edges": np.ones(3)})
    with pytest.raises(ValueError, match="not evenly spaced"):
        frame_interval_ps(tmp_path / "x.h5md")
    with pytest.raises(FileNotFoundError, match="no beads.pdb or system.pdb"):
        universe(tmp_path / "x.h5md")
