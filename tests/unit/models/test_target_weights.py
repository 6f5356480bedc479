"""Per-element loss weights (restrained targets, issue 15): a weight-0 target is missing (its
value cannot matter), the weights' overall scale cannot matter, and a frame without thermal
targets is not in the thermal phase at all."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.models.test_thermal_null import T0, _config
from tests.unit.targets.conftest import BETA, BOX, ORACLE
from thermocg.models.stage import fit_variant
from thermocg.models.training import TrainingData


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(5)
    x = ORACLE.sample_frames(12, 64, BOX, BETA, rng, equilibration_sweeps=20, sweeps_between=2)
    return x, ORACLE.exact_frames(x, BOX, BETA), rng


def _fit(x, targets, weights):
    data = TrainingData(positions=x, box=np.repeat(BOX[None], len(x), 0), targets=targets,
                        beta=np.full(len(x), BETA), weights=weights)
    model, hist = fit_variant(_config(), "trf1", 1, T0, data, show_progress=False, variant="trf1", seed=2)
    return model, hist


def _response(model, x):
    box = BOX[None].repeat(len(x), 0)
    return model.forces_numpy(x, box, 0.8 * T0) - model.forces_numpy(x, box, T0)


@pytest.mark.slow  # ~6 s on 2 cores; CI runs it
def test_missing_targets_do_not_matter_and_neither_does_the_weights_scale(frames):
    """Half of every sampled frame's components and three whole frames missing (weight 0): two
    different garbage values there give the same model, to the bit, and so do the weights x 7."""
    x, exact, rng = frames
    w = (rng.random(x.shape) < 0.5).astype(float)
    w[-3:] = 0.0  # three frames without thermal targets
    garbage_a = np.where(w > 0, exact["F1"], 1e3 * rng.normal(size=x.shape))
    garbage_b = np.where(w > 0, exact["F1"], -50.0)
    model_a, hist_a = _fit(x, {0: exact["F"], 1: garbage_a}, {1: w})
    model_b, _ = _fit(x, {0: exact["F"], 1: garbage_b}, {1: w})
    model_c, _ = _fit(x, {0: exact["F"], 1: garbage_a}, {1: 7.0 * w})
    ra = _response(model_a, x[:2])
    np.testing.assert_array_equal(_response(model_b, x[:2]), ra)
    np.testing.assert_allclose(_response(model_c, x[:2]), ra, rtol=1e-4, atol=1e-6)
    assert np.abs(ra).max() > 1e-3  # it learned a response from the components it has
    # the thermal phase saw the 9 frames with targets only
    thermal = hist_a["trf1-thermal"]
    assert sorted(thermal["train_frames"] + thermal["valid_frames"]) == list(range(9))


def test_garbage_with_weight_one_does_matter(frames):
    """The control: the same garbage weighted 1 changes the model (the test above can fail)."""
    x, exact, rng = frames
    w = (rng.random(x.shape) < 0.5).astype(float)
    garbage = np.where(w > 0, exact["F1"], 1e3 * rng.normal(size=x.shape))
    model_w, _ = _fit(x, {0: exact["F"], 1: garbage}, {1: w})
    model_1, _ = _fit(x, {0: exact["F"], 1: garbage}, {1: np.ones_like(w)})
    assert np.abs(_response(model_w, x[:2]) - _response(model_1, x[:2])).max() > 1e-3


def test_bad_weights_are_refused(frames):
    x, exact, _ = frames
    box = np.repeat(BOX[None], len(x), 0)
    for w, match in ((-np.ones(x.shape), ">= 0"), (np.zeros(x.shape), "not all 0"), (np.ones((2, 64, 3)), "shape")):
        with pytest.raises(ValueError, match=match):
            TrainingData(positions=x, box=box, targets={0: exact["F"], 1: exact["F1"]}, weights={1: w})
    with pytest.raises(ValueError, match="no order-2 targets"):
        TrainingData(positions=x, box=box, targets={0: exact["F"]}, weights={2: np.ones(x.shape)})
