"""RDF: ideal gas g = 1, a lattice's first peak where it must be, the onset, errors."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.analysis import RDF


def test_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    box = np.array([20.0, 22.0, 24.0])
    x = rng.uniform(0, 1, (20, 300, 3)) * box
    rdf = RDF(r_max_A=9.0, bins=18).compute(x, np.broadcast_to(box, (20, 3)))
    g, r = rdf.rdf, rdf.bin_centers
    # Poisson counts per bin: relative error 1/sqrt(expected ordered-pair count)
    shell = 4 / 3 * np.pi * ((r + 0.25) ** 3 - (r - 0.25) ** 3)
    expected = 20 * 300 * 299 / np.prod(box) * shell
    assert np.all(np.abs(g - 1) < 4.5 * np.sqrt(2 / expected)), g


def test_simple_cubic_lattice_peaks():
    a = 3.0
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    rdf = RDF(r_max_A=8.0, bins=160).compute(grid + 0.1, np.full(3, 6 * a))
    r, g = rdf.bin_centers, rdf.rdf
    peaks = r[g > 0]
    # neighbours at a, a sqrt2, a sqrt3, 2a, a sqrt5 ...
    for d in (a, a * np.sqrt(2), a * np.sqrt(3), 2 * a):
        assert np.min(np.abs(peaks - d)) < 0.05
    assert rdf.onset() == pytest.approx(a, abs=0.05)
    assert np.all(g[r < a - 0.05] == 0)


def test_errors():
    with pytest.raises(RuntimeError, match="before compute"):
        _ = RDF().rdf
    with pytest.raises(ValueError, match="half the box"):
        RDF(r_max_A=6.0).compute(np.zeros((5, 3)) + np.arange(5)[:, None], np.full(3, 10.0))
