"""A distilled fast form of a trained force field: tabulated pair and three-body terms with the
model's temperature expansion, fitted to the model's forces.

Each energy head k of a :class:`~thermocg.models.thermal.ThermalForceField` (h0 without the
prior, h1, h2) is replaced by ::

    h_k(R) ~ sum_{i<j} phi_k(r_ij)
           + sum_i sum_{j<l in N3(i)} sum_{m,m',L} d_k[m m' L] (f_m(r_ij) f_m'(r_il) + f_m'(r_ij) f_m(r_il)) P_L(cos theta_jil)
           + N e_k

phi_k a cubic B-spline in r that vanishes smoothly at the model's cutoff, f_m cubic B-splines
that vanish at the three-body radius r3 (the first shell), P_L Legendre polynomials
(Stillinger-Weber's form with a learned angular and radial shape). The prior is kept as it
is, and W(R; T) = expansion(h0 + prior, h1, h2) as in the model (one function,
:func:`thermocg.models.thermal.expansion`), so the temperature enters exactly as it does
there. Every coefficient enters linearly, so the fit is a ridge least squares of each head's
forces on configurations the caller gives (the model's training frames): force matching
against the model, as THEORY.md §1 does against the all-atom data.

Why our own code: this is the method's model in another basis. The tables run in thermocg's
engine (same interface as :class:`thermocg.models.fast.FastForceField`) and are exported to
OpenMM (:func:`to_openmm`: ``CustomNonbondedForce`` and ``CustomManyParticleForce`` with
tabulated functions and the temperature as a global parameter).

Units: Å, kcal/mol, K (OpenMM: nm, kJ/mol).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from thermocg import units
from thermocg.models.fast import FastForceField, NeighbourList, padded_geometry, pair_prior
from thermocg.models.thermal import expansion, temperature_weights
from thermocg.units import beta_of


def cubic_bspline(u: torch.Tensor) -> torch.Tensor:
    """The cardinal cubic B-spline on [0, 4] (zero outside; C2, its values sum to 1 over shifts)."""
    out = torch.zeros_like(u)
    for lo, poly in ((0, lambda t: t ** 3 / 6), (1, lambda t: (-3 * t ** 3 + 3 * t ** 2 + 3 * t + 1) / 6),
                     (2, lambda t: (3 * t ** 3 - 6 * t ** 2 + 4) / 6), (3, lambda t: (1 - t) ** 3 / 6)):
        t = u - lo
        out = torch.where((t >= 0) & (t < 1), poly(t), out)
    return out


def cubic_bspline_derivative(u: torch.Tensor) -> torch.Tensor:
    """d/du of :func:`cubic_bspline`."""
    out = torch.zeros_like(u)
    for lo, poly in ((0, lambda t: t ** 2 / 2), (1, lambda t: (-3 * t ** 2 + 2 * t + 1) / 2),
                     (2, lambda t: (3 * t ** 2 - 4 * t) / 2), (3, lambda t: -(1 - t) ** 2 / 2)):
        t = u - lo
        out = torch.where((t >= 0) & (t < 1), poly(t), out)
    return out


@dataclass(frozen=True)
class Knots:
    """Uniform cubic B-splines of spacing ``step`` whose supports end at or before ``end`` (so every
    one vanishes there with two derivatives) and cover r >= ``start``."""

    start: float
    end: float
    step: float

    @property
    def origins(self) -> np.ndarray:
        n = int(math.floor((self.end - self.start) / self.step + 1e-9)) + 1  # the first origin: start - 4 step
        return self.end - self.step * (4 + np.arange(n)[::-1])

    def __call__(self, r: torch.Tensor) -> torch.Tensor:
        """(..., n_basis) values at r (...)."""
        o = torch.as_tensor(self.origins, dtype=r.dtype, device=r.device)
        return cubic_bspline((r[..., None] - o) / self.step)

    def derivative(self, r: torch.Tensor) -> torch.Tensor:
        """(..., n_basis) d/dr at r (...)."""
        o = torch.as_tensor(self.origins, dtype=r.dtype, device=r.device)
        return cubic_bspline_derivative((r[..., None] - o) / self.step) / self.step


def legendre(c: torch.Tensor, degree: int, derivative: bool = False):
    """P_0..P_degree at c, (..., degree + 1), by the three-term recurrence; with ``derivative``
    also their derivatives (P'_{n+1} = P'_{n-1} + (2n + 1) P_n)."""
    p = [torch.ones_like(c), c]
    for n in range(1, degree):
        p.append(((2 * n + 1) * c * p[n] - n * p[n - 1]) / (n + 1))
    values = torch.stack(p[:degree + 1], dim=-1)
    if not derivative:
        return values
    dp = [torch.zeros_like(c), torch.ones_like(c)]
    for n in range(1, degree):
        dp.append(dp[n - 1] + (2 * n + 1) * p[n])
    return values, torch.stack(dp[:degree + 1], dim=-1)


class DistilledForceField(torch.nn.Module):
    """Tabulated pair + three-body heads with the temperature expansion of the model it was
    distilled from. Build it with :meth:`fit`; ``energy_and_forces(x, lengths, T)`` as
    :class:`~thermocg.models.fast.FastForceField`'s (positions (B, N, 3) Å, edges (B, 3) Å)."""

    def __init__(self, fast: FastForceField, pair: Knots, radial3: Knots | None, degree: int, skin_A: float = 1.0):
        super().__init__()
        self.pair, self.radial3, self.degree = pair, radial3, int(degree)
        self.cutoff = float(pair.end)
        self.r3 = float(radial3.end) if radial3 is not None else 0.0
        self.order, self.form = fast.order, fast.form
        self.register_buffer("beta0", fast.beta0.clone())
        self.prior_params = fast._prior_params()
        n = self.n_basis
        self.register_buffer("coef", torch.zeros(3, n, dtype=torch.float64))  # (head, basis)
        self.register_buffer("bead_offset", torch.zeros(3, dtype=torch.float64))
        self.neighbour_list = NeighbourList(self.cutoff, skin_A)
        # the m <= m' pairs of the three-body radial functions
        m = len(radial3.origins) if radial3 is not None else 0
        self._mm = [(a, b) for a in range(m) for b in range(a, m)]

    @property
    def n_pair(self) -> int:
        return len(self.pair.origins)

    @property
    def n_basis(self) -> int:
        m = len(self.radial3.origins) if self.radial3 is not None else 0
        return self.n_pair + m * (m + 1) // 2 * (self.degree + 1)

    # -- descriptors: the sums whose linear combinations are the heads -----------------------
    def _pairs(self, x, lengths):
        """The padded pair geometry (d, r, keep) of x within the pair cutoff, the list updated."""
        self.neighbour_list.update(x, lengths)
        return padded_geometry(x, lengths, self.neighbour_list, self.cutoff)

    def descriptors(self, x: torch.Tensor, lengths: torch.Tensor, geometry=None) -> torch.Tensor:
        """(B, n_basis): the pair sums of the B-splines, then the three-body sums (``geometry``:
        :meth:`_pairs` of x, if the caller has it)."""
        b, n, _ = x.shape
        d, r, keep = geometry if geometry is not None else self._pairs(x, lengths)
        pair = (self.pair(r) * keep[..., None].to(r.dtype)).sum(1)  # (M, n_pair), each pair twice
        out = [0.5 * pair.reshape(b, n, -1).sum(1)]
        if self.radial3 is not None:
            out.append(self._three_body(d, r, keep).reshape(b, n, -1).sum(1))
        return torch.cat(out, dim=-1)

    def _triplets(self, d, r, keep):
        """Each bead's neighbour pairs (a < c) within r3: (index of a and c in the padded list
        (M, T) each, r_a, r_c, d_a, d_c, weight (M, T): 1 for a real triplet)."""
        near = keep & (r < self.r3)
        k3 = min(max(int(near.sum(1).max()), 2), r.shape[1])  # no wider than the list (then no triplet)
        # the k3 nearest candidates of each bead (those beyond r3 get weight 0)
        order = torch.topk(torch.where(near, r, torch.full_like(r, float("inf"))), k3, dim=1,
                           largest=False).indices
        a, c = torch.triu_indices(k3, k3, offset=1, device=r.device)
        ia, ic = order[:, a], order[:, c]
        w = (near.gather(1, ia) & near.gather(1, ic)).to(r.dtype)
        pick = lambda t, i: t.gather(1, i)  # noqa: E731
        pick3 = lambda t, i: t.gather(1, i[..., None].expand(-1, -1, 3))  # noqa: E731
        return ia, ic, pick(r, ia), pick(r, ic), pick3(d, ia), pick3(d, ic), w

    def _radial_pairs(self, fa, fc):
        """R_q = f_m(r_a) f_m'(r_c) + f_m'(r_a) f_m(r_c) (once for m = m'), (..., n_mm)."""
        return torch.stack([fa[..., i] * fc[..., j] + (fa[..., j] * fc[..., i] if i != j else 0.0)
                            for i, j in self._mm], dim=-1)

    def _three_body(self, d, r, keep):
        """(M, n3) the three-body sums centred on each bead, over its neighbours within r3."""
        _, _, ra, rc, da, dc, w = self._triplets(d, r, keep)
        cos = (da * dc).sum(-1) / (ra * rc)
        p = legendre(cos.clamp(-1.0, 1.0), self.degree)  # (M, T, L+1)
        radial = self._radial_pairs(self.radial3(ra), self.radial3(rc)) * w[..., None]  # (M, T, n_mm)
        return torch.einsum("mtq,mtl->mql", radial, p).reshape(r.shape[0], -1)

    def descriptor_gradients(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """d(descriptors)/dx of one system x (1, N, 3), (n_basis, N, 3), analytic (one pass, where
        autograd would need a backward pass per descriptor; tested against autograd)."""
        with torch.no_grad():
            d, r, keep = self._pairs(x, lengths)
            nbr = self.neighbour_list.neighbours
            m = r.shape[0]
            u = d / r[..., None] * keep[..., None].to(r.dtype)
            # pair: dG_a/dx_i = sum_k B_a'(r_ik) u_ik (each pair is in both beads' rows)
            jac = [torch.einsum("mka,mkc->amc", self.pair.derivative(r), u)]
            if self.radial3 is not None:
                ia, ic, ra, rc, da, dc, w = self._triplets(d, r, keep)
                ua, uc = da / ra[..., None], dc / rc[..., None]
                cos = (ua * uc).sum(-1)
                p, dp = legendre(cos.clamp(-1.0, 1.0), self.degree, derivative=True)
                fa, fc = self.radial3(ra), self.radial3(rc)
                ga, gc = self.radial3.derivative(ra), self.radial3.derivative(rc)
                radial = self._radial_pairs(fa, fc) * w[..., None]  # (M, T, Q)
                dr_a = self._radial_pairs(ga, fc) * w[..., None]  # dR/dr_a
                dr_c = self._radial_pairs(fa, gc) * w[..., None]
                # dcos/dd_a = (u_c - cos u_a) / r_a, and a <-> c
                dcos_a = (uc - cos[..., None] * ua) / ra[..., None]
                dcos_c = (ua - cos[..., None] * uc) / rc[..., None]
                # dS/dd_a for S = R P: (M, T, Q, L, 3)
                grad_a = (dr_a[..., None, None] * p[..., None, :, None] * ua[..., None, None, :]
                          + radial[..., None, None] * dp[..., None, :, None] * dcos_a[..., None, None, :])
                grad_c = (dr_c[..., None, None] * p[..., None, :, None] * uc[..., None, None, :]
                          + radial[..., None, None] * dp[..., None, :, None] * dcos_c[..., None, None, :])
                n3 = grad_a.shape[2] * grad_a.shape[3]
                grad_a, grad_c = grad_a.reshape(m, -1, n3, 3), grad_c.reshape(m, -1, n3, 3)
                # d_a = x_i - x_ja: +grad on the centre, -grad on the neighbour
                three = (grad_a + grad_c).sum(1)  # (M, n3, 3) on the centres
                flat = torch.cat([nbr.gather(1, ia).reshape(-1), nbr.gather(1, ic).reshape(-1)])
                three = three.index_add(0, flat, -torch.cat([grad_a.reshape(-1, n3, 3), grad_c.reshape(-1, n3, 3)]))
                jac.append(three.permute(1, 0, 2))
            return torch.cat(jac, dim=0)

    # -- the force field ----------------------------------------------------------------------
    def tabulated_heads(self, x: torch.Tensor, lengths: torch.Tensor, geometry=None):
        """(h0 without the prior, h1, h2), each (B,): the tables and the offsets."""
        g = self.descriptors(x, lengths, geometry)
        h = g @ self.coef.to(g.dtype).T + x.shape[1] * self.bead_offset.to(g.dtype)  # (B, 3)
        return h.unbind(-1)

    def heads(self, x: torch.Tensor, lengths: torch.Tensor):
        """(h0 + prior, h1, h2), each (B,)."""
        b, n, _ = x.shape
        geometry = self._pairs(x, lengths)
        h = self.tabulated_heads(x, lengths, geometry)
        return h[0] + pair_prior(geometry[1], geometry[2], self.prior_params, b, n), h[1], h[2]

    def energy(self, x, lengths, temperature_K):
        h = self.heads(x, lengths)
        beta = beta_of(torch.as_tensor(temperature_K, dtype=h[0].dtype, device=h[0].device))
        w = expansion(h, beta, self.beta0, self.order, self.form)[0]
        return w.expand(x.shape[0]) if w.dim() == 0 else w

    #: "auto": the numba kernel (:func:`thermocg.models.fast_kernels.distilled_forward`) on the CPU,
    #: torch ops and autograd elsewhere; "torch": torch everywhere (the reference the kernel is
    #: tested against)
    kernels: str = "auto"

    def energy_and_forces(self, x, lengths, temperature_K):
        """(W (B,), forces (B, N, 3)), detached."""
        if self.kernels == "auto" and x.device.type == "cpu":
            return self._kernel_energy_and_forces(x, lengths, temperature_K)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            w = self.energy(x, lengths, temperature_K)
            (grad,) = torch.autograd.grad(w.sum(), x)
        return w.detach(), -grad

    def _kernel_tables(self, temperature_K, b: int):
        """What the kernel reads of the heads at each system's temperature, as numpy arrays:
        (pair grid (origin, step), pair coefficients (B, n_pair), prior (B, 3), radial grid
        (origin, step), three-body matrices (B, L+1, m, m), the offsets per bead (B,)), the
        coefficients sum_k c_k(T) of head k's.

        Kept for the last temperatures and coefficients asked for: in MD they change only
        between runs, and building them is ~100 small torch operations (as long as the kernel
        itself at 512 beads, bench/RESULTS.md).
        """
        t = torch.as_tensor(temperature_K, dtype=torch.float64).detach().cpu()
        key = (tuple(t.reshape(-1).tolist()), b, self.coef.data_ptr(), self.coef._version,
               self.bead_offset.data_ptr(), self.bead_offset._version, self.beta0.data_ptr(), self.beta0._version,
               self.prior_params)
        if getattr(self, "_tables", None) is not None and self._tables[0] == key:
            return self._tables[1]
        weights = temperature_weights(self.form, self.order, self.beta0.cpu(), t, b)  # (B, 3)
        coef = weights @ self.coef.cpu()  # (B, n_basis)
        coef_prior, decay, onset = self.prior_params
        prior = torch.stack([weights[:, 0] * coef_prior, torch.full((b,), decay, dtype=torch.float64),
                             torch.full((b,), onset, dtype=torch.float64)], dim=-1)
        if self.radial3 is not None:
            n_m, n_l = len(self.radial3.origins), self.degree + 1
            d = coef[:, self.n_pair:].reshape(b, -1, n_l)  # (B, Q, L)
            tri = torch.zeros(b, n_l, n_m, n_m, dtype=torch.float64)
            first, second = (torch.tensor(v) for v in zip(*self._mm))
            tri[:, :, first, second] = d.transpose(1, 2)
            tri[:, :, second, first] = d.transpose(1, 2)
            radial_grid = np.array([self.radial3.origins[0], self.radial3.step])
        else:
            tri, radial_grid = torch.zeros(b, 1, 1, 1, dtype=torch.float64), np.array([0.0, 1.0])
        tables = (np.array([self.pair.origins[0], self.pair.step]), coef[:, :self.n_pair].contiguous().numpy(),
                  prior.numpy(), radial_grid, tri.numpy(), (weights @ self.bead_offset.cpu()).numpy())
        self._tables = (key, tables)
        return tables

    def _kernel_energy_and_forces(self, x, lengths, temperature_K):
        """The CPU path: the heads combined with each system's temperature weights
        (:meth:`_kernel_tables`), then one numba pass over the pairs and triplets (no autograd)."""
        from thermocg.models.fast_kernels import distilled_forward, scatter_pairs

        b, n, _ = x.shape
        with torch.no_grad():
            self.neighbour_list.update(x, lengths)
            pair_grid, pair_coef, prior, radial_grid, tri, offsets = self._kernel_tables(temperature_K, b)
            nbr, valid = self.neighbour_list.neighbours.numpy(), self.neighbour_list.valid.numpy()
            xn = x.detach().to(torch.float64).reshape(b * n, 3).numpy()
            box = lengths.detach().to(torch.float64).repeat_interleave(n, dim=0).numpy()
            system = np.repeat(np.arange(b), n)
            energy_bead = np.empty(b * n)
            gpair = np.empty((*valid.shape, 3))
            distilled_forward(xn, box, nbr, valid, system, self.cutoff, pair_grid, pair_coef, prior, self.r3, radial_grid,
                              tri, energy_bead, gpair)
            grad = np.zeros_like(xn)
            scatter_pairs(nbr, valid, gpair, grad)
            w = energy_bead.reshape(b, n).sum(1) + n * offsets
            return (torch.from_numpy(w).to(x.dtype), -torch.from_numpy(grad).reshape(b, n, 3).to(x.dtype))

    # -- the fit ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, model, positions, box, pair_step_A: float = 0.1, pair_start_A: float = 2.0,
            r3_A: float | None = 3.6, radial3_step_A: float = 0.3, radial3_start_A: float = 2.2, degree: int = 4,
            ridge: float = 1e-6, skin_A: float = 1.0,
            compressions: tuple[float, ...] = (0.96, 0.92)) -> "DistilledForceField":
        """Fit to ``model`` (a ThermalForceField or a loaded CGForceField) on frames ``positions``
        (F, N, 3) Å with edges ``box`` (F, 3) Å. ``r3_A`` None: pair terms only. ``ridge``: the
        penalty on the coefficients relative to the mean diagonal of the normal equations (keeps
        the splines where no pair ever comes at zero; the prior rules there).

        ``compressions``: the frames are also fitted scaled by each of these factors (positions and
        box, labelled by the model as every frame is), so that the fit sees pairs down to ~2.2 Å
        and follows the network's repulsive wall there. Fitted on the T0 frames alone, the wall
        was softer than the network's below ~2.6 Å (no pairs there at T0), hot beads reached the
        prior's steep part, and BAOAB at 700 K blew up from 6 fs; with 0.96 and 0.92 it runs 20 ps
        at 700 K at 10 fs, and the force error against the mapped reference stays at the network's
        (bench/RESULTS.md, "The timestep each form can take"). The per-bead offsets come from the
        unscaled frames. ``()``: the unscaled frames only."""
        positions = np.asarray(positions, dtype=np.float64)
        box = np.broadcast_to(np.asarray(box, dtype=np.float64), (len(positions), 3))
        n_offset = len(positions)
        if any(not 0.5 < c <= 1.0 for c in compressions):
            raise ValueError(f"compressions must lie in (0.5, 1], found {tuple(compressions)}")
        # fitted on the CPU in float64 (the model may live on a GPU); move the result with .to()
        fast = FastForceField.from_model(getattr(model, "model", model), skin_A=0.0).cpu().double()
        # a compressed box must still hold the cutoff below half its shortest edge (minimum image);
        # a box too small for a factor fits without it, and says so
        fits = [c for c in compressions if c * 0.5 * box.min() > fast.cutoff]
        if len(fits) < len(compressions):
            warnings.warn(f"distilled fit: the box (shortest edge {box.min():.3g} Å) cannot be compressed by "
                          f"{', '.join(f'{c:g}' for c in compressions if c not in fits)} with the model's cutoff {fast.cutoff:g} Å "
                          f"below half its edge; those compressed frames are left out, so the fitted wall "
                          f"below ~2.6 Å follows fewer pairs (fit on a larger system to keep them)", stacklevel=2)
        positions = np.concatenate([positions] + [positions * c for c in fits])
        box = np.concatenate([box] + [box * c for c in fits])
        if fast.n_types > 1:
            raise ValueError(f"the distilled form has one pair potential for one bead type; this model has "
                             f"{fast.n_types} bead types (use its inference form, engine = \"fast\")")
        fast.include_prior = False
        if r3_A and not radial3_start_A + radial3_step_A < r3_A <= fast.cutoff:
            raise ValueError(f"the three-body radius r3_A = {r3_A:g} Å must lie above radial3_start_A + "
                             f"radial3_step_A = {radial3_start_A + radial3_step_A:g} Å and not beyond the model's "
                             f"cutoff {fast.cutoff:g} Å (or be 0/None: pair terms only)")
        pair = Knots(pair_start_A, fast.cutoff, pair_step_A)
        radial3 = Knots(radial3_start_A, r3_A, radial3_step_A) if r3_A else None
        self = cls(fast, pair, radial3, degree, skin_A)
        self.fit_heads(fast.heads, positions, box, ridge, offset_frames=n_offset)
        self.neighbour_list = NeighbourList(self.cutoff, skin_A)  # MD starts with a fresh list and counts
        return self

    def fit_heads(self, target, positions, box, ridge: float = 1e-6, offset_frames: int | None = None) -> None:
        """Set the coefficients and offsets by a ridge least squares of each head's forces:
        ``target(x, lengths)`` gives the heads to match, (h0 without the prior, h1, h2) of x
        (1, N, 3), differentiable in x. The offsets match the mean energy per bead of the first
        ``offset_frames`` frames (None: all)."""
        x_all = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
        box_all = torch.as_tensor(np.broadcast_to(np.asarray(box, dtype=np.float64), (len(x_all), 3)).copy())
        heads = self.order + 1
        ata = torch.zeros(self.n_basis, self.n_basis, dtype=torch.float64)  # the same for every head
        atb = torch.zeros(heads, self.n_basis, dtype=torch.float64)
        descriptors, energies = [], []
        for x, lengths in zip(x_all, box_all):
            x, lengths = x[None], lengths[None]
            jac = self.descriptor_gradients(x, lengths).reshape(self.n_basis, -1)  # (n_basis, N*3)
            ata += jac @ jac.T
            xr = x.detach().requires_grad_(True)
            with torch.enable_grad():
                h = target(xr, lengths)
                for k in range(heads):
                    (gk,) = torch.autograd.grad(h[k].sum(), xr, retain_graph=k < heads - 1)
                    atb[k] += jac @ gk.reshape(-1)
            with torch.no_grad():
                descriptors.append(self.descriptors(x, lengths)[0])
                energies.append([float(v.sum()) for v in h[:heads]])
        lam = ridge * float(torch.diagonal(ata).mean())
        coef = torch.linalg.solve(ata + lam * torch.eye(self.n_basis, dtype=torch.float64), atb.T).T
        self.coef.zero_()
        self.bead_offset.zero_()
        self.coef[:heads] = coef
        resid = torch.as_tensor(energies, dtype=torch.float64) - torch.stack(descriptors) @ coef.T  # (F, heads)
        self.bead_offset[:heads] = resid[:offset_frames].mean(0) / x_all.shape[1]


def _openmm_weight_expressions(form: str, order: int, beta0: float) -> tuple[str, str, str]:
    """(c0, c1, c2) of :func:`thermocg.models.thermal.temperature_weights` as OpenMM expressions in the global parameter
    ``T`` (K): the same formulas as :func:`thermocg.models.thermal.expansion`."""
    kb = units.KB
    db = f"(1/({kb!r}*T) - {beta0!r})"
    if form == "em":
        return f"(1 - {db}/{beta0!r})", f"({db}/{beta0!r})", "0"
    if form == "beta":
        return "1", (db if order >= 1 else "0"), (f"(0.5*{db}^2)" if order >= 2 else "0")
    t0 = 1.0 / (kb * beta0)
    dt = f"(T - {t0!r})"
    # W = h0 - dT h1/(kB T0^2) + dT^2/2 h2/(kB^2 T0^4)
    return ("1", f"(-{dt}/{kb * t0 * t0!r})" if order >= 1 else "0",
            f"(0.5*{dt}^2/{kb * kb * t0 ** 4!r})" if order >= 2 else "0")


def _legendre_expression(degree: int, var: str) -> list[str]:
    """P_0..P_degree as polynomial expressions in ``var`` (OpenMM's expression syntax)."""
    from numpy.polynomial import legendre as npleg

    out = []
    for n in range(degree + 1):
        coef = npleg.leg2poly([0] * n + [1])
        terms = [f"{float(c)!r}*{var}^{p}" if p else f"{float(c)!r}" for p, c in enumerate(coef) if c != 0]
        out.append("(" + " + ".join(terms) + ")")
    return out


def to_openmm(ff: DistilledForceField, masses, box_A, temperature_K: float, table_step_A: float = 0.01):
    """An ``openmm.System`` of the distilled force field: its W(R; T) in kJ/mol and nm.

    * pair terms and the prior: a ``CustomNonbondedForce`` (periodic cutoff = the model's) with
      one ``Continuous1DFunction`` per head, sampled every ``table_step_A``;
    * three-body terms: a ``CustomManyParticleForce`` (three particles, the first the centre,
      ``UniqueCentralParticle``) with a ``Continuous2DFunction`` of (r12, r13) per head and
      Legendre degree, times the Legendre polynomial of cos(theta);
    * the per-bead offsets: a ``CustomExternalForce`` (a constant; no force).

    Every force has the global parameter ``T`` (K), set to ``temperature_K``: the heads' weights
    c0(T), c1(T), c2(T) are written as expressions in T with the model's beta0 and form, so a
    simulation changes temperature with ``context.setParameter("T", value)`` (and its
    thermostat's temperature).
    """
    import openmm

    kj, nm = 1.0 / units.KJ_TO_KCAL, 0.1
    heads = ff.order + 1
    c = _openmm_weight_expressions(ff.form, ff.order, float(ff.beta0))[:heads]
    weights = "; ".join(f"c{k} = {c[k]}" for k in range(heads))
    system = openmm.System()
    edges = np.asarray(box_A, dtype=np.float64) * nm
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(edges[0], 0, 0), openmm.Vec3(0, edges[1], 0),
                                        openmm.Vec3(0, 0, edges[2]))
    for mass in np.asarray(masses, dtype=np.float64):
        system.addParticle(float(mass))
    n = system.getNumParticles()
    coef = ff.coef.detach().cpu().numpy()

    # pairs: tables from the first spline's origin to the cutoff
    # sample points on every knot, so that OpenMM's natural cubic spline through them is the B-spline
    step = ff.pair.step / math.ceil(ff.pair.step / table_step_A - 1e-9)
    r = ff.pair.origins[0] + step * np.arange(int(round((ff.cutoff - ff.pair.origins[0]) / step)) + 1)
    basis = ff.pair(torch.as_tensor(r)).numpy()
    a_prior, decay, onset = ff.prior_params
    pair_terms = " + ".join(f"c{k}*phi{k}(r)" for k in range(1, heads))
    expr = (f"c0*(phi0(r) + prior) {'+ ' + pair_terms if pair_terms else ''}; "
            f"prior = {float(a_prior * kj)!r}*exp(-{float(decay / nm)!r}*(r - {float(onset * nm)!r})); {weights}")
    pair = openmm.CustomNonbondedForce(expr)
    pair.addGlobalParameter("T", float(temperature_K))
    for k in range(heads):
        pair.addTabulatedFunction(f"phi{k}", openmm.Continuous1DFunction(
            (basis @ coef[k, :ff.n_pair] * kj).tolist(), float(r[0] * nm), float(r[-1] * nm)))
    pair.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    pair.setCutoffDistance(ff.cutoff * nm)
    pair.setUseLongRangeCorrection(False)
    for _ in range(n):
        pair.addParticle([])
    system.addForce(pair)

    if ff.radial3 is not None:
        step3 = ff.radial3.step / math.ceil(ff.radial3.step / 0.02 - 1e-9)  # ~0.02 Å, on the knots
        x = ff.radial3.origins[0] + step3 * np.arange(int(round((ff.r3 - ff.radial3.origins[0]) / step3)) + 1)
        f = ff.radial3(torch.as_tensor(x))
        fx, fy = f[:, None, :].expand(-1, len(x), -1), f[None, :, :].expand(len(x), -1, -1)
        radial = ff._radial_pairs(fx, fy).numpy()  # (x, y, Q): R_q(r12 = x, r13 = y)
        legendre_terms = _legendre_expression(ff.degree, "cs")
        n_l = ff.degree + 1
        terms = []
        force = openmm.CustomManyParticleForce(3, "PLACEHOLDER")
        for k in range(heads):
            d = coef[k, ff.n_pair:].reshape(-1, n_l)  # (Q, L)
            for ell in range(n_l):
                table = radial @ d[:, ell] * kj  # (x, y)
                # Continuous2DFunction wants x varying fastest: values[i + xsize * j] = f(x_i, y_j)
                force.addTabulatedFunction(f"A{k}_{ell}", openmm.Continuous2DFunction(
                    len(x), len(x), table.T.ravel().tolist(), float(x[0] * nm), float(x[-1] * nm),
                    float(x[0] * nm), float(x[-1] * nm)))
                terms.append(f"c{k}*A{k}_{ell}(r12, r13)*{legendre_terms[ell]}")
        force.setEnergyFunction(" + ".join(terms) + "; cs = cos(angle(p2, p1, p3)); r12 = distance(p1, p2); "
                                f"r13 = distance(p1, p3); {weights}")
        force.addGlobalParameter("T", float(temperature_K))
        force.setPermutationMode(openmm.CustomManyParticleForce.UniqueCentralParticle)
        force.setNonbondedMethod(openmm.CustomManyParticleForce.CutoffPeriodic)
        force.setCutoffDistance(ff.r3 * nm)
        for _ in range(n):
            force.addParticle([])
        system.addForce(force)

    offsets = ff.bead_offset.detach().cpu().numpy() * kj
    const = openmm.CustomExternalForce(" + ".join(f"c{k}*{float(offsets[k])!r}" for k in range(heads)) + f"; {weights}")
    const.addGlobalParameter("T", float(temperature_K))
    for i in range(n):
        const.addParticle(i, [])
    system.addForce(const)
    return system


def _num(value) -> str:
    """A number as LAMMPS reads it, to full precision (numpy scalars print their type otherwise)."""
    return repr(float(value))


def _lammps_phi3(ff: DistilledForceField, coef3: np.ndarray, r1, r2, r3):
    """The three-body term phi(r_ij, r_ik, r_jk) at fixed temperature (``coef3`` (Q, L+1): the heads'
    three-body coefficients combined with their temperature weights) and its partial derivatives
    in the three distances, by autograd (float64)."""
    r1, r2, r3 = (torch.as_tensor(v, dtype=torch.float64).requires_grad_(True) for v in (r1, r2, r3))
    cos = ((r1 * r1 + r2 * r2 - r3 * r3) / (2 * r1 * r2)).clamp(-1.0, 1.0)
    radial = ff._radial_pairs(ff.radial3(r1), ff.radial3(r2))  # (..., Q)
    phi = torch.einsum("...q,...l,ql->...", radial, legendre(cos, ff.degree), torch.as_tensor(coef3))
    g1, g2, g3 = torch.autograd.grad(phi.sum(), (r1, r2, r3))
    return phi.detach().numpy(), g1.numpy(), g2.numpy(), g3.numpy()


def to_lammps(ff: DistilledForceField, masses, positions_A, box_A, temperature_K: float, directory,
              pair_points: int = 2000, three_body_points: int = 40, timestep_fs: float | None = None) -> dict:
    """LAMMPS inputs (``units real``: Å, kcal/mol) of the distilled force field at one temperature, in
    ``directory``: ``pair.table`` (pair terms and the prior, ``pair_style table spline``: cubic
    splines through ``pair_points`` samples from 1.5 Å to the cutoff, exact to the spline's
    interpolation error), ``threebody.table`` and ``cg.3b`` (``pair_style threebody/table``: the
    three-body term's energy and its six force constants per triplet on LAMMPS' grid of
    ``three_body_points`` distances r_ij <= r_ik from the radial functions' start to r3 and
    2 x that many angles; LAMMPS looks up the nearest grid point, so the three-body forces carry
    that grid's discretisation error), ``system.data`` (the beads of ``positions_A`` in the box)
    and ``in.lammps`` (NVT Langevin at the temperature, at ``timestep_fs``: unset, the distilled
    form's measured default, :data:`thermocg.config.ENGINE_TIMESTEPS_FS`). The heads' per-bead offsets shift the
    energy by a constant and are left out. Returns the paths by name."""
    from pathlib import Path

    from thermocg.models.thermal import temperature_weights

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = temperature_weights(ff.form, ff.order, ff.beta0, temperature_K)[0].numpy()  # (3,)
    coef = np.einsum("k,kb->b", weights[: ff.coef.shape[0]], ff.coef.detach().cpu().numpy())
    a_prior, decay, onset = ff.prior_params
    # pair terms and the prior (part of head 0: weight c0)
    r = np.linspace(1.5, ff.cutoff, pair_points)
    rt = torch.as_tensor(r)
    e = ff.pair(rt).numpy() @ coef[: ff.n_pair] + weights[0] * a_prior * np.exp(-decay * (r - onset))
    f = -(ff.pair.derivative(rt).numpy() @ coef[: ff.n_pair]) + weights[0] * decay * a_prior * np.exp(
        -decay * (r - onset))
    lines = [f"# thermocg distilled pair terms at {temperature_K:g} K (kcal/mol, Angstrom)", "", "THERMOCG_PAIR",
             f"N {pair_points} R {_num(r[0])} {_num(r[-1])}", ""]
    lines += [f"{i + 1} {_num(r[i])} {_num(e[i])} {_num(f[i])}" for i in range(pair_points)]
    (out / "pair.table").write_text("\n".join(lines) + "\n")
    pair_coeff = f"pair_coeff 1 1 {{style}}pair.table THERMOCG_PAIR {_num(ff.cutoff)}"
    overlay = f"pair_style table spline {pair_points}\n" + pair_coeff.format(style="")
    paths = {"pair": out / "pair.table"}
    if ff.radial3 is not None:
        n = int(three_body_points)
        # the radial splines reach below their start; below start - step no bead pair comes and the
        # fit's ridge holds them at zero: LAMMPS drops triplets below rmin - dr/2
        rmin, rmax = max(float(ff.radial3.origins[0]), ff.radial3.start - ff.radial3.step), ff.r3
        grid = np.linspace(rmin, rmax, n)
        dtheta = 180.0 / (2 * n)
        rows = [(a, b, (t + 0.5) * dtheta) for i, a in enumerate(grid) for b in grid[i:] for t in range(2 * n)]
        r12, r13, theta = (np.array(v) for v in zip(*rows))
        r23 = np.sqrt(np.maximum(r12 ** 2 + r13 ** 2 - 2 * r12 * r13 * np.cos(np.radians(theta)), 1e-12))
        coef3 = coef[ff.n_pair:].reshape(-1, ff.degree + 1)
        phi, g1, g2, g3 = _lammps_phi3(ff, coef3, r12, r13, r23)
        # forces -grad phi in LAMMPS' form: f_i = f11 r_ij + f12 r_ik, f_j = f21 r_ij + f22 r_jk,
        # f_k = f31 r_ik + f32 r_jk with r_ij = x_j - x_i, r_ik = x_k - x_i, r_jk = x_k - x_j
        f11, f12, f22 = g1 / r12, g2 / r13, g3 / r23
        lines = [f"# thermocg distilled three-body term at {temperature_K:g} K (kcal/mol, Angstrom, degrees)", "",
                 "THERMOCG_3B", f"N {n} rmin {_num(rmin)} rmax {_num(rmax)}", ""]
        lines += [f"{i + 1} {_num(r12[i])} {_num(r13[i])} {_num(theta[i])} {_num(f11[i])} {_num(f12[i])} {_num(-f11[i])} {_num(f22[i])} "
                  f"{_num(-f12[i])} {_num(-f22[i])} {_num(phi[i])}" for i in range(len(r12))]
        (out / "threebody.table").write_text("\n".join(lines) + "\n")
        (out / "cg.3b").write_text(f"# element1 element2 element3 cut file keyword style N\n"
                                   f"CG CG CG {_num(rmax)} threebody.table THERMOCG_3B linear {n}\n")
        overlay = (f"pair_style hybrid/overlay table spline {pair_points} threebody/table\n"
                   + pair_coeff.format(style="table ") + "\npair_coeff * * threebody/table cg.3b CG")
        paths.update(threebody=out / "threebody.table", potential=out / "cg.3b")
    x = np.asarray(positions_A, dtype=np.float64)
    box = np.asarray(box_A, dtype=np.float64)
    x = x - box * np.floor(x / box)
    m = np.asarray(masses, dtype=np.float64)
    data = ["thermocg beads (one per molecule), units real", "", f"{len(x)} atoms", "1 atom types", "",
            f"0 {_num(box[0])} xlo xhi", f"0 {_num(box[1])} ylo yhi", f"0 {_num(box[2])} zlo zhi", "", "Masses", "",
            f"1 {_num(float(m.mean()))}", "", "Atoms # atomic", ""]
    data += [f"{i + 1} 1 {_num(x[i, 0])} {_num(x[i, 1])} {_num(x[i, 2])}" for i in range(len(x))]
    (out / "system.data").write_text("\n".join(data) + "\n")
    if timestep_fs is None:
        from thermocg.config import ENGINE_TIMESTEPS_FS

        timestep_fs = ENGINE_TIMESTEPS_FS["distilled"][0]
    if not timestep_fs > 0:
        raise ValueError(f"timestep_fs must be > 0, found {timestep_fs}")
    frames = max(1, int(round(1000.0 / timestep_fs)))  # a frame about every ps (exactly, where h divides 1 ps)
    (out / "in.lammps").write_text(f"""# thermocg distilled CG model at {temperature_K:g} K: NVT Langevin, {timestep_fs:g} fs
units real
atom_style atomic
boundary p p p
read_data system.data
{overlay}
neighbor 1.0 bin
velocity all create {temperature_K:g} 2026 mom yes rot no dist gaussian
fix integrate all nve
fix thermostat all langevin {temperature_K:g} {temperature_K:g} 1000.0 2026 zero yes
timestep {timestep_fs:g}
thermo {frames}
dump traj all custom {frames} traj.lammpstrj id x y z
run {100 * frames}
""")
    paths.update(data=out / "system.data", input=out / "in.lammps")
    return paths
