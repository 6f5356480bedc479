"""An ASE calculator for thermocg force fields, so ASE's MD and tools can run them.

Beads are ASE atoms (any element; only positions and the cell are used; for a model of several
bead types, each bead's type comes from the atoms' ``bead_type`` array or the calculator's
``types``).
ASE's units are eV and Å; thermocg's energies are kcal/mol, converted here at
the boundary. The temperature is an argument of the calculator (ASE idiom
``temperature_K``), never a global.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.units import kcal, mol

from thermocg.models.saved import CGForceField, load_model

_KCAL_MOL_TO_EV = kcal / mol


class ThermocgCalculator(Calculator):
    """ASE calculator for a trained thermocg model at a given temperature.

    Parameters
    ----------
    model : CGForceField or path of a saved model
    temperature_K : float
        The temperature at which W(R; T) is evaluated.
    types : (N,) ints, optional
        Each bead's type, 0-based in the order of ``model.bead_types`` (a mixture's model);
        ``atoms.arrays["bead_type"]``, when the atoms carry it, takes precedence.
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model, temperature_K: float, types=None, **kwargs):
        super().__init__(**kwargs)
        self.types = None if types is None else np.asarray(types, dtype=np.int64)
        self.model = model if isinstance(model, CGForceField) else load_model(model)
        if not temperature_K > 0:
            raise ValueError(f"temperature_K must be > 0, found {temperature_K}")
        self.temperature_K = float(temperature_K)

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes, plus a changed ``bead_type`` array (ASE compares positions, numbers,
        cell, pbc and charges only: a retyped bead would get the cached forces)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and not np.array_equal(self.atoms.arrays.get("bead_type", -1),
                                                         atoms.arrays.get("bead_type", -1)):
            changes.append("bead_type")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if not np.all(self.atoms.pbc):
            raise ValueError("thermocg models need a periodic orthorhombic cell (pbc=True, diagonal cell)")
        box = np.asarray(self.atoms.cell)  # (3, 3); CGForceField refuses a triclinic cell
        x = self.atoms.get_positions()
        types = self.atoms.arrays.get("bead_type", self.types)
        energy = float(self.model.energy(x, box, self.temperature_K, types)) * _KCAL_MOL_TO_EV
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["forces"] = self.model.forces(x, box, self.temperature_K, types) * _KCAL_MOL_TO_EV
