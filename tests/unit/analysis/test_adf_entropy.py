"""ADF: uncorrelated neighbours give sin(theta)/2, a simple cubic lattice its 90/180 degree
peaks in the ratio 12:3; the pair excess entropy of known g(r); the peak finder."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.analysis import ADF, first_peak, integrated_absolute_error, pair_excess_entropy


def test_ideal_gas_adf_is_half_sine():
    rng = np.random.default_rng(1)
    box = np.full(3, 20.0)
    x = rng.uniform(0, 1, (30, 400, 3)) * box
    adf = ADF(r_cut_A=3.4, bins=18).compute(x, box)
    theta, p = adf.bin_centers, adf.adf
    width = np.pi / 18
    expected = 0.5 * (np.cos(theta - width / 2) - np.cos(theta + width / 2)) / width  # bin average
    # triplets share centres, so counts are not quite Poisson: 5 sigma of the Poisson error
    sigma = np.sqrt(expected / (adf.n_triplets * width))
    assert np.all(np.abs(p - expected) < 5 * sigma + 1e-3), (p, expected)
    assert np.sum(p) * width == pytest.approx(1.0, rel=1e-12)


def test_simple_cubic_lattice_angles():
    a = 3.0
    grid = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    adf = ADF(r_cut_A=3.2, bins=180).compute(grid + 0.3, np.full(3, 5 * a))
    width = np.pi / 180
    mass = adf.adf * width
    # six neighbours: 15 pairs per bead, 12 at 90 degrees and 3 at 180
    assert adf.n_triplets == 125 * 15
    at90 = mass[np.abs(np.degrees(adf.bin_centers) - 90) < 1].sum()
    at180 = mass[np.degrees(adf.bin_centers) > 178].sum()
    assert at90 == pytest.approx(12 / 15, abs=1e-12)
    assert at180 == pytest.approx(3 / 15, abs=1e-12)


def test_adf_errors():
    with pytest.raises(RuntimeError, match="before compute"):
        _ = ADF().adf
    with pytest.raises(ValueError, match="no bead has two neighbours"):
        ADF(r_cut_A=1.0).compute(np.arange(12, dtype=float).reshape(4, 3) * 3, np.full(3, 30.0))


def test_pair_excess_entropy_limits():
    r = np.linspace(0, 10, 20001)
    assert pair_excess_entropy(r, np.ones_like(r), 0.03) == pytest.approx(0.0, abs=1e-12)
    # hard-sphere-like step g: s2 = -2 pi rho sigma^3 / 3 (the g ln g term vanishes)
    sigma, rho = 3.0, 0.03
    g = (r >= sigma).astype(float)
    assert pair_excess_entropy(r, g, rho) == pytest.approx(-2 * np.pi * rho * sigma**3 / 3, rel=1e-3)
    # a structured g costs entropy: s2 < 0 for any g != 1 (the integrand g ln g - g + 1 >= 0)
    g2 = 1 + 0.5 * np.sin(r) * np.exp(-r / 3)
    assert pair_excess_entropy(r, g2, rho) < 0


def test_peak_and_distance_between_curves():
    x = np.linspace(0, 6, 61)
    y = 3.0 - (x - 2.83) ** 2
    pos, h = first_peak(x, y)
    assert pos == pytest.approx(2.83, abs=1e-9) and h == pytest.approx(3.0, abs=1e-9)
    assert integrated_absolute_error(x, np.zeros_like(x), np.ones_like(x)) == pytest.approx(6.0)
