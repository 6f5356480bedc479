"""A trained model in the engines people run: ``thermocg export MODEL --to FORMAT -o OUT`` (issue 30).

* ``openmm``: the distilled form (tabulated pair and three-body terms fitted to the model on
  frames the user names, :mod:`thermocg.models.distilled`) as a serialized OpenMM ``System``
  (``XmlSerializer``): a ``CustomNonbondedForce``, a ``CustomManyParticleForce`` and the
  temperature as the global parameter ``T`` (K; ``context.setParameter("T", 450.0)`` moves the
  model with the thermostat). Units are OpenMM's (nm, kJ/mol); one bead type only.
* ``lammps``: the distilled form at one temperature as LAMMPS inputs in a directory (``units
  real``): ``pair.table`` (``pair_style table spline``: the pair terms and the prior, exact to
  the spline's interpolation, ~5e-6 of the forces), ``threebody.table`` and ``cg.3b``
  (``pair_style threebody/table``, the MANYBODY style made for tabulated three-body CG water:
  LAMMPS takes the nearest grid point, so the three-body forces carry a discretisation error,
  measured ~2 % rms of the forces at the default 40 grid points and falling as 1/points),
  ``system.data`` and a ready ``in.lammps`` (NVT Langevin). The per-bead offsets (a constant
  energy) are left out.
* ``torchscript``: the inference form (:mod:`thermocg.models.fast`: the same function as the
  hippynn model from the same weights) as a TorchScript module that needs torch alone.
  ``forward(positions, box, temperature, types)`` takes positions (N, 3) or (B, N, 3) in Å, box
  edges (3,) or (B, 3) in Å (orthorhombic, periodic), the temperature in K (a 0-d tensor or
  (B,)) and each bead's type (N,) (0-based, the order of the ``bead_types`` attribute; an
  empty tensor for a model of one type), and returns (W (B,) kcal/mol, forces (B, N, 3)
  kcal/(mol Å)). Its attributes carry the cutoff, units, bead types, T0, expansion order and
  form, and training temperatures; the same as JSON in the file's ``metadata.json`` extra file.
  It finds its own pairs by a dense minimum-image search (N^2 distances per call: fine to a few
  thousand beads), so an engine needs to pass only positions and box: OpenMM-Torch's
  ``TorchForce`` (a wrapper module converting nm and kJ/mol), TorchMD's external force, or a
  LAMMPS ML-IAP/Kokkos build through a wrapper that gathers positions.

Why our own code: the network's function is :class:`~thermocg.models.fast.FastForceField`'s (its
weights and the hippynn layout it reads are reused as they are); what is new is a form that
TorchScript compiles, without the numba kernels, the vesin cell lists and the Python-side
neighbour list that make the inference form fast.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from thermocg import units
from thermocg.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("torchscript", "openmm", "lammps")


def bead_frames(path) -> tuple:
    """(positions (F, N, 3) Å, box edges (F, 3) Å, bead masses (N,) amu) of an H5MD file of the
    pipeline: a reference-stage file (all-atom: mapped to one bead per molecule), a targets file or
    a CG trajectory (beads already)."""
    import numpy as np

    from thermocg.errors import DataFormatError
    from thermocg.io.h5md import read_h5md

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such frames file")
    d = read_h5md(path)
    try:
        if "molecule_index" in d.static:
            from thermocg.frames import read_reference
            from thermocg.mapping import map_reference

            cg = map_reference(read_reference(path))
            return cg.positions, cg.box, cg.bead_masses
        return (np.asarray(d.elements["particles/all/position"]), np.asarray(d.elements["particles/all/box/edges"]),
                np.asarray(d.particles["mass"]))
    except KeyError as err:
        raise DataFormatError(f"{path}: missing {err}; not a reference, targets or CG trajectory file") from err


class ScriptedForceField(torch.nn.Module):
    """W(R; T) and forces of a trained model in TorchScript-compilable torch (see the module
    docstring). Built from a :class:`~thermocg.models.fast.FastForceField`, whose stacked weights
    it holds as lists of tensors (G networks: one per head of a separate-network model)."""

    def __init__(self, fast, metadata: dict):
        super().__init__()
        blocks = fast.n_blocks
        atom = fast.n_atom_layers

        def buf(name) -> torch.Tensor:
            return getattr(fast, name).detach().clone()

        def maybe(name) -> torch.Tensor:  # an absent optional weight: an empty tensor
            return buf(name) if hasattr(fast, name) else torch.zeros(0, dtype=fast.mu0.dtype)

        self.mu: List[torch.Tensor] = [buf(f"mu{b}") for b in range(blocks)]
        self.sigma: List[torch.Tensor] = [buf(f"sigma{b}") for b in range(blocks)]
        self.V: List[torch.Tensor] = [buf(f"V{b}") for b in range(blocks)]
        self.vecscale: List[torch.Tensor] = [maybe(f"vecscale{b}") for b in range(blocks)]
        self.quadscale: List[torch.Tensor] = [maybe(f"quadscale{b}") for b in range(blocks)]
        self.self_w: List[torch.Tensor] = [buf(f"self_w{b}") for b in range(blocks)]
        self.self_b: List[torch.Tensor] = [buf(f"self_b{b}") for b in range(blocks)]
        self.res_w: List[torch.Tensor] = [buf(f"res_w{b}") for b in range(blocks)]
        self.res_b: List[torch.Tensor] = [buf(f"res_b{b}") for b in range(blocks)]
        self.adjust: List[torch.Tensor] = [maybe(f"adjust{b}") for b in range(blocks)]
        # atom layer a of block b at index b * n_atom_layers + a - 1
        self.atom_w: List[torch.Tensor] = [buf(f"atom_w{b}_{a}") for b in range(blocks) for a in range(1, atom + 1)]
        self.atom_b: List[torch.Tensor] = [buf(f"atom_b{b}_{a}") for b in range(blocks) for a in range(1, atom + 1)]
        self.atom_rw: List[torch.Tensor] = [buf(f"atom_rw{b}_{a}") for b in range(blocks) for a in range(1, atom + 1)]
        self.atom_rb: List[torch.Tensor] = [buf(f"atom_rb{b}_{a}") for b in range(blocks) for a in range(1, atom + 1)]
        self.register_buffer("head_w0", buf("head_w0"))
        self.head_w: List[torch.Tensor] = [buf(f"head_w{l}") for l in range(1, blocks + 1)]
        self.head_b: List[torch.Tensor] = [buf(f"head_b{l}") for l in range(1, blocks + 1)]
        # head k of the model -> (stacked network, output column); -1: the head is not used
        self.head_network: List[int] = [fast.head_source[k][0] if k in fast.head_source else -1 for k in range(3)]
        self.head_column: List[int] = [fast.head_source[k][1] if k in fast.head_source else -1 for k in range(3)]
        self.cusp: List[float] = [float(c) for c in fast.cusp]
        self.n_in: List[int] = [int(v) for v in fast.n_in]
        self.n_blocks: int = int(blocks)
        self.n_atom_layers: int = int(atom)
        self.channels: int = int(fast.channels)
        self.n_types: int = int(fast.n_types)
        self.order: int = int(fast.order)
        self.form: str = str(fast.form)
        self.beta0: float = float(fast.beta0)
        self.bead_offset: List[float] = [float(v) for v in fast.bead_offset]  # per head
        self.prior_coef, self.prior_decay, self.prior_onset = (float(v) for v in fast._prior_params())
        self.kB: float = float(units.KB)
        # what an engine reads
        self.cutoff_A: float = float(fast.cutoff)
        self.bead_types: List[str] = [str(t) for t in metadata.get("bead_types", ["molecule"])]
        self.T0_K: float = float(1.0 / (units.KB * float(fast.beta0)))
        self.training_temperatures_K: List[float] = [float(t) for t in metadata.get("training_temperatures_K", [])]
        self.length_unit: str = "Angstrom"
        self.energy_unit: str = "kcal/mol"
        self.temperature_unit: str = "K"

    def _angular(self, d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """[1, u, Q(u)] per pair: :meth:`FastForceField._angular`."""
        parts = [torch.ones_like(r).unsqueeze(-1)]
        if self.channels > 1:
            u = d / r.unsqueeze(-1)
            parts.append(u)
            if self.channels > 4:
                ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
                tr = (u * u).sum(-1) / 3.0
                xx, yy = ux * ux - tr, uy * uy - tr
                parts.append(torch.stack([math.sqrt(2.0) * ux * uy, math.sqrt(2.0) * ux * uz, math.sqrt(2.0) * uy * uz,
                                          math.sqrt(0.5) * (xx - yy), math.sqrt(1.5) * (xx + yy)], dim=-1))
        return torch.cat(parts, dim=-1)

    def _pairs(self, x: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                          torch.Tensor]:
        """Every bead's neighbours within the cutoff (minimum image), padded: flat indices
        (M, K), pair vectors x_i - x_j (M, K, 3), lengths (M, K) and the mask of real pairs."""
        b, n = x.shape[0], x.shape[1]
        if self.cutoff_A >= 0.5 * float(lengths.min()):
            raise ValueError("the model's cutoff is not below half the shortest box edge")
        with torch.no_grad():
            d = x.unsqueeze(2) - x.unsqueeze(1)  # (B, N, N, 3)
            box = lengths[:, None, None, :]
            d = d - torch.round(d / box) * box
            near = (d * d).sum(-1) < self.cutoff_A ** 2
            near = near & ~torch.eye(n, dtype=torch.bool, device=x.device).unsqueeze(0)
            k = max(int(near.sum(-1).max()), 1)
            score, idx = torch.topk(near.to(x.dtype), k, dim=-1)  # the neighbours first
            valid = (score > 0.5).reshape(b * n, k)
            nbr = (idx + (torch.arange(b, device=x.device) * n)[:, None, None]).reshape(b * n, k)
        xf = x.reshape(b * n, 3)
        cell = lengths.repeat_interleave(n, dim=0)[:, None, :]
        d = xf.unsqueeze(1) - xf[nbr]
        with torch.no_grad():
            image = torch.round(d / cell) * cell
        d = d - image
        far = torch.tensor([2.0 * self.cutoff_A, 0.0, 0.0], dtype=d.dtype, device=d.device)
        d = torch.where(valid.unsqueeze(-1), d, far)
        return nbr, d, torch.linalg.vector_norm(d, dim=-1), valid

    def _environment(self, blk: int, z: torch.Tensor, nbr: torch.Tensor, d: torch.Tensor, r: torch.Tensor,
                     keep: torch.Tensor) -> torch.Tensor:
        """:meth:`FastForceField._environment_torch`: (G, M, C, nu * f_in)."""
        mu, sigma = self.mu[blk], self.sigma[blk]
        g = mu.shape[0]
        m, k = r.shape[0], r.shape[1]
        nondim = (r[None, :, :, None] ** -1 - mu[:, None, None, :] ** -1) ** 2 / (sigma[:, None, None, :] ** -2)
        phi = torch.cos(math.pi / 2 * r / self.cutoff_A) ** 2 * keep.to(r.dtype)
        sense = torch.exp(-0.5 * nondim) * phi[None, :, :, None]
        angular = self._angular(d, r)
        nu = sense.shape[-1]
        if self.n_in[blk] == 1 and blk == 0:
            return torch.matmul(sense.transpose(-1, -2), angular).transpose(-1, -2)
        zj = z[:, nbr]
        sa = (angular[None, :, :, :, None] * sense[:, :, :, None, :]).reshape(g * m, k, self.channels * nu)
        env = torch.bmm(sa.transpose(1, 2), zj.reshape(g * m, k, -1))
        return env.reshape(g, m, self.channels, nu * self.n_in[blk])

    def _interaction(self, blk: int, z: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """:meth:`FastForceField._interaction`."""
        g, m, c, width = env.shape[0], env.shape[1], env.shape[2], env.shape[3]
        out = torch.bmm(env.reshape(g, m * c, width), self.V[blk]).reshape(g, m, c, -1)
        y = out[:, :, 0]
        if c > 1:
            vec = (out[:, :, 1:4] ** 2).sum(2)
            y = y + self.vecscale[blk][:, None] * torch.sqrt(vec + self.cusp[blk])
            if c > 4:
                quad = (out[:, :, 4:9] ** 2).sum(2)
                y = y + self.quadscale[blk][:, None] * torch.sqrt(quad + self.cusp[blk])
        return y + torch.baddbmm(self.self_b[blk][:, None], z, self.self_w[blk].transpose(1, 2))

    def _heads(self, x: torch.Tensor, lengths: torch.Tensor, types: torch.Tensor) -> List[torch.Tensor]:
        """Per system (W_prior + W0, W1, W2), each (B,)."""
        b, n = x.shape[0], x.shape[1]
        m = b * n
        nbr, d, r, keep = self._pairs(x, lengths)
        g = self.mu[0].shape[0]
        if self.n_types == 1:
            z0 = torch.ones(g, m, 1, dtype=x.dtype, device=x.device)
        else:
            if types.numel() != n:
                raise ValueError("this model has several bead types: pass each bead's type, shape (N,)")
            if int(types.min()) < 0 or int(types.max()) >= self.n_types:
                raise ValueError("types must lie in 0 .. n_types - 1 (the order of bead_types)")
            onehot = torch.nn.functional.one_hot(types.long().repeat(b), self.n_types).to(x.dtype)
            z0 = onehot.unsqueeze(0).expand(g, m, self.n_types)
        features: List[torch.Tensor] = [z0]
        z = z0
        for blk in range(self.n_blocks):
            env = self._environment(blk, z, nbr, d, r, keep)
            y = self._interaction(blk, z, env)
            skip = z if self.adjust[blk].numel() == 0 else torch.bmm(z, self.adjust[blk].transpose(1, 2))
            z = torch.baddbmm(self.res_b[blk][:, None], torch.nn.functional.softplus(y),
                              self.res_w[blk].transpose(1, 2)) + skip
            for a in range(self.n_atom_layers):
                i = blk * self.n_atom_layers + a
                h = torch.nn.functional.softplus(torch.baddbmm(self.atom_b[i][:, None], z, self.atom_w[i].transpose(1, 2)))
                z = torch.baddbmm(self.atom_rb[i][:, None], h, self.atom_rw[i].transpose(1, 2)) + z
            features.append(z)
        eps = torch.bmm(z0, self.head_w0.transpose(1, 2))
        for l in range(self.n_blocks):
            eps = eps + torch.baddbmm(self.head_b[l][:, None], features[l + 1], self.head_w[l].transpose(1, 2))
        pair = torch.where(keep, self.prior_coef * torch.exp(-self.prior_decay * (r - self.prior_onset)),
                           torch.zeros_like(r))
        prior = 0.5 * pair.sum(-1).reshape(b, n).sum(-1)
        heads: List[torch.Tensor] = []
        for k in range(3):
            if self.head_network[k] < 0:  # an unused head: its offset alone, as the inference form's
                heads.append(torch.full((b,), n * self.bead_offset[k], dtype=x.dtype, device=x.device))
            else:
                e = eps[self.head_network[k], :, self.head_column[k]].reshape(b, n).sum(-1) + n * self.bead_offset[k]
                heads.append(e)
        heads[0] = heads[0] + prior
        return heads

    def _expansion(self, h: List[torch.Tensor], beta: torch.Tensor) -> torch.Tensor:
        """W at inverse temperature beta: :func:`thermocg.models.thermal.expansion`'s first output."""
        h0 = h[0]
        h1 = h[1] if self.order >= 1 else torch.zeros_like(h0)
        h2 = h[2] if self.order >= 2 else torch.zeros_like(h0)
        beta0 = self.beta0
        if self.form == "em":
            return h0 + (beta - beta0) * (h1 - h0) / beta0
        if self.form == "beta":
            db = beta - beta0
            return h0 + db * h1 + 0.5 * db * db * h2
        t, t0 = 1.0 / (self.kB * beta), 1.0 / (self.kB * beta0)
        dt = t - t0
        entropy, curvature = h1 / (self.kB * t0 * t0), -h2 / (self.kB * self.kB * t0 ** 4)
        return h0 - dt * entropy - 0.5 * dt * dt * curvature

    def forward(self, positions: torch.Tensor, box: torch.Tensor, temperature: torch.Tensor,
                types: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x = positions.unsqueeze(0) if positions.dim() == 2 else positions
        lengths = box.to(x.dtype).reshape(-1, 3).expand(x.shape[0], 3)
        beta = 1.0 / (self.kB * temperature.to(torch.float64).reshape(-1).expand(x.shape[0]))
        t = types if types is not None else torch.zeros(0, dtype=torch.long, device=x.device)
        x = x.detach().requires_grad_(True)
        w = self._expansion(self._heads(x, lengths, t), beta.to(x.dtype))
        grad = torch.autograd.grad([w.sum()], [x])[0]
        if grad is None:
            raise RuntimeError("no gradient")
        return w.detach(), -grad


def distil(model, frames_path, r3_A: float = 3.6, max_frames: int = 30):
    """The distilled form (:class:`thermocg.models.distilled.DistilledForceField`: tabulated pair and
    three-body terms with the model's temperature expansion) of ``model`` (a loaded
    CGForceField), fitted to its forces on the first ``max_frames`` frames of ``frames_path``
    (:func:`bead_frames`); and those frames' bead masses, positions and box edges. The relative
    force error of the fit on those frames is logged."""
    import numpy as np

    from thermocg.models.distilled import DistilledForceField

    x, box, masses = bead_frames(frames_path)
    x, box = x[:max_frames], box[:max_frames]
    try:
        ff = DistilledForceField.fit(model, x, box, r3_A=r3_A or None)
    except ValueError as err:  # several bead types, a bad three-body radius
        raise ConfigError(f"{frames_path}: cannot distil: {err}") from err
    t0 = 1.0 / (units.KB * float(ff.beta0))
    ours = np.asarray(ff.energy_and_forces(torch.as_tensor(x[:4]), torch.as_tensor(box[:4]), t0)[1])
    want = model.forces(x[:4], box[:4], t0)
    log.info("export: distilled on %d frames of %s; force error against the model at %.0f K: %.2g of its rms",
             len(x), Path(frames_path).name, t0, float(np.sqrt(np.mean((ours - want) ** 2) / np.mean(want ** 2))))
    return ff, masses, x, box


def export(model_path, to: str, out, temperature_K: float | None = None, frames=None, r3_A: float = 3.6) -> Path:
    """Write ``model_path`` (a saved thermocg model) in format ``to`` at ``out`` (temporary name,
    then renamed; an existing file is refused). ``temperature_K``: a warning when it is far from the
    model's training temperatures; ``openmm`` also starts there (default T0). ``frames`` (a
    reference, targets or CG trajectory H5MD file): the frames the distilled form is fitted on,
    which ``openmm`` needs (three-body radius ``r3_A``; 0: pair terms only). Returns the path."""
    from thermocg.models.fast import FastForceField
    from thermocg.models.saved import load_model
    from thermocg.stagedir import atomic_path

    if to not in FORMATS:
        raise ConfigError(f"--to {to}: formats are {', '.join(FORMATS)}")
    model_path, out = Path(model_path), Path(out)
    if not model_path.is_file():
        raise ConfigError(f"{model_path}: no such model file")
    if out.exists():
        raise ConfigError(f"{out}: exists; remove it or choose another name")
    cg = load_model(model_path)
    temps = list(cg.metadata.get("training_temperatures_K", []))
    if temperature_K is not None and temps and not (min(temps) - 50.0 <= temperature_K <= max(temps) + 200.0):
        log.warning("%g K is far from the training temperatures %s of %s: the expansion in beta may not reach it",
                    temperature_K, temps, model_path.name)
    if to == "openmm":
        import openmm

        from thermocg.models.distilled import to_openmm

        if frames is None:
            raise ConfigError("--to openmm writes the distilled form, fitted on frames: add --distill FRAMES (a "
                              "reference, targets or CG trajectory H5MD file of this system)")
        ff, masses, _, box = distil(cg, frames, r3_A)
        t = temperature_K if temperature_K is not None else 1.0 / (units.KB * float(ff.beta0))
        system = to_openmm(ff, masses, box[0], t)
        from thermocg.stagedir import atomic_write_text
        atomic_write_text(out, openmm.XmlSerializer.serialize(system))
        return out
    if to == "lammps":
        from thermocg.models.distilled import to_lammps

        if frames is None:
            raise ConfigError("--to lammps writes the distilled form's tables, fitted on frames: add --distill FRAMES "
                              "(a reference, targets or CG trajectory H5MD file of this system)")
        ff, masses, x, box = distil(cg, frames, r3_A)
        t = temperature_K if temperature_K is not None else 1.0 / (units.KB * float(ff.beta0))
        tmp = out.with_name(out.name + ".part")
        if tmp.exists():
            import shutil
            shutil.rmtree(tmp)
        to_lammps(ff, masses, x[0], box[0], t, tmp)
        tmp.rename(out)  # the directory appears whole or not at all
        return out
    if frames is not None:
        log.warning("--distill is read only by --to openmm and --to lammps; %s exports the network itself", to)
    fast = FastForceField.from_model(cg.model, skin_A=0.0)
    meta = {"format": "thermocg-torchscript-1", "source": model_path.name, "cutoff_A": float(fast.cutoff),
            "bead_types": list(cg.metadata.get("bead_types", ["molecule"])), "T0_K": 1.0 / (units.KB * float(fast.beta0)),
            "order": int(fast.order), "form": str(fast.form), "training_temperatures_K": temps,
            "units": {"length": "Angstrom", "energy": "kcal/mol", "force": "kcal/mol/Angstrom", "temperature": "K"},
            "inputs": "positions (N, 3) or (B, N, 3); box edges (3,) or (B, 3); temperature 0-d or (B,); types (N,)",
            "outputs": "W (B,) kcal/mol, forces (B, N, 3) kcal/(mol Angstrom)", "variant": cg.metadata.get("variant")}
    scripted = torch.jit.script(ScriptedForceField(fast, cg.metadata).eval())
    with atomic_path(out) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files={"metadata.json": json.dumps(meta, indent=1)})
    return out
