"""Thermal heads start at zero and stay there when their targets hold nothing the validation
frames can confirm (issue 14: noisy heads, amplified by dB and dB², made trf2 transfer worse
than fm). On targets of pure noise, trf2 must come out as fm at every temperature; on the
exact order-1 signal it must move."""

from __future__ import annotations

import numpy as np
import pytest

from tests.unit.targets.conftest import BETA, BOX, ORACLE
from thermocg.config import config_from_dict
from thermocg.models.stage import fit_variant
from thermocg.models.training import TrainingData
from thermocg.units import KB

T0 = 1.0 / (KB * BETA)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    x = ORACLE.sample_frames(12, 64, BOX, BETA, rng, equilibration_sweeps=20, sweeps_between=2)
    exact = ORACLE.exact_frames(x, BOX, BETA)
    return x, exact, rng


def _config():
    return config_from_dict({"reference": {"n_molecules": 64, "density_g_cm3": 0.5, "cutoff_A": 6.0},
                             "targets": {"baseline_cutoff_A": 5.5},
                             "train": {"cutoff_A": 5.0, "dist_soft_max_A": 4.5, "n_features": 8,
                                       "n_sensitivities": 6, "max_epochs": 4, "batch_frames": 3,
                                       "valid_fraction": 0.25, "learning_rate": 3e-3, "T0_K": 300.0},
                             "evaluate": {"rdf_r_max_A": 5.0, "adf_r_cut_A": 3.4}})


def _fit(x, targets):
    data = TrainingData(positions=x, box=np.repeat(BOX[None], len(x), 0), targets=targets,
                        beta=np.full(len(x), BETA))
    model, histories = fit_variant(_config(), "trf2", 2, T0, data, show_progress=False, variant="trf2", seed=1)
    return model, histories


def test_noise_targets_leave_trf2_equal_to_fm(frames):
    x, exact, rng = frames
    noise = {k: 5.0 * rng.normal(size=x.shape) for k in (1, 2)}
    model, histories = _fit(x, {0: exact["F"], **noise})
    assert histories["trf2-thermal"]["best_epoch"] == -1  # no epoch beat the zero start
    box = BOX[None].repeat(2, 0)
    at_t0 = model.forces_numpy(x[:2], box, T0)
    for temp in (0.6 * T0, 2.0 * T0):
        np.testing.assert_array_equal(model.forces_numpy(x[:2], box, temp), at_t0)


def test_a_real_signal_moves_the_heads(frames):
    x, exact, _ = frames
    model, histories = _fit(x, {0: exact["F"], 1: exact["F1"], 2: exact["F2"]})
    assert histories["trf2-thermal"]["best_epoch"] >= 0  # an epoch beat zero
    box = BOX[None].repeat(2, 0)
    assert np.abs(model.forces_numpy(x[:2], box, 2.0 * T0) - model.forces_numpy(x[:2], box, T0)).max() > 1e-3
