"""Local energy sums: brute force, and the limits r_e -> 0 (own energy) and r_e -> box (total)."""

from __future__ import annotations

import numpy as np

from thermocg.targets.local import local_sum, neighbour_matrix


def test_local_sum_matches_bruteforce_and_limits():
    rng = np.random.default_rng(4)
    n, box = 60, np.array([12.0, 13.0, 14.0])
    x = rng.uniform(0, 1, (2, n, 3)) * box
    x[1] += 40.0  # unwrapped coordinates work too
    u = rng.normal(size=(2, n))
    boxes = np.stack([box, box])
    r_e = 4.5
    got = local_sum(u, x, boxes, r_e)
    for k in range(2):
        d = x[k][:, None] - x[k][None]
        d -= box * np.round(d / box)
        near = np.linalg.norm(d, axis=-1) < r_e
        np.testing.assert_allclose(got[k], near @ u[k], atol=1e-12)
    np.testing.assert_allclose(local_sum(u, x, boxes, 1e-9), u, atol=1e-12)
    np.testing.assert_allclose(local_sum(u, x, boxes, 100.0), np.repeat(u.sum(1, keepdims=True), n, 1), atol=1e-12)


def test_neighbour_matrix_is_symmetric_with_unit_diagonal():
    rng = np.random.default_rng(5)
    box = np.full(3, 10.0)
    a = neighbour_matrix(rng.uniform(0, 10, (40, 3)), box, 3.0).toarray()
    np.testing.assert_array_equal(a, a.T)
    np.testing.assert_array_equal(np.diag(a), 1.0)
    assert 0 < a.sum() < 40 * 40
