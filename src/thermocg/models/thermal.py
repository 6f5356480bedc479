"""The temperature-dependent CG force field ``W(R; beta) = W_prior + W0 + dB W1 + dB^2/2 W2``.

THEORY.md §2: an expansion of the PMF around ``beta0`` with ``dB = beta - beta0``;
forces are ``-grad_R W`` at the requested temperature. The heads W0, W1, W2 are
energy heads of one HIP-NN-TS network (hippynn ``HipnnQuad`` + ``HEnergyNode`` with
``n_target = 3``: one shared representation, three heads); the repulsive prior
belongs to W0 and is the same at every temperature. Everything that is not graph
wiring is plain torch (STYLE.md).

Units: Å, kcal/mol, K; beta in mol/kcal.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from thermocg import units
from thermocg.units import beta_of
from thermocg.models.prior import RepulsivePrior


FORMS = ("beta", "energy-entropy", "em")


@dataclass(frozen=True)
class NetworkSettings:
    """HIP-NN-TS hyperparameters (hippynn ``HipnnQuad`` module kwargs)."""

    cutoff_A: float = 6.0
    dist_soft_min_A: float = 2.0
    dist_soft_max_A: float = 5.5
    n_features: int = 32
    n_sensitivities: int = 10
    n_interaction_layers: int = 1
    n_atom_layers: int = 2
    #: one representation with three energy heads (True) or a network per head (False)
    shared: bool = True
    #: the highest tensor order of HIP-NN-TS's pair messages: "quad" (l = 2, hippynn
    #: HipnnQuad), "vec" (l = 1, HipnnVec) or "scalar" (l = 0: plain HIP-NN, Hipnn)
    interaction: str = "quad"
    #: bead types (a mixture's species): hippynn species 1 .. n_types (0 is its padding)
    n_types: int = 1


#: NetworkSettings.interaction -> hippynn network class name
INTERACTIONS = {"quad": "HipnnQuad", "vec": "HipnnVec", "scalar": "Hipnn"}


class SeparateNetworks(torch.nn.Module):
    """One single-head HIP-NN-TS network per head, called like a shared three-head one.

    ``active``: the heads whose networks are evaluated (None: all); an inactive head
    reads zero energy. A first-order model or a training phase that fits one head then
    pays for the networks it uses only (see :meth:`ThermalForceField.using_heads`).
    """

    def __init__(self, networks):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)
        self.active: tuple[int, ...] | None = None

    def forward(self, species, positions, cell):
        active = range(len(self.networks)) if self.active is None else self.active
        outs = {k: self.networks[k](species, positions, cell) for k in active}
        first = outs[min(outs)]
        zero_sys, zero_bead = torch.zeros_like(first[0]), torch.zeros_like(first[5])
        return (torch.cat([outs[k][0] if k in outs else zero_sys for k in range(len(self.networks))], dim=1),
                *first[1:5], torch.cat([outs[k][5] if k in outs else zero_bead for k in range(len(self.networks))], dim=1))


def zero_heads(network, heads) -> None:
    """Set the energy heads ``heads`` of a :class:`SeparateNetworks` to exactly zero: the weights
    and biases of their hippynn ``HEnergy`` output layers (the layers below keep their random
    initialisation, so training moves the heads from zero as soon as their targets ask)."""
    if not isinstance(network, SeparateNetworks):
        raise ValueError("zero_heads needs a network per head (SeparateNetworks)")
    with torch.no_grad():
        for k in heads:
            found = False
            for module in network.networks[k].modules():
                if type(module).__name__ == "HEnergy":
                    for layer in module.layers:
                        layer.weight.zero_()
                        if layer.bias is not None:
                            layer.bias.zero_()
                    found = True
            if not found:
                raise ValueError(f"head {k}: no HEnergy output layer to set to zero")


def set_type_offsets(model, head: int, offsets) -> None:
    """Set the per-bead energy of head ``head`` to carry a constant per bead type, ``offsets``
    (n_types,) kcal/mol: the weights of its hippynn ``HEnergy`` layer on the input features (the
    one-hot of each bead's type; no bias). Used to start a mixture's per-bead energy fit at each
    type's mean."""
    net = model.network
    graph, row = (net.networks[head], 0) if isinstance(net, SeparateNetworks) else (net, head)
    layers = [m.layers[0] for m in graph.modules() if type(m).__name__ == "HEnergy"]
    if len(layers) != 1:
        raise ValueError(f"head {head}: found {len(layers)} HEnergy layers, expected one")
    w = layers[0].weight
    if w.shape[1] != len(offsets):
        raise ValueError(f"head {head}: {w.shape[1]} input features, {len(offsets)} type offsets")
    with torch.no_grad():
        w[row] = torch.as_tensor(np.asarray(offsets), dtype=w.dtype, device=w.device)


def build_network(settings: NetworkSettings, n_heads: int = 3):
    """The network: (species, positions, cell) -> per-system head energies and the pair list.

    ``settings.shared``: one hippynn graph with ``n_heads`` energy heads; otherwise
    :class:`SeparateNetworks` of ``n_heads`` single-head graphs with the same outputs.

    Returns a ``hippynn.graphs.GraphModule`` whose outputs are, in order:
    head energies (n_systems, n_heads), pair_first, pair_second, pair_dist (P,),
    the system index of each (flattened, unpadded) bead, and the per-bead head
    energies (n_beads_total, n_heads) whose sum over a system's beads is its head energy.
    """
    if not settings.shared and n_heads > 1:
        single = replace(settings, shared=True)
        return SeparateNetworks([build_network(single, 1) for _ in range(n_heads)])
    if settings.interaction not in INTERACTIONS:
        raise ValueError(f"interaction must be one of {sorted(INTERACTIONS)}, found {settings.interaction!r}")
    from hippynn.graphs import GraphModule, inputs, networks, targets
    from hippynn.graphs.nodes.indexers import acquire_encoding_padding
    from hippynn.graphs.nodes.pairs import KDTreePairsMemory

    species = inputs.SpeciesNode(db_name="species")
    positions = inputs.PositionsNode(db_name="positions")
    cell = inputs.CellNode(db_name="cell")
    species_set = list(range(settings.n_types + 1))  # 0: hippynn's padding; bead type k is species k + 1
    enc, padidx = acquire_encoding_padding([species], species_set=species_set)
    pairs = KDTreePairsMemory("pairs", (positions, enc, padidx, cell), dist_hard_max=settings.cutoff_A, skin=0.0)
    net = getattr(networks, INTERACTIONS[settings.interaction])(
        "hipnn", (padidx, pairs), periodic=True,
        module_kwargs=dict(possible_species=species_set, n_features=settings.n_features,
                           n_sensitivities=settings.n_sensitivities, dist_soft_min=settings.dist_soft_min_A,
                           dist_soft_max=settings.dist_soft_max_A, dist_hard_max=settings.cutoff_A,
                           n_interaction_layers=settings.n_interaction_layers,
                           n_atom_layers=settings.n_atom_layers))
    heads = targets.HEnergyNode("heads", net, module_kwargs={"n_target": n_heads})
    return GraphModule([species, positions, cell], [heads.mol_energy, pairs.pair_first, pairs.pair_second,
                                                    pairs.pair_dist, padidx.mol_index, heads.atom_energies])


def expansion(heads, beta, beta0, order: int, form: str):
    """``(W, dW/dbeta, d2W/dbeta2)`` at inverse temperature ``beta`` (per system) from the heads
    ``(h0, h1, h2)`` of a model of reference inverse temperature ``beta0``, ``order`` and ``form``.
    One function for the hippynn model and its inference form (:mod:`thermocg.models.fast`).

    ``form = "beta"``: ``W = h0 + dB h1 + dB^2/2 h2`` with dB = beta - beta0.
    ``form = "energy-entropy"``: ``W = U - T S - (T - T0)^2/2 C``, exact to first order
    when U and S do not depend on T, with the heads scaled to the beta form's:
    ``S = h1 / (kB T0^2)``, ``C = -h2 / (kB^2 T0^4)``, ``U = h0 + T0 S``, so that
    ``W = h0 - (T - T0) S - (T - T0)^2/2 C`` and at T0: W = h0, dW/dbeta = h1,
    d2W/dbeta2 = h2 - 2 kB T0 h1. (With U = h0, S = h1, C = h2 the three heads differ
    in scale by kB T0^2 ~ 180 and kB^2 T0^4 ~ 3e4 kcal/mol at 300 K, and float32
    training diverged on the oracle: bench/RESULTS.md.) Its beta derivatives follow
    from dT/dbeta = -kB T^2, d2T/dbeta2 = 2 kB^2 T^3.
    ``form = "em"``: ``W = h0 + dB (h1 - h0)/beta0`` with h1 = U, the mean energy fitted
    by energy matching (THEORY.md §4: dW/dbeta = (U - W)/beta at beta0).
    h0 includes the prior. Terms above ``order`` are dropped in every form.
    """
    h0 = heads[0]
    zero = torch.zeros_like(h0)
    h1 = heads[1] if order >= 1 else zero
    h2 = heads[2] if order >= 2 else zero
    beta = beta.to(h0.dtype)
    beta0 = torch.as_tensor(beta0).to(h0.dtype)
    if form == "em":
        w1 = (h1 - h0) / beta0
        return h0 + (beta - beta0) * w1, w1, zero
    if form == "beta":
        db = beta - beta0
        return h0 + db * h1 + 0.5 * db * db * h2, h1 + db * h2, h2
    kb = units.KB
    t, t0 = 1.0 / (kb * beta), 1.0 / (kb * beta0)
    dt = t - t0
    entropy, curvature = h1 / (kb * t0 * t0), -h2 / (kb * kb * t0**4)
    w = h0 - dt * entropy - 0.5 * dt * dt * curvature
    dw_dt = -entropy - dt * curvature
    dt_db, d2t_db2 = -kb * t * t, 2 * kb * kb * t**3
    return w, dw_dt * dt_db, -curvature * dt_db * dt_db + dw_dt * d2t_db2


def temperature_weights(form: str, order: int, beta0, temperature_K, n_systems: int = 1) -> torch.Tensor:
    """(B, 3) weights (c0, c1, c2) with W = c0 h0 + c1 h1 + c2 h2 at each system's temperature:
    every form of :func:`expansion` is linear in the heads (float64, on the CPU; a scalar
    temperature applies to all ``n_systems``)."""
    t = torch.as_tensor(temperature_K, dtype=torch.float64).cpu().reshape(-1).expand(n_systems)
    eye = torch.eye(3, dtype=torch.float64)
    beta0 = torch.as_tensor(beta0).detach().cpu()
    return torch.stack([expansion(tuple(eye[k, j].expand_as(t) for j in range(3)), beta_of(t), beta0, order, form)[0]
                        for k in range(3)], dim=-1)


def species_tensor(types, n_types: int, shape, device) -> torch.Tensor:
    """hippynn's species (B, N), bead type + 1 (0 is its padding), for 0-based ``types`` (N,) or
    (B, N); None: every bead of type 0, which only a model of one type accepts."""
    if types is None:
        if n_types > 1:
            raise ValueError(f"this model has {n_types} bead types: pass each bead's type (types=, 0-based in the "
                             "order of model.bead_types; ASE: the atoms' bead_type array)")
        return torch.ones(tuple(shape), dtype=torch.long, device=device)
    t = torch.as_tensor(np.asarray(types), dtype=torch.long, device=device)
    if t.shape[-1] != shape[-1] or t.dim() > 2:
        raise ValueError(f"types has shape {tuple(t.shape)}, expected ({shape[-1]},) or {tuple(shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_types):
        raise ValueError(f"types holds {sorted(set(t.flatten().tolist()))}, but this model has bead types "
                         f"0 .. {n_types - 1}")
    return (t + 1).expand(tuple(shape)).contiguous()


class ThermalForceField(torch.nn.Module):
    """``W(R; T) = W_prior + W0 + dB W1 + dB^2/2 W2`` on one-bead-per-molecule systems.

    Parameters
    ----------
    network : GraphModule from :func:`build_network`
    prior : RepulsivePrior
    beta0 : float
        Reference inverse temperature, mol/kcal.
    order : int
        0 (force matching: W0 only), 1 or 2: the highest head used.
    settings : NetworkSettings
        Kept for saving and reloading.
    form : str
        ``"beta"`` (the expansion in dB), ``"energy-entropy"`` (W = U - T S - (T - T0)^2/2 C)
        or ``"em"`` (energy matching: head 1 is the mean energy U, W1 = (U - W0)/beta0,
        order 1 only); see :meth:`expansion`.

    Each head also carries a constant per bead (the buffer ``bead_offset``, set from the
    mean of an energy target before training): energies such as U_J ~ -10 kcal/mol per
    molecule are then learnt as fluctuations about their mean. It changes no force.
    """

    def __init__(self, network, prior: RepulsivePrior, beta0: float, order: int = 2,
                 settings: NetworkSettings | None = None, form: str = "beta"):
        super().__init__()
        if order not in (0, 1, 2):
            raise ValueError(f"order must be 0, 1 or 2, found {order}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, found {form!r}")
        if form == "em" and order != 1:
            raise ValueError(f"form 'em' (energy matching) is first order only, found order {order}")
        self.form = form
        self.network = network
        self.prior = prior
        self.register_buffer("beta0", torch.tensor(float(beta0), dtype=torch.float64))
        self.register_buffer("bead_offset", torch.zeros(3, dtype=torch.float64))
        self.order = order
        self.settings = settings or NetworkSettings()
        if isinstance(network, SeparateNetworks):
            network.active = self.heads_used()

    def heads_used(self, orders=None, at_beta0: bool = False) -> tuple[int, ...]:
        """The heads that W (``orders`` None) or the force derivatives of ``orders`` read.

        Away from beta0 every head up to the model's order enters; at beta0 the order-k
        derivative of the beta form is head k alone (the energy/entropy form's second
        derivative also reads head 1, energy matching's first reads heads 0 and 1).
        """
        every = (0, 1) if self.form == "em" else tuple(range(self.order + 1))
        if orders is None or not at_beta0:
            return every
        extra = {"beta": {}, "energy-entropy": {2: (1,)}, "em": {1: (0,)}}[self.form]
        return tuple(sorted({h for k in orders for h in (k, *extra.get(k, ())) if h in every}))

    @contextlib.contextmanager
    def using_heads(self, heads):
        """Evaluate only the networks of ``heads`` inside the block (separate networks;
        a shared network computes every head at once and is unaffected)."""
        if not isinstance(self.network, SeparateNetworks):
            yield
            return
        before = self.network.active
        self.network.active = tuple(sorted(set(heads)))
        try:
            yield
        finally:
            self.network.active = before

    def heads(self, species, positions, cell):
        """Per-system W_prior + W0, W1, W2 (each (n_systems,)) and nothing temperature-dependent."""
        return self.heads_and_bead_heads(species, positions, cell)[0]

    def heads_and_bead_heads(self, species, positions, cell):
        """The per-system heads of :meth:`heads` and the per-bead head energies (n_systems, N, 3).

        The per-bead values are the network's atom energies plus ``bead_offset``, without
        the prior (a pair term): per-bead energy baselines U_J(R) and v_J(R) are read here.
        """
        e, first, second, dist, system, per_bead = self.network(species, positions, cell)
        n_sys, n = positions.shape[:2]
        offset = self.bead_offset.to(e.dtype)
        prior = self.prior(first, second, dist, system[first], n_sys)[:, 0]
        e = e + n * offset
        return (prior + e[:, 0], e[:, 1], e[:, 2]), per_bead.reshape(n_sys, n, -1) + offset

    def expansion(self, heads, beta):
        """``(W, dW/dbeta, d2W/dbeta2)`` at inverse temperature ``beta`` (per system) from the
        heads: :func:`expansion` with this model's beta0, order and form."""
        return expansion(heads, beta, self.beta0, self.order, self.form)

    def beta_tensor(self, temperature_K, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(temperature_K, dtype=like.dtype, device=like.device)
        return beta_of(t)

    def energy(self, species, positions, cell, temperature_K):
        """W per system, shape (n_systems,), kcal/mol; ``temperature_K`` a float or (n_systems,)."""
        h = self.heads(species, positions, cell)
        w = self.expansion(h, self.beta_tensor(temperature_K, h[0]))[0]
        return w.expand(positions.shape[0]) if w.dim() == 0 else w

    def energy_and_forces(self, species, positions, cell, temperature_K, create_graph: bool = False):
        """(W (n_systems,), forces (n_systems, n_beads, 3)) with forces = -dW/dR."""
        x = positions if positions.requires_grad else positions.detach().requires_grad_(True)
        w = self.energy(species, x, cell, temperature_K)
        (grad,) = torch.autograd.grad(w.sum(), x, create_graph=create_graph)
        return w, -grad

    def species(self, types, shape, device) -> torch.Tensor:
        """hippynn's species (B, N) (bead type + 1) for ``types`` (N,) or (B, N), 0-based bead
        types; None: every bead of type 0, which only a one-type model accepts."""
        return species_tensor(types, self.settings.n_types, shape, device)

    # -- numpy interface ------------------------------------------------------------
    def _tensors(self, positions, box, types=None):
        p = next(q for q in self.network.parameters() if q.is_floating_point())  # hippynn has int params too
        x = torch.as_tensor(np.asarray(positions), dtype=p.dtype, device=p.device)
        if x.dim() == 2:
            x = x[None]
        b = np.asarray(box, dtype=np.float64)
        b = np.broadcast_to(b, (x.shape[0], 3)) if b.ndim == 1 else b
        cell = torch.as_tensor(np.stack([np.diag(row) for row in b]), dtype=p.dtype, device=p.device)
        return self.species(types, x.shape[:2], p.device), x, cell

    def forces_numpy(self, positions, box, temperature_K, types=None) -> np.ndarray:
        """Forces in kcal/(mol Å) for positions (N, 3) or (B, N, 3) Å, box (3,) or (B, 3) Å;
        ``types`` (N,): each bead's type (a mixture's; None for a one-type model)."""
        species, x, cell = self._tensors(positions, box, types)
        _, f = self.energy_and_forces(species, x, cell, temperature_K)
        out = f.detach().cpu().numpy()
        return out[0] if np.ndim(positions) == 2 else out

    def energy_numpy(self, positions, box, temperature_K, types=None) -> np.ndarray:
        species, x, cell = self._tensors(positions, box, types)
        with torch.no_grad():
            w = self.energy(species, x, cell, temperature_K)
        out = w.cpu().numpy()
        return out[0] if np.ndim(positions) == 2 else out

    def metadata(self) -> dict:
        """What a saved model carries besides its weights."""
        return {"beta0_mol_per_kcal": float(self.beta0), "T0_K": float(1.0 / (units.KB * float(self.beta0))),
                "order": self.order, "form": self.form, "network": asdict(self.settings), "prior": self.prior.parameters_dict(),
                "units": {"length": units.LENGTH, "energy": units.ENERGY, "temperature": units.TEMPERATURE}}
