"""The OpenMM boundary of the reference stage.

Everything that touches OpenMM objects or OpenMM's units lives here: building
the water box, choosing a platform, reading parameters and states. Values leave
this module in thermocg's units (``thermocg.units``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as u

from thermocg import units
from thermocg.errors import ConfigError, SimulationError
from thermocg.reference.decomposition import BondedTerms, EnergyDecomposition, NonbondedParameters
from thermocg.reference.water import WATER_MODELS, box_length_A

_NM = u.nanometer
_KJ = u.kilojoule_per_mole


def build_water_box(n_molecules: int, density_g_cm3: float, water_model: str, rng: np.random.Generator):
    """A cubic box of rigid water molecules at an exact density.

    Molecules sit on the sites of a simple cubic lattice (a random subset of
    the sites when ``n_molecules`` is not a cube) with random orientations; the
    stage minimises the energy before any dynamics.

    Returns
    -------
    topology : openmm.app.Topology
        With the periodic box set.
    positions_A : (3 n_molecules, 3) float, Å
    """
    model = WATER_MODELS[water_model]
    edge = box_length_A(n_molecules, density_g_cm3, model.molar_mass)
    n_side = int(np.ceil(n_molecules ** (1 / 3) - 1e-9))
    sites = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sites = sites[np.sort(rng.choice(len(sites), n_molecules, replace=False))]
    centres = (sites + 0.5) * edge / n_side

    half = np.deg2rad(model.angle_hoh_deg) / 2
    local = model.r_oh_A * np.array([[0, 0, 0], [np.sin(half), np.cos(half), 0], [-np.sin(half), np.cos(half), 0]])
    top = app.Topology()
    chain = top.addChain()
    positions = np.empty((3 * n_molecules, 3))
    for m in range(n_molecules):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        h1 = top.addAtom("H1", app.element.hydrogen, res)
        h2 = top.addAtom("H2", app.element.hydrogen, res)
        top.addBond(o, h1)
        top.addBond(o, h2)
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        positions[3 * m:3 * m + 3] = centres[m] + local @ rot.T
    top.setPeriodicBoxVectors(np.eye(3) * edge / units.NM_TO_A * _NM)
    return top, positions


def create_system(topology, water_model: str, cutoff_A: float, ewald_error_tolerance: float,
                  rigid: bool = True) -> mm.System:
    """The OpenMM System: PME, plain-truncated LJ with dispersion correction, rigid water."""
    ff = app.ForceField(WATER_MODELS[water_model].forcefield_file)
    return ff.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_A / units.NM_TO_A * _NM,
                           ewaldErrorTolerance=ewald_error_tolerance, rigidWater=rigid)


def molecule_index(topology) -> np.ndarray:
    """Molecule (residue) of each atom, shape (n_atoms,)."""
    return np.array([a.residue.index for a in topology.atoms()], dtype=np.int64)


def masses(system: mm.System) -> np.ndarray:
    """Atomic masses in amu, shape (n_atoms,)."""
    return np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])


def degrees_of_freedom(system: mm.System) -> int:
    """3N minus constraints minus 3 when the centre-of-mass motion is removed."""
    n = 3 * system.getNumParticles() - system.getNumConstraints()
    if any(isinstance(f, mm.CMMotionRemover) for f in system.getForces()):
        n -= 3
    return n


def _nonbonded_force(system: mm.System) -> mm.NonbondedForce:
    forces = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)]
    if len(forces) != 1:
        raise ConfigError(f"expected exactly one NonbondedForce in the system, found {len(forces)}")
    return forces[0]


def decomposition_for(system: mm.System, context: mm.Context, mol_index: np.ndarray) -> EnergyDecomposition:
    """An :class:`EnergyDecomposition` with the parameters OpenMM actually uses in ``context``.

    Refuses systems with forces it does not decompose (anything but
    NonbondedForce with PME/Ewald, HarmonicBondForce, HarmonicAngleForce and
    CMMotionRemover), so that the per-molecule sum can never silently miss a term.
    """
    nb = _nonbonded_force(system)
    if nb.getNonbondedMethod() not in (mm.NonbondedForce.PME, mm.NonbondedForce.Ewald):
        raise ConfigError("the energy decomposition needs a PME or Ewald NonbondedForce")
    if nb.getUseSwitchingFunction():
        raise ConfigError("the energy decomposition does not support a Lennard-Jones switching function")
    alpha_nm = nb.getPMEParametersInContext(context)[0]  # also filled in for Ewald
    n = system.getNumParticles()
    q, sig, eps = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        c, s, e = nb.getParticleParameters(i)
        q[i], sig[i], eps[i] = c.value_in_unit(u.elementary_charge), s.value_in_unit(_NM), e.value_in_unit(_KJ)
    m = nb.getNumExceptions()
    pairs, qq, es, ee = np.empty((m, 2), np.int64), np.empty(m), np.empty(m), np.empty(m)
    for k in range(m):
        i, j, c, s, e = nb.getExceptionParameters(k)
        pairs[k] = i, j
        qq[k], es[k], ee[k] = c.value_in_unit(u.elementary_charge**2), s.value_in_unit(_NM), e.value_in_unit(_KJ)
    params = NonbondedParameters(
        charges=q, sigma=sig * units.NM_TO_A, epsilon=eps * units.KJ_TO_KCAL, exceptions=pairs,
        exception_charge_prod=qq, exception_sigma=es * units.NM_TO_A, exception_epsilon=ee * units.KJ_TO_KCAL,
        cutoff_A=nb.getCutoffDistance().value_in_unit(_NM) * units.NM_TO_A,
        alpha_per_A=alpha_nm / units.NM_TO_A, dispersion_correction=nb.getUseDispersionCorrection())
    return EnergyDecomposition(params, mol_index, _bonded_terms(system))


def _bonded_terms(system: mm.System) -> BondedTerms:
    bonds, r0, kb, angles, t0, ka = [], [], [], [], [], []
    for f in system.getForces():
        if isinstance(f, mm.HarmonicBondForce):
            for k in range(f.getNumBonds()):
                i, j, length, kk = f.getBondParameters(k)
                bonds.append((i, j))
                r0.append(length.value_in_unit(_NM) * units.NM_TO_A)
                kb.append(kk.value_in_unit(_KJ / _NM**2) * units.KJ_TO_KCAL / units.NM_TO_A**2)
        elif isinstance(f, mm.HarmonicAngleForce):
            for k in range(f.getNumAngles()):
                i, j, l, theta, kk = f.getAngleParameters(k)
                angles.append((i, j, l))
                t0.append(theta.value_in_unit(u.radian))
                ka.append(kk.value_in_unit(_KJ / u.radian**2) * units.KJ_TO_KCAL)
        elif not isinstance(f, (mm.NonbondedForce, mm.CMMotionRemover)):
            raise ConfigError(f"the energy decomposition does not know {type(f).__name__}")
    return BondedTerms(np.array(bonds, np.int64).reshape(-1, 2), np.array(r0), np.array(kb),
                       np.array(angles, np.int64).reshape(-1, 3), np.array(t0), np.array(ka))


# -- platforms ---------------------------------------------------------------

def platform_names() -> list[str]:
    return [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]


def choose_platform(device: str, threads: int | None = None) -> tuple[mm.Platform, dict[str, str]]:
    """OpenMM platform and properties for ``device`` = ``auto`` | ``cpu`` | ``cuda``.

    ``auto`` takes CUDA when OpenMM has a working CUDA platform (``pip install
    openmm-cuda-12``), else the CPU platform with ``threads`` threads (all cores
    by default). CUDA runs in mixed precision (double accumulation of energies).
    """
    names = platform_names()
    if device == "cuda" or (device == "auto" and "CUDA" in names and _cuda_works()):
        if "CUDA" not in names:
            raise ConfigError(f"device = 'cuda' but OpenMM has no CUDA platform (it has {names}); "
                              "install openmm-cuda-12 or use device = 'cpu'")
        return mm.Platform.getPlatformByName("CUDA"), {"Precision": "mixed"}
    props = {"Threads": str(threads or os.cpu_count() or 1)}
    return mm.Platform.getPlatformByName("CPU"), props


def _cuda_works() -> bool:
    try:
        s = mm.System()
        s.addParticle(1.0)
        mm.Context(s, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CUDA"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"; auto falls back to CPU
        return False


# -- states ------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """One state of the simulation in thermocg units.

    positions (n, 3) Å, unwrapped (molecules whole, continuous in time);
    velocities (n, 3) Å/ps; forces (n, 3) kcal/(mol Å); box (3,) Å;
    potential and kinetic energy kcal/mol; step and time (ps).
    """

    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray | None
    box: np.ndarray
    potential_energy: float
    kinetic_energy: float
    step: int
    time_ps: float


def snapshot(context: mm.Context, forces: bool = True) -> Snapshot:
    """Read the context's state, converting to thermocg units."""
    st = context.getState(getPositions=True, getVelocities=True, getForces=forces, getEnergy=True)
    box = np.diag(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(_NM)) * units.NM_TO_A
    return Snapshot(
        positions=st.getPositions(asNumpy=True).value_in_unit(_NM) * units.NM_TO_A,
        velocities=st.getVelocities(asNumpy=True).value_in_unit(_NM / u.picosecond) * units.NM_TO_A,
        forces=(st.getForces(asNumpy=True).value_in_unit(_KJ / _NM) * (units.KJ_TO_KCAL / units.NM_TO_A)
                if forces else None),
        box=box,
        potential_energy=st.getPotentialEnergy().value_in_unit(_KJ) * units.KJ_TO_KCAL,
        kinetic_energy=st.getKineticEnergy().value_in_unit(_KJ) * units.KJ_TO_KCAL,
        step=context.getStepCount(),
        time_ps=st.getTime().value_in_unit(u.picosecond),
    )


def set_state(context: mm.Context, positions_A: np.ndarray, velocities_A_ps: np.ndarray | None = None,
              box_A: np.ndarray | None = None) -> None:
    """Set positions (and velocities, box) given in thermocg units."""
    if box_A is not None:
        b = np.diag(np.asarray(box_A, float)) / units.NM_TO_A
        context.setPeriodicBoxVectors(*(mm.Vec3(*row) for row in b))
    context.setPositions(np.asarray(positions_A) / units.NM_TO_A)
    if velocities_A_ps is not None:
        context.setVelocities(np.asarray(velocities_A_ps) / units.NM_TO_A)


def step(context: mm.Context, integrator: mm.Integrator, n: int, where: str) -> None:
    """Advance ``n`` steps; an OpenMM failure (NaN coordinates) becomes a SimulationError."""
    try:
        integrator.step(n)
    except mm.OpenMMException as err:
        raise SimulationError(f"{where}: OpenMM failed near step {context.getStepCount()}: {err}") from err
