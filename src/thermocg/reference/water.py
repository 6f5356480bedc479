"""Water models the reference stage can simulate, and the geometry of a water box.

Kept free of OpenMM imports so that configuration validation (box size versus
cutoff) stays cheap at CLI start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from thermocg import units


@dataclass(frozen=True)
class WaterModel:
    """A rigid three-site water model as OpenMM's force field files define it.

    Attributes
    ----------
    forcefield_file : str
        OpenMM force field XML that defines the model.
    r_oh_A : float
        O-H bond length, Å.
    angle_hoh_deg : float
        H-O-H angle, degrees.
    molar_mass : float
        Molecular mass in g/mol with OpenMM's element masses.
    """

    forcefield_file: str
    r_oh_A: float
    angle_hoh_deg: float
    molar_mass: float


#: OpenMM element masses: O 15.99943, H 1.007947 (g/mol).
_WATER_MASS = 15.99943 + 2 * 1.007947

WATER_MODELS: dict[str, WaterModel] = {
    "spce": WaterModel("spce.xml", 1.0, 109.47, _WATER_MASS),
}


def box_length_A(n_molecules: int, density_g_cm3: float, molar_mass: float) -> float:
    """Edge of the cubic box, Å, holding ``n_molecules`` of ``molar_mass`` g/mol at a density."""
    volume_A3 = n_molecules * molar_mass * units.AMU_PER_A3_TO_G_PER_CM3 / density_g_cm3
    return volume_A3 ** (1.0 / 3.0)
