"""A trained trf2 model on the pairwise 3-D oracle (THEORY.md §5) recovers the exact F^(1)
and F^(2), and predicts the change of the mean force with temperature, which an fm model
cannot (it has none).

The targets here are the exact conditional means at beta0 (F, F^(1), F^(2) at each sampled
configuration): this checks the model and its training; the estimators' bias and noise
are tested on the same oracle in tests/unit/targets. A float32 network trained for 25
epochs at a learning rate of 5e-3 on 48 frames of 64 beads, on 16 held-out frames (measured
on this project's 2-core CPU; 40 epochs at 3e-3 gave the same errors in 1.6x the time):
relative RMS error of F^(1) 0.12, F^(2) 0.10; of the temperature response F(beta) - F(beta0)
0.16 at beta = 0.6 and 0.14 at 1.3 (fm: exactly 1). The bounds are 0.25 for F^(1), F^(2) and
0.3 for the response. The exact mean force changes by 9 % (beta = 0.6) and 5 % (1.3) of its
RMS, less than the network's error in F itself after so short a training, so the total error
separates the models only at beta = 0.6: trf2 0.222, fm 0.235.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, build_network
from thermocg.models.training import TrainingData, TrainSettings, _predictions, train_heads
from thermocg.targets.oracle import PairTwoStateOracle
from thermocg.units import KB

# slow: trains trf2 on the exact oracle: ~35 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

ORACLE = PairTwoStateOracle(e0=3.0, g=5.0, a=0.5)  # stronger temperature dependence than the default
BOX = np.full(3, 12.0)
BETA0 = 1.0  # mol/kcal (T0 = 503 K)
N_TRAIN, N_TEST = 48, 16


def _rel(pred, exact):
    return float(np.sqrt(np.mean((pred - exact) ** 2)) / np.sqrt(np.mean(exact**2)))


@pytest.fixture(scope="module")
def trained():
    x = ORACLE.sample_frames(N_TRAIN + N_TEST, 64, BOX, BETA0, np.random.default_rng(0))
    exact = ORACLE.exact_frames(x, BOX, BETA0)
    targets = {k: exact[name] for k, name in enumerate(("F", "F1", "F2"))}
    box = np.tile(BOX, (len(x), 1))
    torch.manual_seed(0)
    settings = NetworkSettings(cutoff_A=5.5, dist_soft_min_A=1.5, dist_soft_max_A=5.0, n_features=16)
    tr = slice(0, N_TRAIN)
    prior = RepulsivePrior.fit(x[tr], box[tr], targets[0][tr], r_max_A=5.5)
    model = ThermalForceField(build_network(settings), prior, BETA0, order=2, settings=settings)
    data = TrainingData(x[tr], box[tr], {k: t[tr] for k, t in targets.items()})
    train_heads(model, data, TrainSettings(max_epochs=25, batch_frames=4, learning_rate=5e-3, lr_patience=5),
                show_progress=False)
    return model, x[N_TRAIN:], {k: t[N_TRAIN:] for k, t in targets.items()}


def test_trf2_recovers_the_exact_thermal_response_forces(trained):
    model, x, exact = trained
    species, xt, cell = model._tensors(x, BOX)
    pred = {k: v.detach().numpy() for k, v in _predictions(model, xt, cell, species, [0, 1, 2],
                                                              create_graph=False).items()}
    assert _rel(pred[1], exact[1]) < 0.25
    assert _rel(pred[2], exact[2]) < 0.25


@pytest.mark.parametrize("beta", [0.6, 1.3])
def test_trf2_predicts_the_temperature_response_that_fm_misses(trained, beta):
    """T = 1.67 T0 and 0.77 T0: the response F(beta) - F(beta0) of trf2 within 0.3 of the exact
    one; fm's is zero, a relative error of exactly 1. At beta = 0.6 the total error too."""
    model, x, _ = trained
    exact_0 = ORACLE.exact_frames(x, BOX, BETA0)["F"]
    exact = ORACLE.exact_frames(x, BOX, beta)["F"]
    response = model.forces_numpy(x, BOX, 1.0 / (KB * beta)) - model.forces_numpy(x, BOX, 1.0 / (KB * BETA0))
    fm = ThermalForceField(model.network, model.prior, BETA0, order=0)
    fm_response = fm.forces_numpy(x, BOX, 1.0 / (KB * beta)) - fm.forces_numpy(x, BOX, 1.0 / (KB * BETA0))
    assert _rel(fm_response, exact - exact_0) == pytest.approx(1.0)
    assert _rel(response, exact - exact_0) < 0.3
    if beta == 0.6:
        trf2_total = _rel(model.forces_numpy(x, BOX, 1.0 / (KB * beta)), exact)
        fm_total = _rel(fm.forces_numpy(x, BOX, 1.0 / (KB * beta)), exact)
        assert trf2_total < 0.97 * fm_total
