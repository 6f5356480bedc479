"""thermocg's one table of units.

Every array inside thermocg is in these units; readers and engine adapters
convert at the boundary (``thermocg.io``, the OpenMM adapter in
``thermocg.reference.engine``) and nowhere else.

=============  ===========================  ===============================
quantity       internal unit                H5MD ``unit`` attribute
=============  ===========================  ===============================
length         Å                            ``Angstrom``
time           ps                           ``ps``
velocity       Å/ps                         ``Angstrom ps-1``
energy         kcal/mol                     ``kcal mol-1``
force          kcal/(mol Å)                 ``kcal mol-1 Angstrom-1``
mass           g/mol (amu)                  ``amu``
charge         elementary charge e          ``e``
temperature    K                            ``K``
=============  ===========================  ===============================
"""

from __future__ import annotations

LENGTH = "Angstrom"
TIME = "ps"
VELOCITY = "Angstrom ps-1"
ENERGY = "kcal mol-1"
FORCE = "kcal mol-1 Angstrom-1"
MASS = "amu"
CHARGE = "e"
TEMPERATURE = "K"

#: Avogadro's number (exact, SI 2019), 1/mol.
AVOGADRO = 6.02214076e23
#: Boltzmann's constant times Avogadro's number, kcal/(mol K) (exact, SI 2019).
KB = 1.380649e-23 * AVOGADRO / 4184.0
# Conversion factors at the OpenMM boundary (OpenMM: nm, ps, kJ/mol).
NM_TO_A = 10.0
KJ_TO_KCAL = 1.0 / 4.184
FS_TO_PS = 1.0e-3
#: amu Å^2 / ps^2 -> kcal/mol (kinetic energies from masses and velocities).
MVV_TO_KCAL = 10.0 / 4184.0
#: g/cm^3 <-> amu/Å^3: rho[g/cm^3] = mass[amu] / V[Å^3] * this.
AMU_PER_A3_TO_G_PER_CM3 = 1.0e24 / AVOGADRO

#: Coulomb's constant 1/(4 pi eps0) in kcal Å / (mol e^2); OpenMM's own value
#: (138.93545764438198 kJ nm / (mol e^2)), so that energies agree with the engine
#: to the last digit.
COULOMB = 138.93545764438198 * NM_TO_A * KJ_TO_KCAL


def kinetic_temperature(kinetic_energy, n_dof):
    """Temperature in K from a kinetic energy in kcal/mol and a number of degrees of freedom."""
    return 2.0 * kinetic_energy / (n_dof * KB)


def beta_of(temperature_K):
    """Inverse temperature 1 / (kB T) in mol/kcal (floats, numpy arrays or torch tensors)."""
    return 1.0 / (KB * temperature_K)
