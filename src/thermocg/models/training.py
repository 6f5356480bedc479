"""Fitting the heads of a :class:`ThermalForceField` to the targets (THEORY.md §3).

Each head's negative gradient is regressed on its own target, at the reference
temperature: ``-grad(W_prior + W0)`` on the mapped forces t0, ``-grad W1`` on t1,
``-grad W2`` on t2 — conditional means, so squared error is the right loss. A head
can instead be regressed on energies (per system or per bead): energy matching's
U(R), and the per-bead baselines U_J(R) and v_J(R) of the targets. The
loss of order k is the mean squared error divided by the variance of its target
(so the weights in the config compare like with like). A plain torch loop, not
hippynn's ``setup_and_train``: the heads are trained against different targets
through one custom wrapper (prior + temperature), which its single-target
assembly does not express.

Float32 by default; Adam; the learning rate halves when the validation loss
stalls; early stopping keeps the best state; a checkpoint after every epoch
(temporary name, then rename) lets an interrupted training resume. A training must
improve or fail: a non-finite loss, or a best validation loss no lower than before
training, raises TrainingError (and nothing is saved by the train stage).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from thermocg.errors import TrainingError
from thermocg.models.thermal import ThermalForceField, set_type_offsets
from thermocg.stagedir import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    max_epochs: int = 200
    batch_frames: int = 4
    learning_rate: float = 1e-3
    lr_patience: int = 10
    lr_factor: float = 0.5
    early_stop_patience: int = 30
    valid_fraction: float = 0.2
    #: loss weight of the order-0, 1, 2 targets (0 switches an order off)
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    #: a best validation loss no lower than before training is an error (TrainingError); off,
    #: it is a warning (the targets' baseline fits, one of several cross-fitted regressions)
    require_improvement: bool = True
    #: the weights before training compete with every epoch's for "best" (validation loss): a fit
    #: that never beats its starting point returns it (thermal heads that start at zero stay zero
    #: when their targets hold no signal the validation frames can confirm)
    start_is_a_candidate: bool = False


@dataclass
class TrainingData:
    """CG frames and their targets, each frame at its own temperature.

    positions (F, N, 3) Å; box (F, 3) Å; targets {order: (F, N, 3)} (0: mapped forces,
    1: t1, 2: t2; any subset); beta (F,) mol/kcal, the inverse temperature of each
    frame (None: every frame at the model's beta0); energies {head: (F,) or (F, N)}:
    energy targets of a head, per system (the sum of its per-bead energies is fitted)
    or per bead (energy matching of U, and the per-bead baselines U_J and v_J); types (N,) the
    bead type of each bead, 0-based, the same in every frame (None: one type).
    """

    positions: np.ndarray
    box: np.ndarray
    targets: dict[int, np.ndarray] = field(default_factory=dict)
    beta: np.ndarray | None = None
    energies: dict[int, np.ndarray] = field(default_factory=dict)
    #: per-element loss weights of a target order, like its targets (F, N, 3), >= 0; an order
    #: without them weighs every element 1. Weight 0 marks a missing target (its value is ignored).
    weights: dict[int, np.ndarray] = field(default_factory=dict)
    types: np.ndarray | None = None

    def subset(self, frames) -> "TrainingData":
        """These data on ``frames`` (indices or a boolean mask over frames) only."""
        return TrainingData(positions=self.positions[frames], box=self.box[frames],
                            targets={k: t[frames] for k, t in self.targets.items()},
                            beta=None if self.beta is None else np.asarray(self.beta)[frames],
                            energies={k: np.asarray(e)[frames] for k, e in self.energies.items()},
                            weights={k: w[frames] for k, w in self.weights.items()}, types=self.types)

    def __post_init__(self):
        f = self.positions.shape[0]
        if self.beta is not None and np.shape(self.beta) != (f,):
            raise ValueError(f"beta has shape {np.shape(self.beta)}, expected ({f},)")
        for k, t in self.targets.items():
            if t.shape != self.positions.shape:
                raise ValueError(f"order-{k} targets have shape {t.shape}, expected {self.positions.shape}")
        for k, e in self.energies.items():
            if np.shape(e) not in ((f,), self.positions.shape[:2]):
                raise ValueError(f"energy targets of head {k} have shape {np.shape(e)}, expected ({f},) "
                                 f"or {self.positions.shape[:2]}")
            if k not in (0, 1, 2) or k in self.targets:
                raise ValueError(f"energy targets of head {k}: need a head 0-2 without force targets")
        for k, w in self.weights.items():
            if k not in self.targets:
                raise ValueError(f"weights of order {k}: no order-{k} targets")
            if w.shape != self.positions.shape:
                raise ValueError(f"order-{k} weights have shape {w.shape}, expected {self.positions.shape}")
            if not (np.all(np.isfinite(w)) and np.all(w >= 0) and np.any(w > 0)):
                raise ValueError(f"order-{k} weights must be finite, >= 0 and not all 0")
        if self.box.shape != (f, 3):
            raise ValueError(f"box has shape {self.box.shape}, expected ({f}, 3)")
        if self.types is not None and np.shape(self.types) != self.positions.shape[1:2]:
            raise ValueError(f"types has shape {np.shape(self.types)}, expected ({self.positions.shape[1]},)")
        arrays = {"positions": self.positions, "box": self.box, "beta": self.beta,
                  **{f"order-{k} targets": t for k, t in self.targets.items()},
                  **{f"energy targets of head {k}": e for k, e in self.energies.items()}}
        for name, a in arrays.items():
            if a is None:
                continue
            bad = ~np.isfinite(np.asarray(a, dtype=np.float64)).reshape(f, -1).all(axis=1)
            if bad.any():
                raise ValueError(f"{name}: {int(bad.sum())} frame(s) hold NaN or infinite values "
                                 f"(first: frame {int(np.argmax(bad))}); training needs finite values")


def _predictions(model: ThermalForceField, x, cell, species, orders, beta=None, create_graph=True,
                 energy_heads=()):
    """The model's force and its beta derivatives at each frame's dB = beta - beta0.

    With ``W = h0 + dB h1 + dB^2/2 h2`` (h0 = prior + W0; terms above the model's
    order dropped): order 0 is ``F = -grad W``, order 1 ``dF/dbeta = -grad(h1 + dB h2)``,
    order 2 ``d2F/dbeta2 = -grad h2``. At dB = 0 each order is one head's gradient;
    fitting several temperatures at once is Hermite interpolation in beta (trf-multi).
    ``beta``: (B,) tensor of the frames' inverse temperatures, or None (all at beta0).
    The energy/entropy form gives the same three quantities by the chain rule
    (:meth:`ThermalForceField.expansion`). ``energy_heads``: heads whose per-bead
    energies (n_systems, N) are returned too, under the key ``("energy", head)``.
    """
    x = x.detach().requires_grad_(bool(orders))
    h, per_bead = model.heads_and_bead_heads(species, x, cell)
    out = {("energy", k): per_bead[..., k] for k in energy_heads}
    if orders:
        energy_of = model.expansion(h, model.beta0.to(h[0].dtype).expand_as(h[0]) if beta is None else beta)
        out.update({k: -torch.autograd.grad(energy_of[k].sum(), x, create_graph=create_graph,
                                            retain_graph=True)[0] for k in orders})
    return out


def train_heads(model: ThermalForceField, data: TrainingData, settings: TrainSettings = TrainSettings(),
                checkpoint: Path | None = None, show_progress: bool = True) -> dict:
    """Train ``model`` in place; returns the history (per-epoch train/valid loss, lr, best epoch).

    Only the heads the targets read are evaluated (separate networks: the others' networks
    are skipped, e.g. energy matching's W0 phase never runs its U network).
    """
    orders = [k for k in sorted(data.targets) if settings.weights[k] > 0]
    energy_heads = [k for k in sorted(data.energies) if settings.weights[k] > 0]
    if not orders and not energy_heads:
        raise ValueError("no target with a positive loss weight")
    at_beta0 = data.beta is None or np.allclose(data.beta, float(model.beta0), rtol=1e-6, atol=0.0)
    needed = (model.heads_used(orders, at_beta0) if orders else ()) + tuple(energy_heads)
    with model.using_heads(needed):
        return _train(model, data, settings, orders, energy_heads, checkpoint, show_progress)


def _train(model, data, settings, orders, energy_heads, checkpoint, show_progress):
    from thermocg.progress import tqdm

    param = next(q for q in model.parameters() if q.is_floating_point())
    dtype, device = param.dtype, param.device
    rng = np.random.default_rng(settings.seed)
    n = data.positions.shape[0]
    order_idx = rng.permutation(n)
    n_valid = max(1, int(round(settings.valid_fraction * n)))
    valid, train = order_idx[:n_valid], order_idx[n_valid:]
    if len(train) == 0:
        raise ValueError(f"{n} frames leave none for training after a {settings.valid_fraction} validation split")
    x_all = torch.as_tensor(data.positions, dtype=dtype, device=device)
    cell_all = torch.as_tensor(np.stack([np.diag(b) for b in data.box]), dtype=dtype, device=device)
    species_all = model.species(data.types, x_all.shape[:2], device)
    targets = {k: torch.as_tensor(data.targets[k], dtype=dtype, device=device) for k in orders}
    beta_all = torch.as_tensor(np.asarray(data.beta) if data.beta is not None else np.full(n, float(model.beta0)),
                               dtype=dtype, device=device)
    weights = {k: torch.as_tensor(data.weights[k], dtype=dtype, device=device) for k in orders if k in data.weights}
    scale, mean_weight = {}, {}
    for k in orders:  # the (weighted) variance of each target over the training frames, and its mean weight
        t_k = targets[k][train]
        w_k = weights[k][train] if k in weights else torch.ones_like(t_k)
        mean_weight[k] = float(w_k.mean())
        if mean_weight[k] <= 0:
            raise ValueError(f"order-{k} targets: none in the {len(train)} training frames (all weights 0)")
        centre = (w_k * t_k).sum() / w_k.sum()
        scale[k] = float((w_k * (t_k - centre) ** 2).sum() / w_k.sum()) or 1.0
    energies, per_system = {}, {}
    for k in energy_heads:
        e = np.asarray(data.energies[k], dtype=np.float64)
        per_system[k] = e.ndim == 1
        n_beads = data.positions.shape[1]
        per_bead_mean = float(e[train].mean()) / (n_beads if per_system[k] else 1)
        model.bead_offset[k] = per_bead_mean  # fit fluctuations about the mean (a checkpoint restores its own)
        spread = e[train]
        if not per_system[k] and data.types is not None:
            # per-bead energies of a mixture: each type's mean (the output layer's weight on the
            # one-hot type input is a constant per type), so the network fits fluctuations about
            # its own type's mean, and the loss is scaled by their variance
            types = np.asarray(data.types)
            type_means = np.array([e[train][:, types == a].mean() if np.any(types == a) else per_bead_mean
                                   for a in range(model.settings.n_types)])
            set_type_offsets(model, k, type_means - per_bead_mean)
            spread = e[train] - type_means[types]
        energies[k] = torch.as_tensor(e, dtype=dtype, device=device)
        scale[("energy", k)] = float(np.var(spread)) or 1.0

    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    opt = torch.optim.Adam(params, lr=settings.learning_rate)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=settings.lr_factor,
                                                       patience=settings.lr_patience)
    history = {"train": [], "valid": [], "lr": [], "best_epoch": -1, "best_valid": float("inf"),
               "train_frames": train.tolist(), "valid_frames": valid.tolist()}
    best_state = None
    start = 0
    torch_gen = torch.Generator().manual_seed(settings.seed)
    if checkpoint is not None and Path(checkpoint).exists():
        ck = torch.load(checkpoint, weights_only=False, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        history, best_state, start = ck["history"], ck["best_state"], ck["epoch"] + 1
        torch_gen.set_state(ck["generator"].cpu())
        log.info("training: resuming at epoch %d from %s", start, checkpoint)

    def loss_of(idx, create_graph=True):
        pred = _predictions(model, x_all[idx], cell_all[idx], species_all[idx], orders, beta_all[idx], create_graph,
                            energy_heads)
        loss = sum(settings.weights[k] * torch.mean((pred[k] - targets[k][idx]) ** 2 * (weights[k][idx] if k in weights
                                                                                         else 1.0))
                   / (scale[k] * mean_weight[k]) for k in orders)
        for k in energy_heads:
            p = pred[("energy", k)]
            p = p.sum(dim=1) if per_system[k] else p
            loss = loss + settings.weights[k] * torch.mean((p - energies[k][idx]) ** 2) / scale[("energy", k)]
        return loss

    def valid_loss():
        chunks = [valid[b:b + settings.batch_frames] for b in range(0, len(valid), settings.batch_frames)]
        return float(sum(float(loss_of(torch.as_tensor(c), False).detach()) * len(c) for c in chunks) / len(valid))

    if start == 0:
        history["valid_before"] = valid_loss()
        if settings.start_is_a_candidate:
            history["best_valid"], history["best_epoch"] = history["valid_before"], -1
            best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(start, settings.max_epochs), desc="training", unit="epoch", disable=not show_progress)
    for epoch in bar:
        model.train()
        perm = torch.as_tensor(train)[torch.randperm(len(train), generator=torch_gen)]
        total = 0.0
        for b in range(0, len(perm), settings.batch_frames):
            idx = perm[b:b + settings.batch_frames]
            opt.zero_grad()
            loss = loss_of(idx)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        v = valid_loss()
        if not (np.isfinite(v) and np.isfinite(total)):
            _discard(checkpoint)
            raise TrainingError(f"training diverged at epoch {epoch}: validation loss {v:.4g}, training loss "
                                f"{total / len(train):.4g} (from {history.get('valid_before', float('nan')):.4g} "
                                f"before training); lower [train] learning_rate ({settings.learning_rate:g})")
        sched.step(v)
        history["train"].append(total / len(train))
        history["valid"].append(v)
        history["lr"].append(opt.param_groups[0]["lr"])
        if v < history["best_valid"]:
            history["best_valid"], history["best_epoch"] = v, epoch
            best_state = copy.deepcopy(model.state_dict())  # hippynn adds non-tensor entries
        bar.set_postfix(train=f"{history['train'][-1]:.4f}", valid=f"{v:.4f}")
        if checkpoint is not None:
            with atomic_path(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "history": history, "best_state": best_state,
                            "epoch": epoch, "generator": torch_gen.get_state()}, tmp)
        if epoch - history["best_epoch"] >= settings.early_stop_patience:
            log.info("training: early stop at epoch %d (best %d)", epoch, history["best_epoch"])
            break
    before = history.get("valid_before", float("inf"))
    if best_state is None:  # no finite validation loss at all
        _discard(checkpoint)
        raise TrainingError(f"training produced no finite validation loss in {len(history['valid'])} epochs")
    if not history["best_valid"] < before and not settings.require_improvement:
        log.warning("training did not improve: best validation loss %.4g, %.4g before training",
                    history["best_valid"], before)
    elif not history["best_valid"] < before:
        _discard(checkpoint)
        raise TrainingError(f"training did not improve: best validation loss {history['best_valid']:.4g} at epoch "
                            f"{history['best_epoch']}, {before:.4g} before training; check the data or "
                            f"[train] learning_rate ({settings.learning_rate:g}) and max_epochs")
    model.load_state_dict(best_state)
    return history


def _discard(checkpoint: Path | None) -> None:
    """A failed training leaves no checkpoint to resume from: its state is the failure."""
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
