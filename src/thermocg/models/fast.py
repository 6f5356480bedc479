"""The inference form of a trained force field: the same function as the hippynn model, in plain torch.

A :class:`~thermocg.models.thermal.ThermalForceField` is a hippynn graph (or three of
them, one per energy head) plus the prior and the temperature expansion. hippynn is the
training path; in MD it spends most of a force call on its general machinery: a pair
finder per network, flat pair tensors of (pairs x 9 x sensitivities), a custom
message-passing kernel, the hierarchicality outputs that W never reads, and autograd
through all of it (bench/RESULTS.md: 25 of the 30 ms of a 512-bead step). This module
computes the same W(R; T) and forces from the same weights (docs/dev/hipnn_inference.md
is the specification, every equation tied to hippynn's source):

* one pair search for every network (they share the cutoff), with cell lists from
  ``vesin`` (linear in N) and a Verlet skin (:class:`NeighbourList`);
* pairs in a padded (beads x neighbours) layout, so the message sum is a batched
  matrix product and no (pairs x 90) tensor is formed: the first interaction layer's
  input is the one-hot of each bead's type, so its environment is
  ``sum_k s_k (x) [1, u_k, Q(u_k)]`` per bead and neighbour type, (sensitivities x 9)
  numbers per type (one type: the constant 1);
* the networks of a separate-network model (fm, trf1, trf2, em: one network per head)
  stacked along a leading dimension and evaluated as one batched network.

Why our own code: this *is* the method's model, run without the training library's
generality; vesin does the neighbour search. Equality with hippynn is tested to 1e-6
relative in float64 (tests/unit/models/test_fast.py).

Units: Å, kcal/mol, K.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from thermocg.models.fast_kernels import SQRT1_2, SQRT2, SQRT3_2, PairEnvironment, prior_forces
from thermocg.models.thermal import (SeparateNetworks, ThermalForceField, expansion, species_tensor,
                                     temperature_weights)
from thermocg.units import beta_of

#: hippynn interaction layer class -> number of angular channels (1 + 3 + 5 for quad)
_CHANNELS = {"InteractLayer": 1, "InteractLayerVec": 4, "InteractLayerQuad": 9}


class NeighbourList:
    """Padded neighbour lists for B periodic orthorhombic systems of N beads, with a skin.

    Candidate pairs within ``cutoff + skin`` come from vesin's cell lists (linear in N) and
    are kept until a bead has moved more than skin/2 (minimum image) since the search, or
    the box or batch changes. Each call recomputes every candidate's minimum-image vector,
    so beads crossing the box edge between searches need nothing special. Minimum image
    needs ``cutoff + skin < L/2``: the skin is shrunk to fit, and a cutoff that does not fit
    is an error (as hippynn's and :class:`thermocg.simulate.pairs.SkinPairs`).

    ``neighbours`` (B*N, K) flat indices of each bead's candidates (row i of system b holds
    flat indices of system b; unused slots point at the bead itself) and ``valid`` (B*N, K).
    """

    def __init__(self, cutoff_A: float, skin_A: float = 1.0):
        if skin_A < 0:
            raise ValueError(f"skin must be >= 0, found {skin_A}")
        self.cutoff = float(cutoff_A)
        self.skin = float(skin_A)
        self.rebuilds = 0
        self.calls = 0
        self.neighbours = self.valid = self._reference = self._lengths = None
        self._skin_used = self.skin

    def _effective_skin(self, lengths: torch.Tensor) -> float:
        half = 0.5 * float(lengths.min())
        if self.cutoff >= half:
            raise ValueError(f"pair cutoff {self.cutoff:g} Å is not below half the shortest box edge "
                             f"({half:g} Å): minimum-image pairs would be wrong")
        return max(0.0, min(self.skin, 0.999 * half - self.cutoff))

    def _stale(self, x: torch.Tensor, lengths: torch.Tensor) -> bool:
        if self.neighbours is None or self._reference.shape != x.shape or self._skin_used == 0:
            return True
        if not torch.equal(self._lengths, lengths):
            return True
        d = x - self._reference
        d = d - lengths[:, None, :] * torch.round(d / lengths[:, None, :])
        return bool((d * d).sum(-1).max() > (0.5 * self._skin_used) ** 2)

    def min_distance(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The closest minimum-image pair of each system, (B,) Å (inf without pairs), from the
        candidates: every pair closer than the cutoff is one, so a floor below the cutoff is
        checked exactly, in time linear in N. Updates the list first if needed."""
        self.update(x, lengths)
        self.calls -= 1  # a check, not a force call
        b, n, _ = x.shape
        with torch.no_grad():
            xf = x.detach().reshape(b * n, 3)
            box = lengths.detach().repeat_interleave(n, dim=0)[:, None, :]
            d = xf[:, None, :] - xf[self.neighbours]
            d = d - box * torch.round(d / box)
            r2 = (d * d).sum(-1).masked_fill(~self.valid, float("inf"))
            return r2.reshape(b, -1).amin(dim=1).sqrt()

    def update(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """Search again if needed. x (B, N, 3) Å (unwrapped is fine), lengths (B, 3) Å."""
        self.calls += 1
        x, lengths = x.detach(), lengths.detach()
        if not self._stale(x, lengths):
            return
        self._skin_used = self._effective_skin(lengths)
        self.neighbours, self.valid = padded_candidates(x, lengths, self.cutoff + self._skin_used)
        self._reference, self._lengths = x.clone(), lengths.clone()
        self.rebuilds += 1


def padded_candidates(x: torch.Tensor, lengths: torch.Tensor, radius: float):
    """Every bead's neighbours within ``radius`` (minimum image, radius < L/2) in a padded layout.

    vesin's cell lists find the pairs of each system, on x's device (a half list, each pair
    once, unsorted: at ~500 beads the search costs about as much per pair found, so half the
    pairs is half the time); the padding is our own: on the CPU a counting sort in numba
    (:func:`thermocg.models.fast_kernels.pad_pairs`; as torch operations it took as long as the
    search), elsewhere torch operations. Returns (neighbours (B*N, K) long, valid (B*N, K) bool)
    with flat bead indices; each pair is in both beads' rows, and empty slots point at the bead
    itself and are not valid.
    """
    from vesin_torch import NeighborList

    b, n, _ = x.shape
    search = NeighborList(cutoff=float(radius), full_list=False, sorted=False)
    firsts, seconds = [], []
    for k in range(b):
        edges = lengths[k].detach().to(torch.float64)
        xk = x[k].detach().to(torch.float64)
        xk = xk - edges * torch.floor(xk / edges)
        i, j = search.compute(xk, torch.diag(edges), periodic=True, quantities="ij")
        firsts.append(i.to(torch.long) + k * n)
        seconds.append(j.to(torch.long) + k * n)
    first, second = torch.cat(firsts), torch.cat(seconds)
    if x.device.type == "cpu":
        from thermocg.models.fast_kernels import pad_pairs

        neighbours, valid = pad_pairs(first.numpy(), second.numpy(), b * n)
        return torch.from_numpy(neighbours), torch.from_numpy(valid)
    return pad_pairs_torch(first, second, b * n)


def pad_pairs_torch(first: torch.Tensor, second: torch.Tensor, m: int):
    """:func:`thermocg.models.fast_kernels.pad_pairs` in torch operations (any device): the
    padded layout of a half pair list, the same neighbours in each row (a row lists the pairs
    where the bead comes first, then those where it comes second)."""
    first, second = torch.cat([first, second]), torch.cat([second, first])
    order = torch.sort(first, stable=True).indices
    first, second = first[order], second[order]
    counts = torch.bincount(first, minlength=m)
    width = max(int(counts.max()) if len(first) else 0, 1)
    slot = torch.arange(len(first), device=first.device) - (torch.cumsum(counts, 0) - counts)[first]
    neighbours = torch.arange(m, device=first.device)[:, None].repeat(1, width)
    valid = torch.zeros(m, width, dtype=torch.bool, device=first.device)
    neighbours[first, slot] = second
    valid[first, slot] = True
    return neighbours, valid


def padded_geometry(x: torch.Tensor, lengths: torch.Tensor, neighbour_list: NeighbourList, cutoff: float):
    """Pair vectors r_ij = x_i - x_j (minimum image) in the padded layout of ``neighbour_list``:
    (M, K, 3), their lengths (M, K), and the mask of real pairs within ``cutoff`` (M, K)
    (hippynn's sign convention). Empty slots and pairs beyond the cutoff get a constant far
    vector: finite, and without gradient."""
    b, n, _ = x.shape
    nbr, valid = neighbour_list.neighbours, neighbour_list.valid
    xf = x.reshape(b * n, 3)
    box = lengths.repeat_interleave(n, dim=0)[:, None, :]  # (M, 1, 3)
    d = xf[:, None, :] - xf[nbr]
    with torch.no_grad():
        image = torch.round(d / box) * box
        keep = valid & ((d - image) ** 2).sum(-1).lt(cutoff ** 2)
    d = d - image
    far = torch.tensor([2.0 * cutoff, 0.0, 0.0], dtype=d.dtype, device=d.device)
    d = torch.where(keep[..., None], d, far)
    return d, torch.linalg.vector_norm(d, dim=-1), keep


def pair_prior(r: torch.Tensor, keep: torch.Tensor, params, b: int, n: int) -> torch.Tensor:
    """The repulsive prior per system (B,) from padded pair lengths r and mask keep (M, K) of
    a full list (each unordered pair twice: half the sum), ``params`` = (s p / a, a, t)."""
    coef, decay, onset = params
    pair = torch.where(keep, coef * torch.exp(-decay * (r - onset)), 0.0)
    return 0.5 * pair.sum(-1).reshape(b, n).sum(-1)


def _find(graph, names):
    found = [m for m in graph.modules() if type(m).__name__ in names]
    if len(found) != 1:
        raise ValueError(f"expected one module of type {names} in the network, found {len(found)}")
    return found[0]


def _softplus_ok(module) -> bool:
    return isinstance(module, torch.nn.Softplus) and module.beta == 1 and module.threshold == 20


def _affine(z, w, bias):
    """z w^T + bias for stacked networks: z (G, M, in), w (G, out, in), bias (G, out). The bias
    is added in place after the product: torch.baddbmm first copies the broadcast bias into
    its output, element by element, which cost more than the product (bench/RESULTS.md)."""
    return torch.bmm(z, w.transpose(1, 2)).add_(bias[:, None])


class OneBlockNetwork(torch.autograd.Function):
    """The atom-wise network of one interaction block (the default), from the block's pair part
    y0 (G, M, O) (:meth:`FastForceField._pair_interaction`, or the numba kernel's) and the input
    features z0 (G, M, n_types; no gradient) to each bead's head energies (G, M, T), with its
    backward written out: the same function as :meth:`FastForceField._blocks` (tested) in fewer
    torch operations than autograd records for it (a force call's torch part is one small
    operation after another: bench/RESULTS.md).

    Forward: y = y0 + z0 W_self + b_self; z = softplus(y) W_res + b_res + skip(z0); per atom
    layer z += softplus(z W_a + b_a) W_ra + b_ra; eps = z0 H_0 + z H_1 + h_1.
    Backward: softplus' = sigmoid (torch's softplus is the identity above 20, where sigmoid
    differs from 1 by 2e-9).
    """

    @staticmethod
    def forward(ctx, y0, z0, form):
        y = form._self_term(0, z0).add_(y0)
        skip = torch.bmm(z0, form.adjust0.transpose(1, 2)) if hasattr(form, "adjust0") else z0
        z = _affine(torch.nn.functional.softplus(y), form.res_w0, form.res_b0).add_(skip)
        pre = []
        for a in range(1, form.n_atom_layers + 1):
            u = _affine(z, form._buf(f"atom_w0_{a}"), form._buf(f"atom_b0_{a}"))
            z = _affine(torch.nn.functional.softplus(u), form._buf(f"atom_rw0_{a}"), form._buf(f"atom_rb0_{a}")).add_(z)
            pre.append(u)
        eps = _affine(z, form.head_w1, form.head_b1).add_(torch.bmm(z0, form.head_w0.transpose(1, 2)))
        ctx.form, ctx.n_pre = form, len(pre)
        # the weights of the backward pass too: autograd then refuses a backward pass after one
        # of them changed in place, as it would for the operations themselves
        weights = [form.head_w1, form.res_w0] + [form._buf(f"atom{k}0_{a}") for a in range(1, form.n_atom_layers + 1)
                                                 for k in ("_rw", "_w")]
        ctx.save_for_backward(y, *pre, *weights)
        return eps

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_eps):
        y, *rest = ctx.saved_tensors
        pre, (head_w1, res_w0, *atom) = rest[:ctx.n_pre], rest[ctx.n_pre:]
        gz = torch.bmm(g_eps, head_w1)
        for a in range(ctx.n_pre, 0, -1):
            rw, w = atom[2 * (a - 1)], atom[2 * (a - 1) + 1]
            gh = torch.bmm(gz, rw).mul_(torch.sigmoid(pre[a - 1]))
            gz = torch.bmm(gh, w).add_(gz)
        return torch.bmm(gz, res_w0).mul_(torch.sigmoid(y)), None, None


class FastForceField(torch.nn.Module):
    """W(R; T) and forces of a :class:`ThermalForceField`, computed in plain torch.

    Build it with :meth:`from_model`; the weights are copied (buffers, not parameters: this
    form is for inference, training stays on hippynn). ``energy_and_forces(x, lengths, T)``
    takes positions (B, N, 3) Å, box edges (B, 3) Å and temperatures (B,) or a float.
    """

    @classmethod
    def from_model(cls, model: ThermalForceField, skin_A: float = 1.0) -> "FastForceField":
        model = getattr(model, "model", model)  # a CGForceField too
        self = cls()
        net = model.network
        separate = isinstance(net, SeparateNetworks)
        used = tuple(model.heads_used())
        graphs = [net.networks[k] for k in used] if separate else [net]
        # head k of the model -> (stacked network g, output column t)
        self.head_source = ({k: (g, 0) for g, k in enumerate(used)} if separate else {k: (0, k) for k in used})
        self.order, self.form = model.order, model.form
        self.n_types = model.settings.n_types
        self.register_buffer("beta0", model.beta0.detach().clone())
        self.register_buffer("bead_offset", model.bead_offset.detach().clone())
        prior = model.prior
        self.register_buffer("prior_strength", prior.strength.detach().clone())
        self.register_buffer("prior_p", prior.p.detach().clone())
        self.register_buffer("prior_onset", prior.onset_A.detach().clone())
        self.prior_decay = prior.decay_per_A

        hipnns = [_find(g, ("HipnnQuad", "HipnnVec", "Hipnn")) for g in graphs]
        heads = [_find(g, ("HEnergy",)) for g in graphs]
        first = hipnns[0]
        if not first.resnet or not _softplus_ok(first.activation):
            raise ValueError("the inference form needs hippynn's defaults: resnet=True, Softplus(beta=1, threshold=20)")
        if any(h.first_is_interacting for h in heads):
            raise ValueError("the inference form needs HEnergy with first_is_interacting=False")
        self.n_blocks = len(first.blocks)
        self.n_atom_layers = len(first.blocks[0]) - 1
        layer0 = first.blocks[0][0].base_layer
        self.channels = _CHANNELS[type(layer0).__name__]
        self.cutoff = float(layer0.sensitivity.cutoff.hard_max_dist)
        self.cusp = [float(getattr(b[0].base_layer, "cusp_reg", 0.0)) for b in first.blocks]
        for block in first.blocks:
            sens = block[0].base_layer.sensitivity
            if type(sens).__name__ != "InverseSensitivityModule" or type(sens.cutoff).__name__ != "CosCutoff":
                raise ValueError("the inference form needs hippynn's inverse sensitivities with the cosine cutoff")

        def stack(get):
            return torch.stack([get(h).detach() for h in hipnns]).clone()

        self.n_in = []
        for b in range(self.n_blocks):
            base = lambda h, b=b: h.blocks[b][0].base_layer  # noqa: E731
            wrap = lambda h, b=b: h.blocks[b][0]  # noqa: E731
            self.n_in.append(base(first).nf_in)
            self.register_buffer(f"mu{b}", stack(lambda h: base(h).sensitivity.mu[0]))
            self.register_buffer(f"sigma{b}", stack(lambda h: base(h).sensitivity.sigma[0]))
            # int_weights (nu, out, in) -> (nu * in, out), the order of hippynn's env reshape
            self.register_buffer(f"V{b}", stack(lambda h: base(h).int_weights.permute(0, 2, 1).reshape(
                -1, base(h).nf_out)))
            if self.channels > 1:
                self.register_buffer(f"vecscale{b}", stack(lambda h: base(h).vecscales))
            if self.channels > 4:
                self.register_buffer(f"quadscale{b}", stack(lambda h: base(h).quadscales))
            self.register_buffer(f"self_w{b}", stack(lambda h: base(h).selfint.weight))
            self.register_buffer(f"self_b{b}", stack(lambda h: base(h).selfint.bias))
            self.register_buffer(f"res_w{b}", stack(lambda h: wrap(h).res_layer.weight))
            self.register_buffer(f"res_b{b}", stack(lambda h: wrap(h).res_layer.bias))
            if wrap(first).needs_size_adjust:
                self.register_buffer(f"adjust{b}", stack(lambda h: wrap(h).adjust_layer.weight))
            for a in range(1, self.n_atom_layers + 1):
                lay = lambda h, b=b, a=a: h.blocks[b][a]  # noqa: E731
                if lay(first).needs_size_adjust:
                    raise ValueError("atom layers that change the feature size are not supported")
                self.register_buffer(f"atom_w{b}_{a}", stack(lambda h: lay(h).base_layer.weight))
                self.register_buffer(f"atom_b{b}_{a}", stack(lambda h: lay(h).base_layer.bias))
                self.register_buffer(f"atom_rw{b}_{a}", stack(lambda h: lay(h).res_layer.weight))
                self.register_buffer(f"atom_rb{b}_{a}", stack(lambda h: lay(h).res_layer.bias))
        self.register_buffer("head_w0", torch.stack([h.layers[0].weight.detach() for h in heads]).clone())
        for l in range(1, self.n_blocks + 1):
            self.register_buffer(f"head_w{l}", torch.stack([h.layers[l].weight.detach() for h in heads]).clone())
            self.register_buffer(f"head_b{l}", torch.stack([h.layers[l].bias.detach() for h in heads]).clone())
        self.neighbour_list = NeighbourList(self.cutoff, skin_A)
        # the weights keep the model's dtype; beta0, the offsets and the prior stay float64 and
        # are cast where the hippynn model casts them
        return self.to(device=model.beta0.device)

    # -- the network ----------------------------------------------------------------------
    #: "auto": the numba kernels of :mod:`thermocg.models.fast_kernels` on the CPU, torch ops
    #: elsewhere; "torch": torch ops everywhere (the reference the kernels are tested against)
    kernels: str = "auto"
    #: False: W without the prior's term (the slow part of multiple time stepping, whose fast
    #: part is :meth:`prior_energy_and_forces`; the two add up to W)
    include_prior: bool = True

    def uses_kernels(self, x: torch.Tensor) -> bool:
        if self.kernels not in ("auto", "torch"):
            raise ValueError(f"kernels must be 'auto' or 'torch', found {self.kernels!r}")
        return self.kernels == "auto" and x.device.type == "cpu"

    def _buf(self, name):
        return getattr(self, name)

    def _geometry(self, x: torch.Tensor, lengths: torch.Tensor):
        """:func:`padded_geometry` of x on this form's neighbour list and cutoff."""
        return padded_geometry(x, lengths, self.neighbour_list, self.cutoff)

    def _angular(self, d, r):
        """[1, u, Q(u)] per pair, (M, K, channels), Q's five components in the orthonormal basis
        of :func:`thermocg.models.fast_kernels._angular` (hippynn keeps [xx, xy, xz, yy, yz] and
        a cross term in the norm; the norm is the same)."""
        parts = [torch.ones_like(r)[..., None]]
        if self.channels > 1:
            u = d / r[..., None]
            parts.append(u)
        if self.channels > 4:
            ux, uy, uz = u.unbind(-1)
            tr = (u * u).sum(-1) / 3.0
            xx, yy = ux * ux - tr, uy * uy - tr
            parts.append(torch.stack([SQRT2 * ux * uy, SQRT2 * ux * uz, SQRT2 * uy * uz, SQRT1_2 * (xx - yy),
                                      SQRT3_2 * (xx + yy)], dim=-1))
        return torch.cat(parts, dim=-1)

    def _interaction(self, b: int, z, env):
        """Interaction block ``b`` on features z (G, M, f_in) and their environment env
        (G, M, C, nu * f_in): hippynn's InteractLayer* output."""
        return self._pair_interaction(b, env) + self._self_term(b, z)

    def _self_term(self, b: int, z):
        """The interaction layer's self-interaction z W_self + b_self, (G, M, out)."""
        return _affine(z, self._buf(f"self_w{b}"), self._buf(f"self_b{b}"))

    def _pair_interaction(self, b: int, env):
        """The pair part of interaction block ``b``: out_0 + vecscale |out_1:4| + quadscale |out_4:9|
        with out = env V per channel (G, M, out); the numba kernels' :func:`~thermocg.models.fast_kernels._interact`."""
        g, m, c, width = env.shape
        v = self._buf(f"V{b}")
        # one (M x width) @ (width x out) product per network and channel group, so that the
        # norms are taken of contiguous tensors (a split of one (M, C, out) product, or a 0/1
        # matrix summing its channels, cost ~3x as much in the backward pass: bench/RESULTS.md)
        y = torch.bmm(env[:, :, 0], v)
        for first, size, scale in ((1, 3, "vecscale"), (4, 5, "quadscale")):
            if c > first:
                part = torch.bmm(env[:, :, first:first + size].reshape(g, m * size, width), v).reshape(g, m, size, -1)
                y = y + self._buf(f"{scale}{b}")[:, None] * torch.sqrt((part * part).sum(2) + self.cusp[b])
        return y

    def _environment_torch(self, b, z, nbr, geometry):
        """The environment (G, M, C, nu * f_in) in torch ops (any device, any layer)."""
        mu, sigma = self._buf(f"mu{b}"), self._buf(f"sigma{b}")
        d, r, keep = geometry
        g = mu.shape[0]
        m, k = r.shape
        nondim = (r[None, :, :, None] ** -1 - mu[:, None, None, :] ** -1) ** 2 / (sigma[:, None, None, :] ** -2)
        phi = torch.cos(math.pi / 2 * r / self.cutoff) ** 2 * keep.to(r.dtype)
        sense = torch.exp(-0.5 * nondim) * phi[None, :, :, None]  # (G, M, K, nu)
        angular = self._angular(d, r)
        nu = sense.shape[-1]
        if self.n_in[b] == 1 and b == 0:
            # the input is the one-hot of the only bead type: z_j = 1 for every neighbour
            return torch.matmul(sense.transpose(-1, -2), angular).transpose(-1, -2)  # (G, M, C, nu)
        zj = z[:, nbr]  # (G, M, K, f)
        sa = (angular[None, :, :, :, None] * sense[:, :, :, None, :]).reshape(g * m, k, self.channels * nu)
        env = torch.bmm(sa.transpose(1, 2), zj.reshape(g * m, k, -1))  # (G*M, C*nu, f)
        return env.reshape(g, m, self.channels, nu * self.n_in[b])

    @staticmethod
    def _linear(z, w, bias):
        return _affine(z, w, bias)

    def _bead_types(self, types, b: int, n: int, device) -> torch.Tensor | None:
        """Each bead's type, flat (B N,), checked once per call; None for a model of one type
        called without types."""
        if self.n_types == 1 and types is None:
            return None
        return species_tensor(types, self.n_types, (b, n), device).reshape(b * n) - 1

    def _input_features(self, t: torch.Tensor | None, m: int, like: torch.Tensor) -> torch.Tensor:
        """(G, M, n_types): hippynn's one-hot species encoding of the beads' types ``t`` (a
        constant 1 for a model of one type)."""
        g = self.mu0.shape[0]
        if t is None:
            return torch.ones(g, m, 1, dtype=like.dtype, device=like.device)
        return torch.nn.functional.one_hot(t, self.n_types).to(like.dtype)[None].expand(g, m, self.n_types)

    def bead_heads(self, x: torch.Tensor, lengths: torch.Tensor, types=None):
        """(per-bead head energies (B, N, 3) without offsets, prior per system (B,)) at positions
        x (B, N, 3) and box edges (B, 3); ``types`` (N,) or (B, N): each bead's type (a model of
        several types)."""
        eps, prior = self._network(x, lengths, types)
        m = eps.shape[1]
        # (G, M, T) -> the model's heads, (M, n_heads); an unused head is exactly zero
        cols = [eps[self.head_source[k][0], :, self.head_source[k][1]] if k in self.head_source
                else torch.zeros(m, dtype=x.dtype, device=x.device) for k in range(3)]
        return torch.stack(cols, dim=-1).reshape(x.shape[0], x.shape[1], 3), prior

    def _network(self, x: torch.Tensor, lengths: torch.Tensor, types=None):
        """(each bead's outputs of the stacked networks (G, B N, T), the prior per system (B,))."""
        b, n, _ = x.shape
        m = b * n
        self.neighbour_list.update(x, lengths)
        nbr = self.neighbour_list.neighbours
        t = self._bead_types(types, b, n, x.device)
        z0 = self._input_features(t, m, x)
        kernels = self.uses_kernels(x)
        # the padded pair geometry in torch: for every layer off the CPU kernels' path
        geometry = None if kernels and self.n_blocks == 1 else self._geometry(x, lengths)
        if kernels:
            # the pair part of block 0 and the prior in one pass (thermocg.models.fast_kernels).
            # Block 0's input is the one-hot of each bead's type, so its environment is, per type
            # f, the kernel's sum over the neighbours of type f (one pass per type, the valid
            # slots restricted to that type), laid out [nu][f] as hippynn's env reshape; the
            # prior, a sum over pairs, adds up over the passes
            # (one type: the kernel also applies the interaction layer's linear map and norms, so
            # its output is block 0's pair part y0 (G, M, out))
            box = lengths.repeat_interleave(n, dim=0)
            valid = self.neighbour_list.valid
            masks = [valid] if t is None else [valid & (t[nbr] == f) for f in range(self.n_types)]
            inv_mu, sig2, prior_args, inter = self._kernel_inputs(x.dtype)
            passes = [PairEnvironment.apply(x.reshape(m, 3), box, nbr, mask, inv_mu, sig2, prior_args, self.cutoff,
                                            self.channels, inter if t is None else None) for mask in masks]
            prior = sum(p for _, p in passes).reshape(b, n).sum(-1)
            if t is None:
                y0 = passes[0][0]
            else:
                y0 = self._pair_interaction(0, torch.stack([e for e, _ in passes], dim=-1).flatten(-2))
        else:
            y0 = self._pair_interaction(0, self._environment_torch(0, z0, nbr, geometry))
            prior = self._prior_torch(geometry, b, n)
        if self.n_blocks == 1:  # the default network: one autograd node with its backward written out
            eps = OneBlockNetwork.apply(y0, z0, self)
        else:
            eps = self._blocks(y0, z0, nbr, geometry)
        return eps, prior

    def _blocks(self, y0, z0, nbr, geometry):
        """The atom-wise network from block 0's pair part y0 (:meth:`_pair_interaction`) and the
        input features z0 (G, M, n_types) to each bead's head energies (G, M, T), in torch
        operations (autograd's backward); :class:`OneBlockNetwork` is the same for one block."""
        features = [z0]
        z = z0
        for blk in range(self.n_blocks):
            if blk == 0:
                y = y0 + self._self_term(0, z)
            else:
                y = self._interaction(blk, z, self._environment_torch(blk, z, nbr, geometry))
            skip = torch.bmm(z, self._buf(f"adjust{blk}").transpose(1, 2)) if hasattr(self, f"adjust{blk}") else z
            z = self._linear(torch.nn.functional.softplus(y), self._buf(f"res_w{blk}"), self._buf(f"res_b{blk}")) + skip
            for a in range(1, self.n_atom_layers + 1):
                h = torch.nn.functional.softplus(
                    self._linear(z, self._buf(f"atom_w{blk}_{a}"), self._buf(f"atom_b{blk}_{a}")))
                z = self._linear(h, self._buf(f"atom_rw{blk}_{a}"), self._buf(f"atom_rb{blk}_{a}")) + z
            features.append(z)
        eps = torch.bmm(z0, self.head_w0.transpose(1, 2))
        for l in range(1, self.n_blocks + 1):
            eps = eps + self._linear(features[l], self._buf(f"head_w{l}"), self._buf(f"head_b{l}"))
        return eps

    def _prior_params(self):
        """(s p / a, a, t) of the prior, float64."""
        s, p, t = (float(v) for v in (self.prior_strength, self.prior_p, self.prior_onset))
        return (s * p / self.prior_decay, self.prior_decay, t)

    def _kernel_inputs(self, dtype):
        """(1/mu, sigma^2, the prior's arguments, the interaction's (V, vecscale, quadscale, cusp))
        of block 0 for the kernels, as numpy arrays of ``dtype``: kept between calls (a dozen torch
        conversions per force call otherwise) and made again when a weight changes."""
        tensors = [self.mu0, self.sigma0, self.V0, self.prior_strength, self.prior_p, self.prior_onset]
        tensors += [getattr(self, name) for name in ("vecscale0", "quadscale0") if hasattr(self, name)]
        # (weights change through in-place torch operations or load_state_dict, which count
        # versions; a write through .data or a numpy view of a weight does not)
        versions = tuple((t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)
        key = (dtype, self.include_prior, self.prior_decay, self.cusp[0], versions)
        if any(v == -1 for _, v in versions):  # inference tensors count no versions: made at every call
            key = None
        cached = getattr(self, "_kernel_cache", None)
        if cached is None or key is None or cached[0] != key:
            def numpy(t):
                return None if t is None else t.detach().to(dtype).cpu().contiguous().numpy()

            inter = (numpy(self.V0), numpy(getattr(self, "vecscale0", None)), numpy(getattr(self, "quadscale0", None)),
                     self.cusp[0])
            cached = (key, (numpy(self.mu0 ** -1), numpy(self.sigma0 ** 2), self._prior_args(), inter))
            self._kernel_cache = cached
        return cached[1]

    def _prior_args(self):
        """The kernels' prior parameters: :meth:`_prior_params`, s p / a = 0 without the prior."""
        coef, decay, onset = self._prior_params()
        return (coef if self.include_prior else 0.0, decay, onset)

    def _prior_torch(self, geometry, b: int, n: int):
        """The prior per system (B,) (:func:`pair_prior`), zero without the prior."""
        d, r, keep = geometry
        if not self.include_prior:
            return torch.zeros(b, dtype=r.dtype, device=r.device)
        return pair_prior(r, keep, self._prior_params(), b, n)

    def prior_energy_and_forces(self, x: torch.Tensor, lengths: torch.Tensor, temperature_K):
        """(the prior's term of W (B,), its forces (B, N, 3)), analytic and without autograd: the
        fast part of multiple time stepping, a few gathers over the pair list.

        The prior belongs to h0, so its term of W is c0(beta) times the prior, c0 the weight of
        h0 in the temperature expansion (1 in the beta and energy-entropy forms, (2 beta0 -
        beta) / beta0 in the em form). With ``include_prior = False``, W and forces of this
        model plus these are W and forces of the whole model.
        """
        b, n, _ = x.shape
        with torch.no_grad():
            self.neighbour_list.update(x, lengths)
            nbr, valid = self.neighbour_list.neighbours, self.neighbour_list.valid
            coef, decay, onset = self._prior_params()
            box = lengths.repeat_interleave(n, dim=0)
            if self.uses_kernels(x):
                xn = x.detach().reshape(b * n, 3).contiguous().numpy()
                e_bead, forces = np.empty(b * n, dtype=xn.dtype), np.empty_like(xn)
                prior_forces(xn, box.contiguous().numpy(), nbr.numpy(), valid.numpy(), self.cutoff,
                             np.array([coef, decay, onset]), e_bead, forces)
                energy = torch.from_numpy(e_bead).reshape(b, n).sum(-1)
                forces = torch.from_numpy(forces).reshape(b, n, 3)
            else:
                xf = x.reshape(b * n, 3)
                d = xf[:, None, :] - xf[nbr]
                d = d - box[:, None, :] * torch.round(d / box[:, None, :])
                r = torch.linalg.vector_norm(d, dim=-1)
                keep = valid & (r < self.cutoff)
                pair = torch.where(keep, coef * torch.exp(-decay * (r - onset)), 0.0)  # phi(r_ij), (M, K)
                # F_i = -sum_j phi'(r_ij) r_ij / r = sum_j a phi(r_ij) r_ij / r (each pair in both rows)
                forces = ((decay * pair / torch.where(keep, r, 1.0))[..., None] * d).sum(1).reshape(b, n, 3)
                energy = 0.5 * pair.sum(-1).reshape(b, n).sum(-1)
            c0 = temperature_weights(self.form, self.order, self.beta0, temperature_K, b)[:, 0].to(x)
            return c0 * energy, c0[:, None, None] * forces

    def heads(self, x: torch.Tensor, lengths: torch.Tensor, types=None):
        """Per-system (W_prior + W0, W1, W2), each (B,): what :meth:`ThermalForceField.heads` gives."""
        eps, prior = self._network(x, lengths, types)
        b, n, _ = x.shape
        # each system's sums first (G, B, T): selecting a head of the per-bead (G, M, T) would
        # cost its backward a zero-filled (G, M, T) tensor per head
        sums = eps.reshape(eps.shape[0], b, n, eps.shape[2]).sum(2)
        offset = n * self.bead_offset.to(eps.dtype)
        h = [sums[self.head_source[k][0], :, self.head_source[k][1]] + offset[k] if k in self.head_source
             else offset[k].expand(b) for k in range(3)]
        return prior + h[0], h[1], h[2]

    def energy(self, x: torch.Tensor, lengths: torch.Tensor, temperature_K, types=None):
        """W per system (B,), kcal/mol."""
        h = self.heads(x, lengths, types)
        beta = beta_of(torch.as_tensor(temperature_K, dtype=h[0].dtype, device=h[0].device))
        w = expansion(h, beta, self.beta0, self.order, self.form)[0]
        return w.expand(x.shape[0]) if w.dim() == 0 else w

    def energy_and_forces(self, x: torch.Tensor, lengths: torch.Tensor, temperature_K, types=None):
        """(W (B,), forces (B, N, 3) = -dW/dx), detached."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            w = self.energy(x, lengths, temperature_K, types)
            (grad,) = torch.autograd.grad(w.sum(), x)
        return w.detach(), -grad

    # -- numpy interface (as ThermalForceField's) ----------------------------------------------
    def _tensors(self, positions, box):
        x = torch.as_tensor(np.asarray(positions), dtype=self.mu0.dtype, device=self.mu0.device)
        if x.dim() == 2:
            x = x[None]
        edges = np.broadcast_to(np.asarray(box, dtype=np.float64), (x.shape[0], 3))
        return x, torch.as_tensor(edges.copy(), dtype=x.dtype, device=x.device)

    def forces_numpy(self, positions, box, temperature_K, types=None) -> np.ndarray:
        x, lengths = self._tensors(positions, box)
        out = self.energy_and_forces(x, lengths, temperature_K, types)[1].cpu().numpy()
        return out[0] if np.ndim(positions) == 2 else out

    def energy_numpy(self, positions, box, temperature_K, types=None) -> np.ndarray:
        x, lengths = self._tensors(positions, box)
        with torch.no_grad():
            out = self.energy(x, lengths, temperature_K, types).cpu().numpy()
        return out[0] if np.ndim(positions) == 2 else out
