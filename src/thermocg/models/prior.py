"""The repulsive pair prior of THEORY.md §7 (after Shinkle et al. 2024).

CG water beads never come closer than ~2.4 Å in the reference, so a network has
seen nothing there; a fixed short-range repulsion added to W0 keeps simulations
from collapsing. Per unique pair

    phi(r) = (s p / a) exp(-a (r - t)),   a = ln(1/p) / dr,

so the prior's force is ``s p`` at the onset ``t`` and ``s`` at ``t - dr``. ``t`` is
the first r where the reference g(r) exceeds 0.01, ``s`` the mean magnitude of
the mapped force, dr ~ 0.15 Å, p ~ 0.05. It is the same at every temperature
and belongs to W0 only.

Two pitfalls the module guards against (THEORY.md §7, DEPENDENCIES.md):
pair lists that hold both (i, j) and (j, i) (each pair is counted once, i < j),
and per-system energies of the wrong shape: the result is (n_systems, 1), like
the network's energy heads, so adding it never broadcasts a batch to (B, B).
Units: Å, kcal/mol.
"""

from __future__ import annotations

import math

import numpy as np
import torch


class RepulsivePrior(torch.nn.Module):
    """Fixed exponential pair repulsion; parameters are buffers (saved, not trained).

    Parameters
    ----------
    onset_A : float
        t, where the prior's force is ``s p``.
    strength : float
        s, kcal/(mol Å): the force at ``t - width_A``.
    width_A : float
        dr.
    p : float
        Fraction of ``s`` at the onset, 0 < p < 1.
    """

    def __init__(self, onset_A: float, strength: float, width_A: float = 0.15, p: float = 0.05):
        super().__init__()
        if not (0 < p < 1) or width_A <= 0 or strength < 0 or onset_A <= 0:
            raise ValueError(f"need onset_A > 0, strength >= 0, width_A > 0, 0 < p < 1; found "
                             f"{onset_A}, {strength}, {width_A}, {p}")
        self.register_buffer("onset_A", torch.tensor(float(onset_A), dtype=torch.float64))
        self.register_buffer("strength", torch.tensor(float(strength), dtype=torch.float64))
        self.register_buffer("width_A", torch.tensor(float(width_A), dtype=torch.float64))
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float64))

    @property
    def decay_per_A(self) -> float:
        """a = ln(1/p) / dr."""
        return math.log(1.0 / float(self.p)) / float(self.width_A)

    def pair_energy(self, r: torch.Tensor) -> torch.Tensor:
        a = self.decay_per_A
        s, p, t = (buf.to(r.dtype) for buf in (self.strength, self.p, self.onset_A))
        return s * p / a * torch.exp(-a * (r - t))

    def forward(self, pair_first: torch.Tensor, pair_second: torch.Tensor, pair_dist: torch.Tensor,
                system_of_pair: torch.Tensor, n_systems: int) -> torch.Tensor:
        """Per-system prior energies, shape (n_systems, 1).

        Parameters
        ----------
        pair_first, pair_second : (P,) bead indices (the list may hold both orders)
        pair_dist : (P,) Å
        system_of_pair : (P,) which system each pair belongs to
        n_systems : int
        """
        once = pair_first < pair_second
        e = self.pair_energy(pair_dist[once])
        out = torch.zeros(n_systems, 1, dtype=pair_dist.dtype, device=pair_dist.device)
        return out.index_add(0, system_of_pair[once], e[:, None])

    def parameters_dict(self) -> dict:
        """The prior's parameters as plain floats (for saving with a model)."""
        return {"onset_A": float(self.onset_A), "strength": float(self.strength),
                "width_A": float(self.width_A), "p": float(self.p)}

    @classmethod
    def fit(cls, positions, box, forces, width_A: float = 0.15, p: float = 0.05, threshold: float = 0.01,
            r_max_A: float | None = None, bin_width_A: float = 0.02) -> "RepulsivePrior":
        """Fit t and s from reference CG data (THEORY.md §7).

        positions (F, N, 3) Å; box (F, 3) Å; forces (F, N, 3) mapped forces, kcal/(mol Å).
        t: first bin centre where g(r) > ``threshold``; s: mean |mapped force|.
        """
        from thermocg.analysis import RDF
        box = np.asarray(box, dtype=np.float64)
        r_max = r_max_A if r_max_A is not None else min(6.0, 0.499 * float(box.min()))
        rdf = RDF(r_max_A=r_max, bins=int(round(r_max / bin_width_A))).compute(positions, box)
        strength = float(np.mean(np.linalg.norm(np.asarray(forces), axis=-1)))
        return cls(onset_A=rdf.onset(threshold), strength=strength, width_A=width_A, p=p)
