"""MSD and D: ballistic motion gives (v t)^2, a random walk gives 6 D t with the D it was
made with, independent trajectories give an uncertainty that covers the truth; the
Yeh-Hummer correction against a hand calculation."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.analysis import MSD, yeh_hummer_correction


def test_ballistic_motion_is_v_t_squared():
    rng = np.random.default_rng(0)
    v = rng.normal(0, 2.0, (50, 3))
    t = np.arange(40) * 0.01
    x = rng.uniform(0, 10, (50, 3))[None] + t[:, None, None] * v[None]
    m = MSD().compute(x, 0.01)
    # freud works in single precision: agreement to ~1e-6 relative
    np.testing.assert_allclose(m.msd, np.mean((v ** 2).sum(1)) * m.lag_time_ps ** 2, rtol=1e-5, atol=1e-7)


def test_random_walk_gives_its_diffusion_coefficient():
    rng = np.random.default_rng(1)
    d_true, dt = 0.25, 0.1  # Å^2/ps, ps
    trajs = [np.cumsum(rng.normal(0, np.sqrt(2 * d_true * dt), (200, 100, 3)), axis=0) for _ in range(6)]
    m = MSD().compute(trajs, dt)
    assert m.diffusion_coefficient == pytest.approx(d_true, rel=0.05)
    assert abs(m.diffusion_coefficient - d_true) < 4 * m.diffusion_error
    assert m.diffusion_error < 0.05 * d_true


def test_yeh_hummer_correction_by_hand():
    # kB T / (6 pi eta L) at 300 K, 0.729 mPa s (SPC/E), L = 18.6 Å, times 2.837297
    kt = 1.380649e-23 * 300.0
    expected = 2.837297 * kt / (6 * np.pi * 0.729e-3 * 18.6e-10) * 1e8
    assert yeh_hummer_correction(300.0, 18.6, 0.729) == pytest.approx(expected, rel=1e-9)
    assert 0.04 < expected < 0.05  # ~20 % of water's D in a 216-molecule box: why it is reported


def test_msd_errors():
    with pytest.raises(ValueError, match="common length"):
        MSD().compute([np.zeros((5, 2, 3)), np.zeros((6, 2, 3))], 0.1)
    with pytest.raises(ValueError, match="fit_window"):
        MSD(fit_window=(0.5, 0.2))
