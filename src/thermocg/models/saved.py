"""Saved force fields: one file per model, and the public API that uses them.

``save_model`` writes weights and metadata in one file; ``load_model`` reads it back
into a :class:`CGForceField` (numpy in, numpy out), the object the ASE calculator
(:mod:`thermocg.models.ase_calculator`) and users' scripts call. This module needs
torch and hippynn, not OpenMM nor any stage's code: ``import thermocg;
thermocg.load_model(path)`` loads a model on a machine without the training pipeline's
data (tested).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from thermocg.errors import DataFormatError
from thermocg.models.prior import RepulsivePrior
from thermocg.models.thermal import NetworkSettings, ThermalForceField, build_network
from thermocg.stagedir import atomic_path

FORMAT = "thermocg-model-1"


def save_model(path: Path, model: ThermalForceField, extra: dict) -> None:
    """Weights and metadata in one file (temporary name, then rename)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "state_dict": model.state_dict(),
                    "metadata": {**model.metadata(), **extra}}, tmp)


def orthorhombic_edges(box, n_frames: int | None) -> np.ndarray:
    """Box edges (3,) or (B, 3) in Å from any of the usual box shapes.

    Accepted: edges (3,) shared by all frames or (B, 3) one per frame; cell matrices
    (3, 3) (rows are the cell vectors, ASE's and MDAnalysis' convention) shared, or
    (B, 3, 3) one per frame. ``n_frames``: B for positions (B, N, 3), None for a single
    frame (N, 3). A cell must be orthorhombic (diagonal); a triclinic one is an error that
    names it. With three frames a (3, 3) array could be either edges per frame or one
    cell: that is an error too, unless the array is diagonal (a cell); pass (3, 3, 3)
    cells or one shared (3,) box to say which.
    """
    b = np.asarray(box, dtype=np.float64)

    def diagonal_of(cells):
        off = cells - cells * np.eye(3)
        scale = np.abs(cells).max(initial=1.0)
        if np.any(np.abs(off) > 1e-9 * scale):
            i = np.unravel_index(np.argmax(np.abs(off)), off.shape)
            raise ValueError(f"box: a triclinic cell (off-diagonal element {off[i]:.6g} Å at index "
                             f"{tuple(int(k) for k in i)}); thermocg models need an orthorhombic cell")
        return np.diagonal(cells, axis1=-2, axis2=-1).copy()

    if b.shape == (3,):
        edges = b
    elif b.shape == (3, 3):
        is_diagonal = not np.any(np.abs(b - b * np.eye(3)) > 1e-9 * np.abs(b).max(initial=1.0))
        if n_frames == 3 and not is_diagonal:
            raise ValueError("box: shape (3, 3) with 3 frames is ambiguous (edges per frame or one cell "
                             "matrix); pass cells as (3, 3, 3) or a shared box as (3,)")
        edges = diagonal_of(b)
    elif n_frames is not None and b.shape == (n_frames, 3):
        edges = b
    elif n_frames is not None and b.shape == (n_frames, 3, 3):
        edges = diagonal_of(b)
    else:
        want = "(3,) or (3, 3)" if n_frames is None else f"(3,), ({n_frames}, 3), (3, 3) or ({n_frames}, 3, 3)"
        raise ValueError(f"box: shape {b.shape}, expected {want}")
    if not np.all(np.isfinite(edges)) or np.any(edges <= 0):
        raise ValueError(f"box: edges must be positive and finite, found {edges.tolist()}")
    return edges


class CGForceField:
    """A trained CG force field loaded from a file: numpy in, numpy out.

    ``energy(R, box, T)`` (kcal/mol) and ``forces(R, box, T)`` (kcal/(mol Å)) for bead
    positions R (N, 3) or (B, N, 3) in Å, an orthorhombic box in Å as edges (3,) or
    (B, 3) or cell matrices (3, 3) or (B, 3, 3) (see :func:`orthorhombic_edges`), and the
    temperature T in kelvin (a float, or one per frame); for a model of several bead types (a
    mixture), ``types`` (N,) gives each bead's type, 0-based, in the order of ``bead_types``.
    ``metadata`` carries units, beta0 and T0, order, training temperatures, network settings,
    prior, bead types and the config.

    ``model`` is the hippynn :class:`ThermalForceField` (the training path); ``energy`` and
    ``forces`` run its inference form (:class:`thermocg.models.fast.FastForceField`: the same
    function from the same weights, several times faster) unless ``engine="hippynn"``.
    """

    def __init__(self, model: ThermalForceField, metadata: dict, engine: str = "fast"):
        if engine not in ("fast", "hippynn"):
            raise ValueError(f"engine must be 'fast' or 'hippynn', found {engine!r}")
        self.model = model
        self.metadata = metadata
        self.engine = engine
        self._fast = None

    @property
    def runner(self):
        """What computes energies and forces: the inference form (built on first use) or the model."""
        if self.engine == "hippynn":
            return self.model
        if self._fast is None:
            from thermocg.models.fast import FastForceField
            self._fast = FastForceField.from_model(self.model, skin_A=0.0)  # frames are independent: no skin
        return self._fast

    def _edges(self, positions, box):
        n_frames = None if np.ndim(positions) == 2 else np.shape(positions)[0]
        return orthorhombic_edges(box, n_frames)

    @property
    def bead_types(self) -> tuple[str, ...]:
        """The names of the bead types it was trained on (0-based ``types`` index them)."""
        return tuple(self.metadata.get("bead_types") or ("molecule",))

    def energy(self, positions, box, temperature_K, types=None):
        return self.runner.energy_numpy(positions, self._edges(positions, box), temperature_K, types)

    def forces(self, positions, box, temperature_K, types=None):
        return self.runner.forces_numpy(positions, self._edges(positions, box), temperature_K, types)


def load_model(path, device: str = "cpu", engine: str = "fast") -> CGForceField:
    """Load a model saved by the train stage (needs thermocg and hippynn, not the training code).
    ``engine``: what :meth:`CGForceField.forces` runs, "fast" (the inference form) or "hippynn"."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location=device, weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise DataFormatError(f"{path}: not a readable thermocg model ({err})") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise DataFormatError(f"{path}: not a thermocg model file (expected format {FORMAT}, found {found})")
    meta = blob["metadata"]
    settings = NetworkSettings(**meta["network"])
    model = ThermalForceField(build_network(settings), RepulsivePrior(**meta["prior"]), meta["beta0_mol_per_kcal"],
                              order=meta["order"], settings=settings, form=meta.get("form", "beta"))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return CGForceField(model.to(device), meta, engine)
