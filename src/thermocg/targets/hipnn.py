"""HIP-NN-TS baselines for the thermal-response targets (THEORY.md §3).

The targets need three conditional means, fitted in order: F0(R) (force matching),
the per-bead energies U_J(R) (regression of the per-molecule energies u_J) and
v_J(R) (regression of the squared local-energy residual). Here each is a
HIP-NN-TS network of the same kind as the force field: F0 and U_J are two heads
of one network (head 0 = prior + W0 fitted to the mapped forces, head 1's per-bead
energies fitted to u_J), v a head of a second network fitted to (u_loc - c)^2 per
bead. :class:`HipnnBaseline` implements the baseline protocol
(:class:`thermocg.targets.baselines.Baseline`) that the pair splines implement too, so
the targets stage takes either.

Cross-fitting: with ``folds > 1`` every frame's baselines come from networks that
never saw the frame (K trainings per fit), so a baseline cannot absorb the noise
of the sample it is subtracted from. Each training keeps its own validation
split for early stopping inside its training frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, build_network
from thermocg.models.training import TrainingData, TrainSettings, train_heads
from thermocg.targets.baselines import cross_fit_splits
from thermocg.units import beta_of

@dataclass(frozen=True)
class HipnnBaseline:
    """:class:`~thermocg.targets.baselines.Baseline` from HIP-NN-TS networks.

    ``temperature_K``: of the frames (the networks' T0; an order-0 model does not depend on
    it); ``seed``: fold k trains with seed + k (F0, U_J) or seed + 100 + k (v).
    """

    network: NetworkSettings = NetworkSettings()
    train: TrainSettings = TrainSettings(max_epochs=100, require_improvement=False)
    device: str = "cpu"
    temperature_K: float = 300.0
    seed: int = 0
    show_progress: bool = False

    @classmethod
    def from_config(cls, config, temperature_K: float, show_progress: bool = True) -> "HipnnBaseline":
        """The ``[targets]`` settings (``baseline_cutoff_A``, ``baseline_n_features``,
        ``baseline_max_epochs``), ``[run] device`` and seed, for frames at ``temperature_K``."""
        from thermocg.device import pick_device
        t = config.targets
        return cls(network=NetworkSettings(cutoff_A=t.baseline_cutoff_A, dist_soft_max_A=t.baseline_cutoff_A - 0.5,
                                           n_features=t.baseline_n_features),
                   train=TrainSettings(max_epochs=t.baseline_max_epochs, require_improvement=False), device=pick_device(config.run.device).type,
                   temperature_K=temperature_K, seed=config.run.seed, show_progress=show_progress)

    def force_and_energy(self, positions, box, forces, bead_energy, folds: int, types=None):
        f0, u = _fit_force_and_energy(positions, box, forces, bead_energy, self.temperature_K, self, folds,
                                      self.seed, self.show_progress, types)
        return f0, u, {}

    def variance(self, positions, box, squared_residual, folds: int, types=None):
        return _fit_variance(positions, box, squared_residual, self.temperature_K, self, folds, self.seed,
                             self.show_progress, types)

    def with_types(self, types) -> "HipnnBaseline":
        """These settings for beads of ``types`` (None or one type: unchanged)."""
        n_types = 1 if types is None else int(np.max(types)) + 1
        return replace(self, network=replace(self.network, n_types=n_types))


def _predict_in_batches(model: ThermalForceField, positions, box, temperature_K, batch: int = 8, types=None):
    """(forces (F, N, 3), per-bead head energies (F, N, 3)) of ``model`` at the frames."""
    forces, per_bead = [], []
    for b in range(0, len(positions), batch):
        species, x, cell = model._tensors(positions[b:b + batch], box[b:b + batch], types)
        x.requires_grad_(True)
        h, bead = model.heads_and_bead_heads(species, x, cell)
        w = model.expansion(h, model.beta_tensor(temperature_K, h[0]).expand_as(h[0]))[0]
        (grad,) = torch.autograd.grad(w.sum(), x)
        forces.append(-grad.detach().cpu().numpy())
        per_bead.append(bead.detach().cpu().numpy())
    return np.concatenate(forces).astype(np.float64), np.concatenate(per_bead).astype(np.float64)


def _new_model(settings: HipnnBaseline, prior: RepulsivePrior, temperature_K, seed: int) -> ThermalForceField:
    torch.manual_seed(seed)
    return ThermalForceField(build_network(settings.network), prior, beta_of(temperature_K), order=0,
                             settings=settings.network).to(settings.device)


def _cross_fitted(fit_one, n_frames: int, folds: int, what: str, show_progress: bool):
    """(held-out frames, model fitted without them) per fold, with a progress bar over folds."""
    from thermocg.progress import tqdm

    splits = list(cross_fit_splits(n_frames, folds))
    for k, (train, held) in enumerate(tqdm(splits, desc=what, unit="fold", disable=not show_progress,
                                           leave=False)):
        yield held, fit_one(k, train)


def _fit_force_and_energy(positions, box, forces, bead_energy, temperature_K: float,
                         settings: HipnnBaseline = HipnnBaseline(), folds: int = 5, seed: int = 0,
                         show_progress: bool = False, types=None):
    """Cross-fitted F0 (F, N, 3) and U_J (F, N) from one two-head HIP-NN-TS network per fold.

    Parameters
    ----------
    positions (F, N, 3) Å; box (F, 3) Å; forces (F, N, 3) mapped forces, kcal/(mol Å);
    bead_energy (F, N) per-molecule energies u_J, kcal/mol; temperature_K: of the frames
    (the model's T0; an order-0 model does not depend on it); types (N,) bead types (None: one).
    """
    positions, box = np.asarray(positions, np.float64), np.asarray(box, np.float64)
    settings = settings.with_types(types)
    f0 = np.empty_like(np.asarray(forces, dtype=np.float64))
    u = np.empty(positions.shape[:2])

    def fit_one(k, train):
        prior = RepulsivePrior.fit(positions[train], box[train], forces[train])
        model = _new_model(settings, prior, temperature_K, seed + k)
        data = TrainingData(positions=positions[train], box=box[train], targets={0: forces[train]},
                            energies={1: bead_energy[train]}, types=types)
        train_heads(model, data, replace(settings.train, seed=seed + k), show_progress=False)
        return model

    for held, model in _cross_fitted(fit_one, len(positions), folds, "F0, U_J", show_progress):
        f0[held], per_bead = _predict_in_batches(model, positions[held], box[held], temperature_K, types=types)
        u[held] = per_bead[..., 1]
    return f0, u


def _fit_variance(positions, box, squared_residual, temperature_K: float, settings: HipnnBaseline = HipnnBaseline(),
                 folds: int = 5, seed: int = 0, show_progress: bool = False, types=None):
    """Cross-fitted v (F, N): per-bead regression of (u_loc - c)^2 on one head of a network.

    Only per-bead energies are fitted (no forces), so a step costs one backward pass.
    """
    positions, box = np.asarray(positions, np.float64), np.asarray(box, np.float64)
    settings = settings.with_types(types)
    v = np.empty(positions.shape[:2])

    def fit_one(k, train):
        no_prior = RepulsivePrior(onset_A=1.0, strength=0.0)  # per-bead energies do not include the prior
        model = _new_model(settings, no_prior, temperature_K, seed + 100 + k)
        data = TrainingData(positions=positions[train], box=box[train], energies={1: squared_residual[train]},
                            types=types)
        train_heads(model, data, replace(settings.train, seed=seed + 100 + k), show_progress=False)
        return model

    for held, model in _cross_fitted(fit_one, len(positions), folds, "v", show_progress):
        v[held] = _predict_in_batches(model, positions[held], box[held], temperature_K, types=types)[1][..., 1]
    return v
