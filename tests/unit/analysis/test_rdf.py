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


def test_partial_rdfs_of_an_ideal_mixture_are_one_and_add_up_to_the_total():
    """An ideal gas of two types (100 and 200 beads): every partial g_ab is 1 within its Poisson
    error, and the total is the composition-weighted sum sum_ab N_a N_b' g_ab / (N (N - 1))
    (N_b' = N_b - [a = b]), exactly, bin by bin. A NaCl-like lattice (two types alternating)
    has no a-a pair at the nearest distance and only a-b ones there."""
    rng = np.random.default_rng(1)
    box = np.array([20.0, 22.0, 24.0])
    x = rng.uniform(0, 1, (20, 300, 3)) * box
    types = np.repeat([0, 1], [100, 200])
    b = np.broadcast_to(box, (20, 3))
    total = RDF(9.0, 18).compute(x, b).rdf
    weighted = np.zeros(18)
    r = RDF(9.0, 18).compute(x, b).bin_centers
    shell = 4 / 3 * np.pi * ((r + 0.25) ** 3 - (r - 0.25) ** 3)
    for a, c in ((0, 0), (0, 1), (1, 0), (1, 1)):
        g = RDF(9.0, 18).compute(x, b, types, (a, c)).rdf
        n_a, n_c = int(np.sum(types == a)), int(np.sum(types == c)) - (a == c)
        expected = 20 * n_a * n_c / np.prod(box) * shell  # counted pairs per bin (ordered)
        assert np.all(np.abs(g - 1) < 4.5 * np.sqrt(1 / expected + (a == c) / expected)), (a, c, g)
        weighted += n_a * n_c * g / (300 * 299)
    np.testing.assert_allclose(weighted, total, rtol=1e-12)
    a = 3.0
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    kinds = grid.sum(axis=1) % 2  # rock salt: nearest neighbours differ in type
    same = RDF(5.0, 100).compute(grid * a + 0.1, np.full(3, 6 * a), kinds, (0, 0))
    cross = RDF(5.0, 100).compute(grid * a + 0.1, np.full(3, 6 * a), kinds, (0, 1))
    assert same.onset() == pytest.approx(a * np.sqrt(2), abs=0.05) and cross.onset() == pytest.approx(a, abs=0.05)
    with pytest.raises(ValueError, match="a partial g_ab needs both types and pair"):
        RDF(4.0, 80).compute(grid * a, np.full(3, 6 * a), kinds)
