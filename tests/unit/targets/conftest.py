"""The pairwise oracle's liquid, shared by the oracle and restrained-sampling tests."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.targets.oracle import PairTwoStateOracle

ORACLE = PairTwoStateOracle()
BOX = np.full(3, 12.0)
BETA = 1.0


@pytest.fixture(scope="session")
def liquid():
    """64 beads equilibrated by Monte Carlo on the pair PMF."""
    x, acc = ORACLE.sample_positions(64, BOX, BETA, np.random.default_rng(0), sweeps=60)
    assert 0.2 < acc < 0.8
    return x
