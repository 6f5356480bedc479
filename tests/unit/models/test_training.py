"""A tiny force-matching training on reference water lowers the validation loss; an
interrupted training resumes from its checkpoint to the same result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
from thermocg.models.training import TrainingData, TrainSettings, train_heads


@pytest.fixture(scope="module")
def water(water64):
    return water64[1]


def _model(cg, seed=0):
    torch.manual_seed(seed)
    net = build_network(NetworkSettings(cutoff_A=6.0, n_features=16, n_sensitivities=8))
    prior = RepulsivePrior.fit(cg.positions, cg.box, cg.forces)
    return ThermalForceField(net, prior, beta_of(300.0), order=0)


def _data(cg, frames=slice(0, 20)):
    return TrainingData(positions=cg.positions[frames], box=cg.box[frames], targets={0: cg.forces[frames]})


def test_force_matching_lowers_the_validation_loss(water):
    model = _model(water)
    settings = TrainSettings(max_epochs=6, batch_frames=4, learning_rate=3e-3, valid_fraction=0.25)
    h = train_heads(model, _data(water), settings, show_progress=False)
    # normalised MSE: 1 for a model that predicts zero force; the untrained net is near that
    assert h["valid_before"] > 0.8
    assert h["best_valid"] < 0.9 * h["valid_before"], h
    assert set(h["train_frames"]).isdisjoint(h["valid_frames"])


def test_interrupted_training_resumes(water, tmp_path):
    settings = TrainSettings(max_epochs=4, batch_frames=5, learning_rate=3e-3, valid_fraction=0.25,
                             early_stop_patience=100)
    straight = train_heads(_model(water), _data(water, slice(0, 12)), settings, show_progress=False)

    ck = tmp_path / "train.ckpt"
    first = train_heads(_model(water), _data(water, slice(0, 12)),
                        TrainSettings(**{**settings.__dict__, "max_epochs": 2}), checkpoint=ck, show_progress=False)
    assert len(first["valid"]) == 2 and ck.exists()
    resumed = train_heads(_model(water, seed=99), _data(water, slice(0, 12)), settings, checkpoint=ck,
                          show_progress=False)
    assert len(resumed["valid"]) == 4
    np.testing.assert_allclose(resumed["valid"], straight["valid"], rtol=1e-5)


def test_energy_matching_of_per_bead_energies(water):
    """A head fitted to per-molecule energies (the U_J baseline, em per-molecule): the per-bead
    constant starts at the data's mean, and the fit explains part of the rest."""
    model = _model(water)
    data = TrainingData(positions=water.positions[:24], box=water.box[:24], energies={1: water.bead_energy[:24]})
    h = train_heads(model, data, TrainSettings(max_epochs=8, batch_frames=4, learning_rate=3e-3,
                                               valid_fraction=0.25), show_progress=False)
    train = h["train_frames"]
    assert float(model.bead_offset[1]) == pytest.approx(water.bead_energy[train].mean(), rel=1e-6)
    assert h["best_valid"] < 0.9 * h["valid_before"], h
    # total energies: the sum of per-bead energies is fitted, the constant is the mean per bead
    total = TrainingData(positions=water.positions[:24], box=water.box[:24],
                         energies={1: water.bead_energy[:24].sum(1)})
    model = _model(water)
    train_heads(model, total, TrainSettings(max_epochs=1, valid_fraction=0.25), show_progress=False)
    assert float(model.bead_offset[1]) == pytest.approx(water.bead_energy[train].mean(), rel=1e-6)


def test_bad_training_data_is_refused(water):
    with pytest.raises(ValueError, match="order-0 targets have shape"):
        TrainingData(positions=water.positions, box=water.box, targets={0: water.forces[:, :3]})
    with pytest.raises(ValueError, match="energy targets of head 1 have shape"):
        TrainingData(positions=water.positions, box=water.box, energies={1: water.bead_energy[:, :3]})
    with pytest.raises(ValueError, match="without force targets"):
        TrainingData(positions=water.positions, box=water.box, targets={1: water.forces},
                     energies={1: water.bead_energy})


def test_non_finite_training_data_is_refused(water):
    forces = water.forces[:6].copy()
    forces[4, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"order-0 targets: 1 frame\(s\) hold NaN.*first: frame 4"):
        TrainingData(positions=water.positions[:6], box=water.box[:6], targets={0: forces})
    energy = water.bead_energy[:6].sum(1)
    energy[0] = np.inf
    with pytest.raises(ValueError, match="energy targets of head 1: 1 frame"):
        TrainingData(positions=water.positions[:6], box=water.box[:6], energies={1: energy})
