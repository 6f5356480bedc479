"""CG molecular dynamics in torch: BAOAB Langevin and velocity Verlet, many systems at once.

Why our own integrator: the CG force field is a torch module whose forces come from
autograd, at a temperature that is an input of the model. ASE's Langevin (through the
calculator in :mod:`thermocg.models.ase_calculator`) steps one system with numpy
round trips per step; hippynn's ``LangevinDynamics`` is a first-order velocity update,
not BAOAB (DEPENDENCIES.md); OpenMM-Torch needs a CUDA torch. Here B systems of N beads
(several temperatures, or replicas) step together, and one forward pass of the model
gives every system's forces: that is how a GPU is used well for systems of ~500 beads.

Units are thermocg's (Å, ps, kcal/mol, amu, K). One step of BAOAB (Leimkuhler &
Matthews 2013) with timestep h and friction gamma::

    B  v += h/2 F/m          A  x += h/2 v
    O  v  = c1 v + sqrt((1 - c1^2) kB T / m) xi,   c1 = exp(-gamma h)
    A  x += h/2 v            B  v += h/2 F(x)/m

With gamma = 0 the O step is the identity and the step is velocity Verlet (NVE).

Multiple time stepping (r-RESPA, Tuckerman, Berne & Martyna 1992; with Langevin the
BAOAB-RESPA of Lagardère et al. 2019, OpenMM's ``MTSLangevinIntegrator``): the forces
split into a fast, cheap part F_f (the repulsive prior) and a slow, costly one F_s (the
network); with k substeps of h = H/k per outer step H::

    B_s(H/2)  [B_f(h/2) A(h/2) O(h) A(h/2) B_f(h/2)] x k  B_s(H/2)

so the network is evaluated once per H. k = 1 is the step above.

Positions are kept unwrapped (continuous in time, as the all-atom reference stores
them), so mean squared displacements need no unwrapping; the model sees them
wrapped into the box.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from thermocg import units
from thermocg.errors import UnstableSystem
from thermocg.simulate.pairs import install_skin_pairs

#: kcal/mol -> amu Å^2/ps^2 (accelerations F/m in Å/ps^2 from kcal/(mol Å) and amu)
KCAL_TO_MVV = 1.0 / units.MVV_TO_KCAL

#: (positions (B, N, 3), box (B, 3), temperature (B,)) -> (energy (B,), forces (B, N, 3))
ForceFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def model_force_function(model, skin_A: float | None = 1.0, engine: str = "fast", types=None) -> ForceFunction:
    """The force function of a :class:`thermocg.models.thermal.ThermalForceField` (or of a
    loaded :class:`thermocg.models.saved.CGForceField`): one batched forward pass.

    ``engine``: "fast", the model's inference form (:class:`thermocg.models.fast.FastForceField`:
    the same function, from the same weights, without hippynn's graph), or "hippynn", the
    model itself; or "distilled", for a fitted :class:`thermocg.models.distilled.DistilledForceField`
    passed as ``model`` (its own pair list and skin). ``skin_A``: the pair list keeps pairs within cutoff + skin and is searched
    again only when a bead has moved more than skin/2 (the inference form's
    :class:`~thermocg.models.fast.NeighbourList`, or with hippynn a
    :class:`thermocg.simulate.pairs.SkinPairs` on a copy of the model; the caller's model is
    not changed). The function's ``pair_lists`` hold them, for their search counts. None: a
    new search at every call. ``types`` (N,): each bead's type, for a model of several bead
    types (a mixture); None for one type.
    """
    from thermocg.models.distilled import DistilledForceField
    from thermocg.models.fast import FastForceField

    if engine == "distilled" or isinstance(model, DistilledForceField):
        if not isinstance(model, DistilledForceField):
            raise TypeError(f"engine 'distilled' runs a fitted thermocg.models.distilled.DistilledForceField, "
                            f"found {type(model).__name__} (fit one with DistilledForceField.fit(model, frames))")
        return _form_function(model)  # its own pair list and skin
    model = getattr(model, "model", model)
    if engine == "fast":
        return _form_function(FastForceField.from_model(model, skin_A=skin_A or 0.0), types=types)
    if engine != "hippynn":
        raise ValueError(f"engine must be 'fast', 'hippynn' or 'distilled', found {engine!r}")
    pair_lists = []
    if skin_A is not None:
        model = copy.deepcopy(model)
        pair_lists = install_skin_pairs(model.network, skin_A)

    def forces(x, box, temperature):
        species = model.species(types, x.shape[:2], x.device)
        with torch.no_grad():
            shift = box[:, None, :] * torch.floor(x / box[:, None, :])
        xw = (x.detach() - shift).requires_grad_(True)
        cell = torch.diag_embed(box)
        energy, f = model.energy_and_forces(species, xw, cell, temperature)
        return energy.detach(), f.detach()

    forces.pair_lists = pair_lists  # the SkinPairs modules, for their rebuild counts
    return forces


def split_force_functions(model, skin_A: float | None = 1.0, types=None) -> tuple[ForceFunction, ForceFunction]:
    """(slow, fast) force functions for multiple time stepping: the network without the prior,
    and the prior's term of W (:meth:`thermocg.models.fast.FastForceField.prior_energy_and_forces`).
    They share one inference form and pair list; their sum is :func:`model_force_function`'s.
    """
    from thermocg.models.fast import FastForceField

    fast = FastForceField.from_model(getattr(model, "model", model), skin_A=skin_A or 0.0)
    fast.include_prior = False
    return _form_function(fast, types=types), _form_function(fast, "prior_energy_and_forces")


def _form_function(form, method: str = "energy_and_forces", types=None) -> ForceFunction:
    """A force function calling ``form.<method>`` (an inference or distilled form; with
    ``types``, each bead's type, for several), with the form's pair list (``pair_lists``, for
    its search counts), its closest-pair check (``min_distance``, linear in N: the safety
    check) and the form itself (``fast_form``)."""
    call = getattr(form, method)

    def forces(x, box, temperature):
        return call(x, box, temperature) if types is None else call(x, box, temperature, types)

    forces.pair_lists = [form.neighbour_list]
    forces.min_distance = form.neighbour_list.min_distance
    forces.fast_form = form
    return forces


@dataclass(frozen=True)
class Safety:
    """When a run stops with :class:`SimulationError` (checked every ``interval`` steps).

    max_force: largest allowed force component, kcal/(mol Å) (mapped water forces are
    ~10-40); min_distance_A: the closest two beads may come (the reference never has
    water beads closer than ~2.4 Å, the prior's onset).
    """

    max_force: float = 2000.0
    min_distance_A: float = 1.5
    interval: int = 10


class Integrator:
    """BAOAB Langevin (``friction_per_ps > 0``) or velocity Verlet (0) for B systems of N beads.

    Parameters
    ----------
    force_fn : ForceFunction
    masses : (N,) amu
    box : (B, 3) or (3,) Å, orthorhombic edges (fixed volume)
    temperature_K : (B,) or float; the model's temperature and the thermostat's
    timestep_fs, friction_per_ps : float
    seeds : (B,) ints
        One random stream per system, so a system's trajectory does not depend on which
        other systems share its batch.
    device, dtype : where and in what precision to integrate (float32 default)
    safety : Safety
    fast_fn : ForceFunction or None
        Multiple time stepping: ``force_fn`` is then the slow part, evaluated once per
        ``timestep_fs``, and ``fast_fn`` the fast part, evaluated at each of ``substeps``
        inner steps of timestep_fs / substeps (the thermostat acts there too).
        ``potential`` and ``forces`` are always the sums of both parts.
    """

    def __init__(self, force_fn: ForceFunction, masses, box, temperature_K, timestep_fs: float,
                 friction_per_ps: float, seeds, device="cpu", dtype=torch.float32, safety: Safety = Safety(),
                 fast_fn: ForceFunction | None = None, substeps: int = 1):
        if timestep_fs <= 0 or friction_per_ps < 0:
            raise ValueError(f"need timestep_fs > 0 and friction_per_ps >= 0, found {timestep_fs}, {friction_per_ps}")
        if int(substeps) != substeps or substeps < 1 or (substeps > 1 and fast_fn is None):
            raise ValueError(f"substeps must be a positive integer, and above 1 only with a fast_fn; found {substeps}")
        self.force_fn, self.fast_fn, self.substeps = force_fn, fast_fn, int(substeps)
        self.device, self.dtype = torch.device(device), dtype
        seeds = [int(s) for s in np.atleast_1d(seeds)]
        b = len(seeds)
        t = np.broadcast_to(np.asarray(temperature_K, dtype=np.float64), (b,))
        if np.any(t <= 0):
            raise ValueError(f"temperatures must be positive, found {t}")
        self.temperature = torch.as_tensor(t.copy(), dtype=dtype, device=self.device)
        self.box = torch.as_tensor(np.broadcast_to(np.asarray(box, dtype=np.float64), (b, 3)).copy(),
                                   dtype=dtype, device=self.device)
        self.masses = torch.as_tensor(np.asarray(masses, dtype=np.float64), dtype=dtype, device=self.device)
        self.h = timestep_fs * units.FS_TO_PS
        self.friction = float(friction_per_ps)
        self.c1 = math.exp(-self.friction * self.h / self.substeps)  # the O step's, at the inner step
        self.safety = safety
        self.generators = [torch.Generator(device=self.device).manual_seed(s) for s in seeds]
        self.step_count = 0
        self.positions = self.velocities = self.forces = self.potential = None

    # -- state ------------------------------------------------------------------------
    @property
    def n_systems(self) -> int:
        return len(self.generators)

    @property
    def n_dof(self) -> int:
        """Degrees of freedom per system: 3N with a thermostat, 3N - 3 in NVE (momentum removed)."""
        n = 3 * len(self.masses)
        return n if self.friction > 0 else n - 3

    def _noise(self, shape) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g, device=self.device, dtype=self.dtype)
                            for g in self.generators])

    def _thermal_sigma(self) -> torch.Tensor:
        """sqrt(kB T / m) in Å/ps, (B, N, 1)."""
        return torch.sqrt(units.KB * self.temperature[:, None, None] * KCAL_TO_MVV / self.masses[None, :, None])

    def set_state(self, positions, velocities=None, step: int = 0) -> None:
        """Positions (B, N, 3) Å; velocities (B, N, 3) Å/ps, or None to draw them from the
        Maxwell-Boltzmann distribution at each system's temperature (total momentum removed
        in NVE)."""
        x = torch.as_tensor(np.array(positions), dtype=self.dtype, device=self.device)
        if x.shape != (self.n_systems, len(self.masses), 3):
            raise ValueError(f"positions have shape {tuple(x.shape)}, expected "
                             f"({self.n_systems}, {len(self.masses)}, 3)")
        if velocities is None:
            v = self._thermal_sigma() * self._noise(x.shape[1:])
            if self.friction == 0:
                v = v - (self.masses[None, :, None] * v).sum(1, keepdim=True) / self.masses.sum()
        else:
            v = torch.as_tensor(np.array(velocities), dtype=self.dtype, device=self.device)
            if v.shape != x.shape:
                raise ValueError(f"velocities have shape {tuple(v.shape)}, expected {tuple(x.shape)}")
        self.positions, self.velocities, self.step_count = x, v, int(step)
        self._slow = self.force_fn(x, self.box, self.temperature)
        self._fast = self.fast_fn(x, self.box, self.temperature) if self.fast_fn else None
        self._sum()
        self._check()

    def _sum(self) -> None:
        """potential and forces: the slow part plus the fast part, if any."""
        self.potential, self.forces = self._slow
        if self._fast is not None:
            self.potential, self.forces = self.potential + self._fast[0], self.forces + self._fast[1]

    def kinetic_energy(self) -> torch.Tensor:
        """(B,) kcal/mol."""
        return 0.5 * (self.masses[None, :, None] * self.velocities ** 2).sum((1, 2)) / KCAL_TO_MVV

    def kinetic_temperature(self) -> torch.Tensor:
        return units.kinetic_temperature(self.kinetic_energy(), self.n_dof)

    def rng_state(self) -> list:
        return [g.get_state() for g in self.generators]

    def set_rng_state(self, states) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)

    # -- dynamics ---------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        """Advance every system ``n`` steps."""
        if self.positions is None:
            raise RuntimeError("set_state() before step()")
        inv_m = KCAL_TO_MVV / self.masses[None, :, None]
        half = 0.5 * self.h
        inner = half / self.substeps
        sigma = self._thermal_sigma() * math.sqrt(1.0 - self.c1 ** 2) if self.friction > 0 else None
        for _ in range(n):
            v, x = self.velocities + half * self._slow[1] * inv_m, self.positions  # B_s(H/2)
            for j in range(self.substeps):
                if self.fast_fn is not None:
                    v = v + inner * self._fast[1] * inv_m  # B_f(h/2)
                v, x = self._inner(x, v, inner, sigma)  # A O A
                if j < self.substeps - 1:  # the last B_f(h/2) comes after the slow forces below
                    self._fast = self.fast_fn(x, self.box, self.temperature)
                    v = v + inner * self._fast[1] * inv_m
            self._slow = self.force_fn(x, self.box, self.temperature)
            if self.fast_fn is not None:
                self._fast = self.fast_fn(x, self.box, self.temperature)
                v = v + inner * self._fast[1] * inv_m
            v = v + half * self._slow[1] * inv_m  # B_s(H/2)
            self.velocities, self.positions = v, x
            self._sum()
            self.step_count += 1
            if self.step_count % self.safety.interval == 0:
                self._check()

    def _inner(self, x, v, half: float, sigma):
        """A O A of one (inner) step: (v, x) after drift h/2, the thermostat, drift h/2."""
        x = x + half * v
        if sigma is not None:
            v = self.c1 * v + sigma * self._noise(x.shape[1:])
        return v, x + half * v

    def _check(self) -> None:
        """Stop with a SimulationError naming the step and system on NaN, an exploding force,
        or beads closer than the floor."""
        s = self.safety
        bad = ~(torch.isfinite(self.positions).all(dim=(1, 2)) & torch.isfinite(self.forces).all(dim=(1, 2))
                & torch.isfinite(self.potential))
        if bad.any():
            k = int(torch.nonzero(bad)[0, 0])
            raise UnstableSystem(f"step {self.step_count}: system {k} (T = {float(self.temperature[k]):g} K) has "
                                 "non-finite positions, forces or energy", k, self.step_count)
        fmax = self.forces.abs().amax(dim=(1, 2))
        if (fmax > s.max_force).any():
            k = int(torch.argmax(fmax))
            raise UnstableSystem(f"step {self.step_count}: system {k} (T = {float(self.temperature[k]):g} K) has a "
                                 f"force of {float(fmax[k]):.4g} kcal/(mol Å), above max_force = {s.max_force:g}",
                                 k, self.step_count)
        dmin = getattr(self.force_fn, "min_distance", min_distance)(self.positions, self.box)
        if (dmin < s.min_distance_A).any():
            k = int(torch.argmin(dmin))
            raise UnstableSystem(f"step {self.step_count}: system {k} (T = {float(self.temperature[k]):g} K) has "
                                 f"two beads {float(dmin[k]):.3f} Å apart, below min_distance_A = "
                                 f"{s.min_distance_A:g}", k, self.step_count)


def min_distance(positions: torch.Tensor, box: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Smallest minimum-image distance between two beads of each system, (B,) Å (dense, in
    chunks of ``chunk`` beads: a check run every few steps, not a pair finder)."""
    b, n, _ = positions.shape
    best = torch.full((b,), float("inf"), dtype=positions.dtype, device=positions.device)
    idx = torch.arange(n, device=positions.device)
    for start in range(0, n, chunk):
        d = positions[:, start:start + chunk, None, :] - positions[:, None, :, :]
        d = d - box[:, None, None, :] * torch.round(d / box[:, None, None, :])
        r2 = (d ** 2).sum(-1)
        own = idx[start:start + chunk, None] == idx[None, :]
        r2 = r2.masked_fill(own[None], float("inf"))
        best = torch.minimum(best, r2.amin(dim=(1, 2)).sqrt())
    return best
