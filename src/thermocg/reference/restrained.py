"""Restrained-bead sampling with OpenMM (issue 15): the beads held at one CG configuration,
the hidden degrees of freedom (for rigid water, the orientations) free.

Every molecule's centre of mass is tied to a fixed point by a stiff harmonic spring,
``0.5 k |R_I - R_I^0|^2``, one ``CustomCentroidBondForce`` with mass weights:
the spring acts on the centre of mass only, so it exerts no torque and the orientations
sample their conditional distribution at (nearly) fixed R. The spring is in its own force
group; the forces and energies that are sampled leave it out, so the samples are of the
physical mapped forces f_I and per-molecule energies u_J at the restrained configuration.
The spring's bias is finite k: the centres of mass wander by ``sqrt(kB T / k)`` per axis
(0.024 Å at 300 K and k = 1000 kcal/mol/Å²) and lean along the mean force by ``F / k``.
It is measured, not assumed (bench/restrained_targets.py: several stiffnesses).

Everything that touches OpenMM for this lives here, like :mod:`thermocg.reference.engine`
for the reference stage, whose system, platform and energy decomposition it reuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm as mm
import openmm.unit as u

from thermocg import units
from thermocg.errors import ConfigError, SimulationError
from thermocg.mapping import LinearMap
from thermocg.reference import engine

#: the force group of the restraints (sampled forces and energies leave it out)
RESTRAINT_GROUP = 31
_PHYSICAL_GROUPS = sum(1 << g for g in range(32) if g != RESTRAINT_GROUP)
_KCAL_A2_TO_KJ_NM2 = 1.0 / (units.KJ_TO_KCAL / units.NM_TO_A**2)
#: k/m in kcal/mol/Å² per g/mol -> 1/fs²: 4184 J / (1e-3 kg 1e-20 m²) = 4.184e26 1/s²
_SPRING_PER_MASS_TO_PER_FS2 = 4.184e26 * 1e-30


def com_restraints(molecule_index: np.ndarray, k_kcal_per_A2: float) -> mm.CustomCentroidBondForce:
    """One spring per molecule from its centre of mass to a point (set by :func:`set_centres`)."""
    if not k_kcal_per_A2 > 0:
        raise ConfigError(f"restraint_k must be > 0 kcal/mol/Å², found {k_kcal_per_A2}")
    # No minimum image: CustomCentroidBondForce has no periodicdistance(), and needs none here. The
    # context's coordinates are continuous (OpenMM does not wrap them), the points are the centres
    # of mass of the very coordinates the context starts from, and a restrained molecule moves by
    # hundredths of an Å.
    force = mm.CustomCentroidBondForce(1, "0.5*k_restraint*((x1-x0)^2 + (y1-y0)^2 + (z1-z0)^2)")
    force.addGlobalParameter("k_restraint", k_kcal_per_A2 * _KCAL_A2_TO_KJ_NM2)
    for name in ("x0", "y0", "z0"):
        force.addPerBondParameter(name)
    for mol in range(int(molecule_index.max()) + 1):
        group = force.addGroup([int(i) for i in np.flatnonzero(molecule_index == mol)])  # mass-weighted
        force.addBond([group], [0.0, 0.0, 0.0])
    force.setForceGroup(RESTRAINT_GROUP)
    return force


def set_centres(context: mm.Context, force: mm.CustomCentroidBondForce, centres_A: np.ndarray) -> None:
    """Move the springs' fixed points to ``centres_A`` (n_molecules, 3), Å."""
    c = np.asarray(centres_A, dtype=np.float64) / units.NM_TO_A
    for b in range(force.getNumBonds()):
        force.setBondParameters(b, [b], [float(c[b, 0]), float(c[b, 1]), float(c[b, 2])])
    force.updateParametersInContext(context)


@dataclass(frozen=True)
class RestrainedSamples:
    """K samples at one restrained configuration, in time order.

    ``forces`` (K, N, 3) kcal/mol/Å: the mapped physical forces (no spring); ``molecule_energies``
    (K, N) kcal/mol, summing to the physical potential energy; ``offsets`` (K, N, 3) Å: each
    centre of mass minus its spring's point; ``centres`` (N, 3) Å and ``box``
    (3,) Å: the configuration.
    """

    forces: np.ndarray
    molecule_energies: np.ndarray
    offsets: np.ndarray
    centres: np.ndarray
    box: np.ndarray


class RestrainedSampler:
    """Langevin MD of one system with every centre of mass restrained; reused for many
    configurations (only the springs' points and the state change between them).

    Parameters
    ----------
    system_xml : the reference stage's serialized System (``reference/system.xml``)
    molecule_index : (n_atoms,) molecule of each atom
    temperature_K, k_kcal_per_A2, timestep_fs, friction_per_ps : the MD and the springs
    device, threads : as :func:`thermocg.reference.engine.choose_platform`
    """

    def __init__(self, system_xml: str, molecule_index: np.ndarray, temperature_K: float, k_kcal_per_A2: float,
                 timestep_fs: float = 2.0, friction_per_ps: float = 1.0, device: str = "auto",
                 threads: int | None = None):
        self.system = mm.XmlSerializer.deserialize(system_xml)
        self.molecule_index = np.asarray(molecule_index)
        self.temperature_K = float(temperature_K)
        self.k = float(k_kcal_per_A2)
        if not self.k > 0:
            raise ConfigError(f"restraint_k must be > 0 kcal/mol/Å², found {self.k}")
        period_fs = 2 * np.pi / np.sqrt(self.k / self._molecule_mass() * _SPRING_PER_MASS_TO_PER_FS2)
        if timestep_fs > period_fs / 10:
            raise ConfigError(f"restraint_k = {self.k:g} kcal/mol/Å² makes the centres of mass oscillate with a "
                              f"period of {period_fs:.0f} fs; the time step {timestep_fs:g} fs must be at most a "
                              f"tenth of it (soften the restraint or shorten the step)")
        self.restraint = com_restraints(self.molecule_index, self.k)
        self.system.addForce(self.restraint)
        self.integrator = mm.LangevinMiddleIntegrator(self.temperature_K * u.kelvin, friction_per_ps / u.picosecond,
                                                      timestep_fs * units.FS_TO_PS * u.picosecond)
        self.timestep_fs = float(timestep_fs)
        platform, props = engine.choose_platform(device, threads)
        self.context = mm.Context(self.system, self.integrator, platform, props)
        self.decomposition = None  # needs positions in the context (PME's parameters): at the first sample
        self.map = LinearMap.center_of_mass(self.molecule_index, engine.masses(self.system))

    def _molecule_mass(self) -> float:
        m = engine.masses(self.system)
        return float(np.bincount(self.molecule_index, m).min())

    def sample(self, positions_A: np.ndarray, box_A: np.ndarray, equilibration_fs: float, n_samples: int,
               interval_fs: float, seed: int, where: str = "restrained") -> RestrainedSamples:
        """Restrain every centre of mass at its position in ``positions_A`` (one all-atom frame),
        draw fresh velocities, run ``equilibration_fs``, then take ``n_samples`` samples
        ``interval_fs`` apart."""
        box = np.asarray(box_A, dtype=np.float64)
        x0 = np.asarray(positions_A, dtype=np.float64)
        centres = self.map.positions(x0)  # of these very coordinates, as OpenMM's centroids are
        spread = np.linalg.norm(x0 - centres[self.molecule_index], axis=1).max()
        if spread > 0.25 * box.min():
            raise ValueError(f"{where}: an atom lies {spread:.1f} Å from its molecule's centre of mass: the "
                             "positions must keep every molecule whole (unwrapped), as the reference stage "
                             "writes them")
        set_centres(self.context, self.restraint, centres)
        engine.set_state(self.context, positions_A, box_A=box)
        if self.decomposition is None:
            self.decomposition = engine.decomposition_for(self.system, self.context, self.molecule_index,
                                                          ignore_group=RESTRAINT_GROUP)
        self.integrator.setRandomNumberSeed(int(seed))
        self.context.setVelocitiesToTemperature(self.temperature_K * u.kelvin, int(seed))
        every = max(1, int(round(interval_fs / self.timestep_fs)))
        engine.step(self.context, self.integrator, int(round(equilibration_fs / self.timestep_fs)), where)
        n = len(centres)
        forces, energies, offsets = np.empty((n_samples, n, 3)), np.empty((n_samples, n)), np.empty((n_samples, n, 3))
        for k in range(n_samples):
            engine.step(self.context, self.integrator, every, where)
            st = self.context.getState(getPositions=True, getForces=True, getEnergy=True, groups=_PHYSICAL_GROUPS)
            x = st.getPositions(asNumpy=True).value_in_unit(u.nanometer) * units.NM_TO_A
            f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * (
                units.KJ_TO_KCAL / units.NM_TO_A)
            e_total = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.KJ_TO_KCAL
            if not (np.isfinite(e_total) and np.all(np.isfinite(f))):
                raise SimulationError(f"{where}: energy {e_total} or forces not finite at sample {k}")
            u_mol = self.decomposition(x, box)
            if abs(u_mol.sum() - e_total) > 1e-4 * abs(e_total):
                raise SimulationError(f"{where}: per-molecule energies sum to {u_mol.sum():.6f} kcal/mol, but "
                                      f"OpenMM's physical energy is {e_total:.6f} at sample {k}")
            forces[k] = self.map.forces(f)
            energies[k] = u_mol
            offsets[k] = self.map.positions(x) - centres
        return RestrainedSamples(forces, energies, offsets, centres, box)
