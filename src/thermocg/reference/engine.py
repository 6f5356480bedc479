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


def build_water_box(n_molecules: int, density_g_cm3: float, water_model: str):
    """A cubic box of ``n_molecules`` rigid water molecules at an exact density.

    OpenMM's ``Modeller.addSolvent`` cuts the molecules from its pre-equilibrated
    liquid water box; their centres of mass are then scaled to the box edge of
    the requested density (molecules stay intact). A liquid start matters: from
    a lattice, melting absorbs heat and the first ~10 ps run several per cent
    cold. The stage minimises the energy before any dynamics.

    Returns
    -------
    topology : openmm.app.Topology
        With the periodic box set.
    positions_A : (3 n_molecules, 3) float, Å
    """
    model = WATER_MODELS[water_model]
    edge = box_length_A(n_molecules, density_g_cm3, model.molar_mass)
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(app.ForceField(model.forcefield_file), model=water_model, numAdded=n_molecules,
                        neutralize=False)
    top = modeller.topology
    x = np.array(modeller.getPositions().value_in_unit(_NM)) * units.NM_TO_A
    old_edge = top.getPeriodicBoxVectors()[0][0].value_in_unit(_NM) * units.NM_TO_A
    mol = molecule_index(top)
    m = np.array([a.element.mass.value_in_unit(u.dalton) for a in top.atoms()])
    com = np.stack([np.bincount(mol, m * x[:, k]) for k in range(3)], 1) / np.bincount(mol, m)[:, None]
    com_new = (com - old_edge * np.floor(com / old_edge)) * (edge / old_edge)
    x = x - com[mol] + com_new[mol]
    top.setPeriodicBoxVectors(np.eye(3) * edge / units.NM_TO_A * _NM)
    return top, x


def create_system(topology, water_model: str, cutoff_A: float, ewald_error_tolerance: float,
                  rigid: bool = True) -> mm.System:
    """The OpenMM System: PME, plain-truncated LJ with dispersion correction, rigid water."""
    ff = app.ForceField(WATER_MODELS[water_model].forcefield_file)
    return ff.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_A / units.NM_TO_A * _NM,
                           ewaldErrorTolerance=ewald_error_tolerance, rigidWater=rigid)


#: OpenMM's createSystem constraints by their config names
CONSTRAINTS = {"none": None, "hbonds": app.HBonds, "allbonds": app.AllBonds, "hangles": app.HAngles}


def load_pdb_system(pdb_path, forcefield_files, cutoff_A: float, ewald_error_tolerance: float,
                    constraints: str = "hbonds", rigid_water: bool = True):
    """A user's system: the topology, positions and periodic box of a PDB file and OpenMM's
    ``ForceField(*forcefield_files)`` (built-in names such as ``"amber14/tip4pew.xml"`` or
    paths), with PME, the given cutoff and plain-truncated Lennard-Jones with the dispersion
    correction, as the water box gets. Virtual sites the force field defines (TIP4P's M site)
    are added to the topology first (``Modeller.addExtraParticles``).

    Returns ``(topology, positions_A, box_A, system)``; the box must be orthorhombic.
    """
    from pathlib import Path

    pdb_path = Path(pdb_path)
    try:
        pdb = app.PDBFile(str(pdb_path))
    except Exception as err:  # OpenMM's PDB reader raises ValueError, KeyError, ... on bad files
        raise ConfigError(f"{pdb_path}: cannot be read as a PDB file ({type(err).__name__}: {err})") from err
    vectors = pdb.topology.getPeriodicBoxVectors()
    if vectors is None:
        raise ConfigError(f"{pdb_path}: no periodic box (a CRYST1 record); the reference needs one")
    cell = np.array(vectors.value_in_unit(_NM)) * units.NM_TO_A
    if np.any(np.abs(cell - np.diag(np.diag(cell))) > 1e-6):
        raise ConfigError(f"{pdb_path}: the box {cell.tolist()} Å is not orthorhombic; thermocg's energy "
                          "decomposition and CG engine need an orthorhombic box")
    try:
        ff = app.ForceField(*[str(f) for f in forcefield_files])
        modeller = app.Modeller(pdb.topology, pdb.positions)
        modeller.addExtraParticles(ff)
        system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                 nonbondedCutoff=cutoff_A / units.NM_TO_A * _NM,
                                 ewaldErrorTolerance=ewald_error_tolerance, constraints=CONSTRAINTS[constraints],
                                 rigidWater=rigid_water)
    except (ValueError, KeyError, OSError) as err:
        raise ConfigError(f"{pdb_path} with force field {list(map(str, forcefield_files))}: OpenMM cannot build "
                          f"the system ({err})") from err
    for f in system.getForces():
        if isinstance(f, mm.NonbondedForce):
            f.setUseDispersionCorrection(True)
            f.setUseSwitchingFunction(False)
    x = np.array(modeller.getPositions().value_in_unit(_NM)) * units.NM_TO_A
    return modeller.topology, x, np.diag(cell).copy(), system


def minimize(system: mm.System, positions_A: np.ndarray, box_A: np.ndarray, tolerance: float = 10.0) -> np.ndarray:
    """Local energy minimisation (L-BFGS), returns positions in Å.

    Runs on one CPU thread on purpose: with several threads OpenMM's energy sums
    are not bitwise reproducible, L-BFGS's line search follows them, and the
    minimised structure (hence the whole run) would differ between runs.
    """
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"),
                         {"Threads": "1", "DeterministicForces": "true"})
    set_state(context, positions_A, box_A=box_A)
    mm.LocalEnergyMinimizer.minimize(context, tolerance=tolerance)
    return snapshot(context, forces=False).positions


def molecule_index(topology) -> np.ndarray:
    """Molecule (residue) of each atom, shape (n_atoms,)."""
    return np.array([a.residue.index for a in topology.atoms()], dtype=np.int64)


def molecule_types(topology) -> tuple[np.ndarray, tuple[str, ...]]:
    """The bead type of each molecule (residue), shape (n_molecules,), and the type names: one
    type per residue name, numbered in order of first appearance (a mixture's species)."""
    names = [r.name for r in topology.residues()]
    kinds = tuple(dict.fromkeys(names))
    return np.array([kinds.index(n) for n in names], dtype=np.int64), kinds


def masses(system: mm.System) -> np.ndarray:
    """Atomic masses in amu, shape (n_atoms,)."""
    return np.array([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])


def degrees_of_freedom(system: mm.System) -> int:
    """3N of the particles with mass (virtual sites have none) minus constraints, minus 3 when
    the centre-of-mass motion is removed."""
    massive = sum(system.getParticleMass(i).value_in_unit(u.dalton) > 0 for i in range(system.getNumParticles()))
    n = 3 * massive - system.getNumConstraints()
    if any(isinstance(f, mm.CMMotionRemover) for f in system.getForces()):
        n -= 3
    return n


def _nonbonded_force(system: mm.System) -> mm.NonbondedForce:
    forces = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)]
    if len(forces) != 1:
        raise ConfigError(f"expected exactly one NonbondedForce in the system, found {len(forces)}")
    return forces[0]


def decomposition_for(system: mm.System, context: mm.Context, mol_index: np.ndarray,
                      ignore_group: int | None = None) -> EnergyDecomposition:
    """An :class:`EnergyDecomposition` with the parameters OpenMM actually uses in ``context``.

    Refuses systems with forces it does not decompose (anything but
    NonbondedForce with PME/Ewald, HarmonicBondForce, HarmonicAngleForce,
    PeriodicTorsionForce and CMMotionRemover; constraints carry no energy, and a virtual
    site's charge and energy belong to its residue), so that the per-molecule sum can
    never silently miss a term.
    ``ignore_group``: a force group that is not part of the physical energy (restraints,
    which the caller leaves out of the energies it compares with).
    """
    nb = _nonbonded_force(system)
    if nb.getNonbondedMethod() not in (mm.NonbondedForce.PME, mm.NonbondedForce.Ewald):
        raise ConfigError("the energy decomposition needs a PME or Ewald NonbondedForce")
    if nb.getUseSwitchingFunction():
        raise ConfigError("the energy decomposition does not support a Lennard-Jones switching function")
    # OpenMM sets up PME lazily; before the first force evaluation (e.g. right after
    # loadCheckpoint) getPMEParametersInContext fails with std::bad_cast.
    context.getState(getEnergy=True)
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
    return EnergyDecomposition(params, mol_index, _bonded_terms(system, ignore_group))


def _bonded_terms(system: mm.System, ignore_group: int | None = None) -> BondedTerms:
    bonds, r0, kb, angles, t0, ka = [], [], [], [], [], []
    tors, tn, tp, tk = [], [], [], []
    for f in system.getForces():
        if ignore_group is not None and f.getForceGroup() == ignore_group:
            continue
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
        elif isinstance(f, mm.PeriodicTorsionForce):
            for k in range(f.getNumTorsions()):
                i, j, l, m, n, phase, kk = f.getTorsionParameters(k)
                tors.append((i, j, l, m))
                tn.append(n)
                tp.append(phase.value_in_unit(u.radian))
                tk.append(kk.value_in_unit(_KJ) * units.KJ_TO_KCAL)
        elif not isinstance(f, (mm.NonbondedForce, mm.CMMotionRemover)):
            raise ConfigError(f"the energy decomposition does not know {type(f).__name__} (it knows "
                              "NonbondedForce with PME or Ewald, HarmonicBondForce, HarmonicAngleForce, "
                              "PeriodicTorsionForce, constraints and virtual sites)")
    return BondedTerms(np.array(bonds, np.int64).reshape(-1, 2), np.array(r0), np.array(kb),
                       np.array(angles, np.int64).reshape(-1, 3), np.array(t0), np.array(ka),
                       np.array(tors, np.int64).reshape(-1, 4), np.array(tn, np.int64), np.array(tp), np.array(tk))


# -- platforms ---------------------------------------------------------------

def platform_names() -> list[str]:
    return [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]


def choose_platform(device: str, threads: int | None = None) -> tuple[mm.Platform, dict[str, str]]:
    """OpenMM platform and properties for ``device`` = ``auto`` | ``cpu`` | ``cuda``.

    ``auto`` takes CUDA when OpenMM has a working CUDA platform (``pip install
    openmm-cuda-12``), else the CPU platform with ``threads`` threads (by default the
    threads of the Dask worker running this, else all cores). CUDA runs in mixed precision
    (double accumulation of energies).
    """
    from thermocg.cluster import worker_threads

    names = platform_names()
    if device == "cuda" or (device == "auto" and "CUDA" in names and _cuda_works()):
        if "CUDA" not in names:
            raise ConfigError(f"device = 'cuda' but OpenMM has no CUDA platform (it has {names}); "
                              "install openmm-cuda-12 or use device = 'cpu'")
        return mm.Platform.getPlatformByName("CUDA"), {"Precision": "mixed"}
    n = threads or worker_threads() or os.cpu_count() or 1
    # Bitwise-reproducible trajectories (the same config and seed give the same frames) need
    # both of these, and one thread. The PME reciprocal kernel of OpenMM's CPU platform does
    # not take the "Threads" property: it starts one thread per core (or OPENMM_CPU_THREADS,
    # read once per process, at its first PME context) and, unless DeterministicForces is
    # set, spreads the charges onto the grids in whatever order its threads take the atoms.
    # The last bits of the PME forces then differ from run to run and the trajectories
    # diverge chaotically (7-10 Å within 15 ps on 216 waters). Measured (OpenMM 8.6.1, two
    # processes on 2 cores, 4 ps of SPC/E): Threads=1 alone, 0.64 nm apart; with
    # DeterministicForces, or with OPENMM_CPU_THREADS=1, identical. With Threads=2 the
    # nonbonded sums still vary (DeterministicForces or not): several threads are not
    # reproducible. The executor's workers set OPENMM_CPU_THREADS to their threads
    # (thermocg.workers, thermocg.cluster), which also stops a worker of one thread from running
    # PME on every core; it is not set here, where the stage's own process only asks which
    # platform there is (a Dask LocalCluster's workers would inherit it).
    props = {"Threads": str(n), "DeterministicForces": "true"}
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


def virtual_sites(system: mm.System) -> np.ndarray:
    """Indices of the system's virtual sites (massless particles placed from other atoms)."""
    return np.array([i for i in range(system.getNumParticles()) if system.isVirtualSite(i)], dtype=np.int64)


def snapshot(context: mm.Context, forces: bool = True) -> Snapshot:
    """Read the context's state, converting to thermocg units.

    A virtual site's force is set to zero: OpenMM reports the force on the site *and* adds it
    to the atoms the site is built from, so it would count twice in any sum over a molecule
    (the force map). The atoms' forces are the physical ones."""
    st = context.getState(getPositions=True, getVelocities=True, getForces=forces, getEnergy=True)
    box = np.diag(st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(_NM)) * units.NM_TO_A
    f = None
    if forces:
        f = st.getForces(asNumpy=True).value_in_unit(_KJ / _NM) * (units.KJ_TO_KCAL / units.NM_TO_A)
        f[virtual_sites(context.getSystem())] = 0.0
    return Snapshot(
        positions=st.getPositions(asNumpy=True).value_in_unit(_NM) * units.NM_TO_A,
        velocities=st.getVelocities(asNumpy=True).value_in_unit(_NM / u.picosecond) * units.NM_TO_A,
        forces=f,
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
