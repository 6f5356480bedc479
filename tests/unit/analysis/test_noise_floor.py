"""The noise floor of the structural errors (issue 29): the IAE between the two halves of a run
measures its sampling noise, and sqrt(h_a^2 + h_b^2) / 2 is the IAE two runs of the same
structure show from noise alone. Checked on an ideal gas, whose frames are independent."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.config import config_from_dict
from thermocg.evaluate.stage import Structure, iae_floor

CONFIG = config_from_dict({"evaluate": {"rdf_r_max_A": 5.5, "rdf_bins": 60, "adf_r_cut_A": 3.4, "adf_bins": 30,
                                        "blocks": 4}})
EDGE = 12.0


def _gas(rng, n_frames, n_beads=64):
    return rng.uniform(0.0, EDGE, (n_frames, n_beads, 3)), np.full((n_frames, 3), EDGE)


def test_identical_halves_have_no_noise_and_the_floor_adds_in_quadrature():
    x, box = _gas(np.random.default_rng(0), 4)
    twice = Structure(CONFIG, np.concatenate([x, x]), np.concatenate([box, box]))
    assert twice.halves == {"rdf": 0.0, "adf": 0.0}
    once = Structure(CONFIG, x, box)
    assert once.halves["rdf"] > 0 and once.halves["adf"] > 0
    s = once.summary(twice)
    assert s["rdf_halves_iae"] == once.halves["rdf"] and s["adf_halves_iae"] == once.halves["adf"]
    assert s["rdf_iae_floor"] == pytest.approx(once.halves["rdf"] / 2)  # the other run has no noise
    assert iae_floor(3.0, 4.0) == pytest.approx(2.5)
    assert "rdf_iae_floor" not in Structure(CONFIG, x[:1], box[:1]).summary(twice)  # one frame: no halves


@pytest.mark.slow  # ~10 s on 2 cores; CI runs it
@pytest.mark.parametrize("name", ["rdf", "adf"])
def test_the_floor_predicts_two_runs_and_falls_as_one_over_sqrt_frames(name):
    """Six pairs of independent 16-frame runs: their IAE over the floor is 1 on average (the
    halves give each run's noise); the halves IAE of 64 frames is half that of 16."""
    over_floor, shrink = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        a, b = Structure(CONFIG, *_gas(rng, 16)), Structure(CONFIG, *_gas(rng, 16))
        s = b.summary(a)
        over_floor.append(s[f"{name}_iae"]["value"] / s[f"{name}_iae_floor"])
        shrink.append(a.halves[name] / Structure(CONFIG, *_gas(rng, 64)).halves[name])
    assert 0.85 < np.mean(over_floor) < 1.3, over_floor
    assert 1.5 < np.mean(shrink) < 2.8, shrink
