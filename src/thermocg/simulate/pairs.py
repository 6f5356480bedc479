"""A batched periodic pair list with a skin, for CG MD with hippynn networks.

Why our own: the model's hippynn graph finds pairs with ``KDTreePairsMemory``, which
runs scipy's KD-tree on the CPU for each system at every call: hippynn's pair memory
(``PairMemory.recalculation_needed``) reuses a list only for a batch of one system and
compares *wrapped* coordinates, so every bead crossing the box edge forces a rebuild.
In MD that pair search was ~20 % of a 512-bead force call on 2 CPU cores (bench/RESULTS.md).

:class:`SkinPairs` keeps, for a whole batch of equally sized systems, the candidate
pairs within ``cutoff + skin`` (vesin's cell lists, through the inference form's
:class:`thermocg.models.fast.NeighbourList`), and at every call recomputes their minimum-image vectors and keeps
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
    The candidates within cutoff + skin, and when to search again, come from the inference
    form's :class:`thermocg.models.fast.NeighbourList` (vesin cell lists): one skin logic
    for both engines.
    """

    def __init__(self, dist_hard_max: float, skin: float = 1.0):
        super().__init__()
        from thermocg.models.fast import NeighbourList

        self.dist_hard_max = float(dist_hard_max)
        self.skin = float(skin)
        self.neighbours = NeighbourList(self.dist_hard_max, self.skin)
        self._flat = None  # (first, second) of the current candidates, and the search they came from

    @property
    def rebuilds(self) -> int:
        return self.neighbours.rebuilds

    @property
    def calls(self) -> int:
        return self.neighbours.calls

    def forward(self, coordinates, nonblank, real_atoms, inv_real_atoms, cell, mol_index, n_molecules, n_atoms_max):
        if not bool(nonblank.all()):
            raise ValueError("SkinPairs needs systems of equal size with no padding")
        b, n = coordinates.shape[:2]
        with torch.no_grad():
            diag = torch.diagonal(cell, dim1=1, dim2=2)
            if not torch.equal(torch.diag_embed(diag), cell):
                raise ValueError("SkinPairs needs orthorhombic cells")
            x = coordinates.detach()
            self.neighbours.update(x, diag)
            if self._flat is None or self._flat[2] != self.neighbours.rebuilds:
                nbr, valid = self.neighbours.neighbours, self.neighbours.valid
                rows = torch.arange(b * n, device=x.device)[:, None].expand_as(nbr)
                self._flat = (rows[valid], nbr[valid], self.neighbours.rebuilds)
            first, second = self._flat[:2]
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
