"""A batched periodic pair list with a skin, for CG MD with hippynn networks.

Why our own: the model's hippynn graph finds pairs with ``KDTreePairsMemory``, which
runs scipy's KD-tree on the CPU for each system at every call: hippynn's pair memory
(``PairMemory.recalculation_needed``) reuses a list only for a batch of one system and
compares *wrapped* coordinates, so every bead crossing the box edge forces a rebuild.
In MD that pair search was ~20 % of a 512-bead force call on 2 CPU cores (bench/RESULTS.md).

:class:`SkinPairs` keeps, for a whole batch of equally sized systems, the candidate
pairs within ``cutoff + skin`` (found by a dense minimum-image search in torch, on the
model's device), and at every call recomputes their minimum-image vectors and keeps
those within the cutoff. The list is rebuilt when any bead has moved more than
``skin / 2`` (minimum image, so wrapping is not motion) since the last build, or when
the box or the batch changes. Minimum image needs ``cutoff + skin < L / 2``; the skin
is shrunk to fit, and a cutoff that does not fit is an error.

It is a drop-in replacement for the pair node's module (same inputs and outputs as
hippynn's ``_DispatchNeighbors``): :func:`install_skin_pairs` swaps it into a network.
"""

from __future__ import annotations

import torch


class SkinPairs(torch.nn.Module):
    """hippynn pair-indexer module with a Verlet skin, for batches of same-size systems.

    Outputs, as hippynn's dispatch pair finders: pair_dist (P,), pair_first, pair_second
    (P,) flat bead indices, pair_coord (P, 3) = x_first - x_second + offsets @ cell,
    offsets (P, 3) integer images, offset_index (P,). Both orders (i, j), (j, i) appear.
    """

    def __init__(self, dist_hard_max: float, skin: float = 1.0, chunk: int | None = None):
        super().__init__()
        if skin < 0:
            raise ValueError(f"skin must be >= 0, found {skin}")
        self.dist_hard_max = float(dist_hard_max)
        self.skin = float(skin)
        self.chunk = chunk  # beads per block of the dense search; None: ~4M distances per block
        self.rebuilds = 0
        self.calls = 0
        self._first = self._second = self._reference = self._cells = None
        self._skin_used = self.skin

    def _effective_skin(self, lengths: torch.Tensor) -> float:
        half = 0.5 * float(lengths.min())
        if self.dist_hard_max >= half:
            raise ValueError(f"pair cutoff {self.dist_hard_max:g} Å is not below half the shortest box edge "
                             f"({half:g} Å): minimum-image pairs would be wrong")
        return max(0.0, min(self.skin, 0.999 * half - self.dist_hard_max))

    def _needs_rebuild(self, x: torch.Tensor, cells: torch.Tensor, lengths: torch.Tensor) -> bool:
        if self._first is None or self._reference.shape != x.shape or self._skin_used == 0:
            return True
        if not torch.equal(self._cells, cells):
            return True
        d = x - self._reference
        d = d - lengths[:, None, :] * torch.round(d / lengths[:, None, :])
        return bool((d * d).sum(-1).max() > (0.5 * self._skin_used) ** 2)

    def _build(self, x: torch.Tensor, lengths: torch.Tensor) -> None:
        """Dense minimum-image search within cutoff + skin, ``chunk`` beads at a time."""
        b, n, _ = x.shape
        chunk = self.chunk or max(1, 4_000_000 // (b * n))
        r2max = (self.dist_hard_max + self._skin_used) ** 2
        firsts, seconds = [], []
        ids = torch.arange(n, device=x.device)
        for start in range(0, n, chunk):
            d = x[:, start:start + chunk, None, :] - x[:, None, :, :]
            d = d - lengths[:, None, None, :] * torch.round(d / lengths[:, None, None, :])
            near = (d * d).sum(-1) < r2max
            near &= ids[start:start + chunk, None] != ids[None, :]
            sys_i, i, j = torch.nonzero(near, as_tuple=True)
            firsts.append(sys_i * n + i + start)
            seconds.append(sys_i * n + j)
        self._first, self._second = torch.cat(firsts), torch.cat(seconds)
        self.rebuilds += 1

    def forward(self, coordinates, nonblank, real_atoms, inv_real_atoms, cell, mol_index, n_molecules, n_atoms_max):
        if not bool(nonblank.all()):
            raise ValueError("SkinPairs needs systems of equal size with no padding")
        self.calls += 1
        b, n = coordinates.shape[:2]
        with torch.no_grad():
            diag = torch.diagonal(cell, dim1=1, dim2=2)
            if not torch.equal(torch.diag_embed(diag), cell):
                raise ValueError("SkinPairs needs orthorhombic cells")
            x = coordinates.detach()
            if self._needs_rebuild(x, cell, diag):
                self._skin_used = self._effective_skin(diag)
                self._build(x, diag)
                self._reference, self._cells = x.clone(), cell.clone()
            first, second = self._first, self._second
            lengths = diag.repeat_interleave(n, dim=0)  # (B*N, 3): each bead's box
            xf = x.reshape(b * n, 3)
            box = lengths[first]
            raw = xf[first] - xf[second]
            offsets = -torch.round(raw / box)
            pair_offsets = offsets * box
            keep = ((raw + pair_offsets) ** 2).sum(-1) < self.dist_hard_max ** 2
            first, second, offsets, pair_offsets = first[keep], second[keep], offsets[keep], pair_offsets[keep]
            offsets = offsets.to(torch.int64)
            o1, o2, o3 = (offsets + 1).unbind(dim=1)
            offset_index = o3 + 3 * (o2 + 3 * o1)
        coordflat = coordinates.reshape(b * n, 3)
        paircoord = coordflat[first] - coordflat[second] + pair_offsets
        return paircoord.norm(dim=1), first, second, paircoord, offsets, offset_index


def install_skin_pairs(network, skin: float = 1.0) -> list[SkinPairs]:
    """Replace the pair finder of every hippynn graph in ``network`` (a GraphModule from
    :func:`thermocg.models.thermal.build_network`, or its ``SeparateNetworks``) with a
    :class:`SkinPairs` of the same cutoff. Mutates ``network``; returns the new modules."""
    graphs = list(network.networks) if hasattr(network, "networks") else [network]
    installed = []
    for graph in graphs:
        node = graph.node_from_name("pairs")
        name = graph.names_dict[node]
        old = graph.moddict[name]
        new = SkinPairs(float(old.dist_hard_max), skin)
        graph.moddict[name] = new
        installed.append(new)
    return installed
