"""``[reference] system = "pdb"``: any liquid from a PDB file and OpenMM force-field XML files
(issue 17). The energy decomposition must add up to OpenMM's total for every force a
small-molecule force field uses (PME with exceptions, harmonic bonds and angles, periodic
torsions, constraints, virtual sites), and the whole pipeline must run on united-atom
methanol, the second built-in example."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.app as app
import pytest

from thermocg.config import config_from_dict
from thermocg.errors import ConfigError
from thermocg.reference import engine

# slow: PDB systems, virtual sites and mixtures through OpenMM: ~20 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
METHANOL = EXAMPLES / "methanol"

#: TraPPE-UA n-butane (Martin and Siepmann, J. Phys. Chem. B 102, 2569 (1998)): CH3/CH2 sites,
#: fixed 1.54 Å bonds, a 114° angle (k/kB 62500 K/rad²) and the torsion
#: c1 (1 + cos phi) + c2 (1 - cos 2 phi) + c3 (1 + cos 3 phi), c/kB = 355.03, -68.19, 791.32 K,
#: written as three periodic terms (the c2 term with phase pi). No charges: PME with zeros.
KB = 0.0083144626  # kJ/(mol K)
BUTANE_XML = f"""<ForceField>
 <AtomTypes>
  <Type name="CH3" class="CH3" element="C" mass="15.035"/>
  <Type name="CH2" class="CH2" element="C" mass="14.027"/>
 </AtomTypes>
 <Residues>
  <Residue name="BUT">
   <Atom name="C1" type="CH3"/><Atom name="C2" type="CH2"/><Atom name="C3" type="CH2"/><Atom name="C4" type="CH3"/>
   <Bond atomName1="C1" atomName2="C2"/><Bond atomName1="C2" atomName2="C3"/><Bond atomName1="C3" atomName2="C4"/>
  </Residue>
 </Residues>
 <HarmonicBondForce>
  <Bond class1="CH3" class2="CH2" length="0.154" k="250000"/><Bond class1="CH2" class2="CH2" length="0.154" k="250000"/>
 </HarmonicBondForce>
 <HarmonicAngleForce>
  <Angle class1="CH3" class2="CH2" class3="CH2" angle="{math.radians(114.0)}" k="{62500 * KB}"/>
 </HarmonicAngleForce>
 <PeriodicTorsionForce>
  <Proper class1="CH3" class2="CH2" class3="CH2" class4="CH3" periodicity1="1" phase1="0" k1="{355.03 * KB}"
          periodicity2="2" phase2="{math.pi}" k2="{-68.19 * KB}" periodicity3="3" phase3="0" k3="{791.32 * KB}"/>
 </PeriodicTorsionForce>
 <NonbondedForce coulomb14scale="0.5" lj14scale="0.0">
  <Atom type="CH3" charge="0" sigma="0.375" epsilon="{98 * KB}"/>
  <Atom type="CH2" charge="0" sigma="0.395" epsilon="{46 * KB}"/>
 </NonbondedForce>
</ForceField>
"""


def _lattice_pdb(path, molecule, residue, names, n, edge, bonds=(), seed=3):
    """n copies of ``molecule`` (atoms, Å; ``bonds`` between them, 0-based) on a cubic lattice,
    randomly rotated, as a PDB with CONECT records."""
    rng = np.random.default_rng(seed)
    side = math.ceil(n ** (1 / 3))
    lines = [f"CRYST1{edge:9.3f}{edge:9.3f}{edge:9.3f}  90.00  90.00  90.00 P 1           1"]
    atom = 0
    for m, site in enumerate([(i, j, k) for i in range(side) for j in range(side) for k in range(side)][:n]):
        rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        for name, x in zip(names, (molecule - molecule.mean(0)) @ rot.T + (np.array(site) + 0.5) * edge / side):
            atom += 1
            lines.append(f"HETATM{atom:5d}  {name:<3s} {residue} A{m + 1:4d}    {x[0]:8.3f}{x[1]:8.3f}{x[2]:8.3f}"
                         f"  1.00  0.00          {name[0]:>2s}")
    size = len(molecule)
    for m in range(n):
        for i, j in bonds:
            lines.append(f"CONECT{m * size + i + 1:5d}{m * size + j + 1:5d}")
            lines.append(f"CONECT{m * size + j + 1:5d}{m * size + i + 1:5d}")
    Path(path).write_text("\n".join(lines + ["END"]) + "\n")
    return path


def _sum_matches_openmm(topology, positions, box, system, steps=50, temperature=300.0):
    """After minimising and some Langevin MD: sum_J u_J against OpenMM's total, relative."""
    x = engine.minimize(system, positions, box)
    integrator = mm.LangevinMiddleIntegrator(temperature, 1.0, 0.001)
    integrator.setRandomNumberSeed(5)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"))
    engine.set_state(context, x, box_A=box)
    context.setVelocitiesToTemperature(temperature, 5)
    integrator.step(steps)
    s = engine.snapshot(context)
    u = engine.decomposition_for(system, context, engine.molecule_index(topology))(s.positions, s.box)
    return abs(u.sum() - s.potential_energy) / abs(s.potential_energy), s, u


def test_torsions_add_up(tmp_path):
    """TraPPE-UA butane: periodic torsions (one with a negative force constant) decomposed too;
    the torsion term alone equals OpenMM's PeriodicTorsionForce energy."""
    ff = tmp_path / "butane.xml"
    ff.write_text(BUTANE_XML)
    chain = np.array([[0.0, 0.0, 0.0], [1.54, 0.0, 0.0], [2.17, 1.40, 0.0], [3.71, 1.40, 0.0]])  # ~114°
    pdb = _lattice_pdb(tmp_path / "butane.pdb", chain, "BUT", ("C1", "C2", "C3", "C4"), 64, 20.5,
                       bonds=((0, 1), (1, 2), (2, 3)))
    top, x, box, system = engine.load_pdb_system(pdb, [ff], 8.0, 1e-5, "allbonds")
    for i, f in enumerate(system.getForces()):
        f.setForceGroup(i)
    rel, s, u = _sum_matches_openmm(top, x, box, system)
    assert rel < 1e-5
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
    engine.set_state(context, s.positions, box_A=box)
    group = next(i for i, f in enumerate(system.getForces()) if isinstance(f, mm.PeriodicTorsionForce))
    want = context.getState(getEnergy=True, groups={group}).getPotentialEnergy().value_in_unit(
        mm.unit.kilocalorie_per_mole)
    dec = engine.decomposition_for(system, context, engine.molecule_index(top))
    assert dec.components(s.positions, box)["bonded"].sum() == pytest.approx(want + _angle_energy(system, context),
                                                                               rel=1e-9)


def test_the_dihedral_has_openmm_s_sign():
    """A torsion with a phase other than 0 or pi tells the sign of the dihedral: the energy of
    k (1 + cos(n phi - phase)) at random atoms equals OpenMM's (the butane above has phases 0, pi
    only, where either sign gives the same energy)."""
    from thermocg.reference.decomposition import dihedral

    rng = np.random.default_rng(1)
    for n, phase in ((1, 0.7), (2, -1.1), (3, 2.5)):
        x = rng.random((4, 3)) * 3.0
        system = mm.System()
        for _ in range(4):
            system.addParticle(12.0)
        force = mm.PeriodicTorsionForce()
        force.addTorsion(0, 1, 2, 3, n, phase, 1.0)
        system.addForce(force)
        context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
        context.setPositions(x / 10.0)
        want = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilojoule_per_mole)
        phi = dihedral(x[0], x[1], x[2], x[3], np.full(3, 100.0))
        assert 1.0 + np.cos(n * phi - phase) == pytest.approx(want, rel=1e-9)


def _angle_energy(system, context):
    group = next(i for i, f in enumerate(system.getForces()) if isinstance(f, mm.HarmonicAngleForce))
    return context.getState(getEnergy=True, groups={group}).getPotentialEnergy().value_in_unit(
        mm.unit.kilocalorie_per_mole)


def test_virtual_sites_belong_to_their_molecule(tmp_path):
    """TIP4P-Ew (OpenMM's built-in tip4pew.xml): the M site is added by the force field, carries
    the charge, has no mass and no degrees of freedom, and its energy goes to its molecule."""
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(app.ForceField("tip3p.xml"), model="tip3p", numAdded=64, neutralize=False)
    path = tmp_path / "water.pdb"
    with open(path, "w") as fh:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, fh)
    top, x, box, system = engine.load_pdb_system(path, ["tip4pew.xml"], 5.5, 1e-5)
    assert system.getNumParticles() == 256 and sum(system.isVirtualSite(i) for i in range(256)) == 64
    assert engine.degrees_of_freedom(system) == 3 * 192 - 3 * 64 - 3  # rigid water: 3 constraints each
    rel, s, u = _sum_matches_openmm(top, x, box, system)
    assert rel < 1e-5 and len(u) == 64
    mol = engine.molecule_index(top)
    sites = [i for i in range(256) if system.isVirtualSite(i)]
    assert all(mol[i] == mol[system.getVirtualSite(i).getParticle(0)] for i in sites)
    # OpenMM reports a site's force and also adds it to its atoms: the snapshot keeps the atoms'
    # only, so the molecule's force is the sum over its atoms, as a rigid translation says
    assert np.all(s.forces[sites] == 0.0)
    np.testing.assert_allclose(s.forces.sum(axis=0), 0.0, atol=0.05)  # Newton's third law (PME's error)
    atoms = np.flatnonzero(mol == 0)
    # forces and energies in double precision (the Reference platform), so that the finite
    # difference is limited by its own step only
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    engine.set_state(context, s.positions, box_A=box)
    forces = engine.snapshot(context).forces

    def energy(shift):
        y = s.positions.copy()
        y[atoms] += shift
        engine.set_state(context, y, box_A=box)
        context.computeVirtualSites()
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(mm.unit.kilocalorie_per_mole)

    h = 1e-3
    fd = [-(energy(h * e) - energy(-h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(forces[atoms].sum(axis=0), fd, atol=0.02)  # the site's own force: ~20


def test_a_force_it_cannot_decompose_is_named(tmp_path):
    top, x, box, system = engine.load_pdb_system(METHANOL / "methanol-64.pdb",
                                                 [METHANOL / "trappe-ua-methanol.xml"], 7.0, 1e-5, "allbonds")
    # TraPPE-UA methanol: two fixed bonds per molecule, the angle bends
    assert system.getNumConstraints() == 128 and engine.degrees_of_freedom(system) == 3 * 192 - 128 - 3
    system.addForce(mm.RBTorsionForce())
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
    engine.set_state(context, x, box_A=box)
    with pytest.raises(ConfigError, match="does not know RBTorsionForce"):
        engine.decomposition_for(system, context, engine.molecule_index(top))


def test_config_of_a_pdb_system():
    with pytest.raises(ConfigError, match='system = "pdb" needs pdb'):
        config_from_dict({"reference": {"system": "pdb", "pdb": "x.pdb"}})
    c = config_from_dict({"reference": {"system": "pdb", "pdb": "x.pdb", "forcefield": ["a.xml"], "cutoff_A": 12.0}})
    assert not c.reference.builtin_water  # no box from n_molecules: checked when the PDB is read
    with pytest.raises(ConfigError, match="reference.cutoff_A = 9 Å must be below half the box edge"):
        from thermocg.reference.stage import _pdb_system
        raw = c.model_dump(exclude={"source"}, mode="json")
        raw["reference"].update(pdb=str(METHANOL / "methanol-64.pdb"),
                                forcefield=[str(METHANOL / "trappe-ua-methanol.xml")], cutoff_A=9.0)
        _pdb_system(config_from_dict(raw))


#: what every test of an example config shrinks: two temperatures, short runs, one epoch
SMALLER = {"temperatures_K = [260.0, 300.0, 340.0]": "temperatures_K = [300.0, 340.0]",
           "equilibration_ps = 10.0": "equilibration_ps = 1.0", "n_frames = 20": "n_frames = 10",
           "frame_interval_ps = 0.5": "frame_interval_ps = 0.2", 'variants = ["fm", "em", "trf2"]':
           'variants = ["fm", "trf2"]', "max_epochs = 5": "max_epochs = 1", "test_frames = 4": "test_frames = 2",
           "length_ps = 4.0": "length_ps = 1.0", "length_ps = 2.0": "length_ps = 0.5"}


def _example_config(tmp_path, example: str, changes: dict):
    """examples/<example>.toml written to tmp_path with ``changes`` (each must occur) and read."""
    from thermocg.config import load_config

    text = (EXAMPLES / f"{example}.toml").read_text()
    for old, new in {f'directory = "../runs/{example}"': f'directory = "{tmp_path / "run"}"', **changes}.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{example}.toml"
    path.write_text(text)
    return load_config(path)


def _methanol_config(tmp_path, **replace):
    """examples/methanol-quick.toml on the 64-molecule box, in tmp_path, smaller."""
    return _example_config(tmp_path, "methanol-quick", {
        "methanol/methanol-128.pdb": str(METHANOL / "methanol-64.pdb"),
        '"methanol/trappe-ua-methanol.xml"': f'"{METHANOL / "trappe-ua-methanol.xml"}"',
        "cutoff_A = 9.0\newald": "cutoff_A = 7.5\newald", "baseline_cutoff_A = 9.0": "baseline_cutoff_A = 7.5",
        "rdf_r_max_A = 10.0": "rdf_r_max_A = 8.0", **SMALLER, **replace})


def _mixture_config(tmp_path, **replace):
    """examples/methanol-water-quick.toml in tmp_path, smaller."""
    return _example_config(tmp_path, "methanol-water-quick", {'"methanol/': f'"{METHANOL}/', **SMALLER, **replace})


def test_mixture_reference_and_targets(tmp_path):
    """48 TraPPE-UA methanols and 48 SPC/E waters: the reference stage checks sum u_J against
    OpenMM's total in every frame (and records the worst), one bead per residue at its centre of
    mass, typed by residue name, whose mapped forces obey Newton's third law; the targets carry
    the types and their pair-spline baseline has a function per type pair."""
    from thermocg import pipeline

    config = _mixture_config(tmp_path, **{"temperatures_K = [260.0, 300.0, 340.0]": "temperatures_K = [300.0]",
                                          "n_frames = 20": "n_frames = 6",
                                          "[reference.nve]\nn_segments = 1": "[reference.nve]\nn_segments = 0"})
    pipeline.run(config, names=["reference", "targets"], show_progress=False)
    manifest = pipeline.stage("reference").stage_dir(config).read_manifest()
    assert 0 < manifest["summary"]["T300K"]["nvt"]["max_decomposition_rel_error"] < 1e-5
    frames = pipeline.read(config, "reference").frames(300.0)
    cg = pipeline.read(config, "reference").cg_frames(300.0)
    assert cg.positions.shape[1:] == (96, 3) and cg.bead_types == ("MOH", "HOH")  # in order of first appearance
    residues = [ln[17:20] for ln in (METHANOL / "methanol-water-96.pdb").read_text().splitlines()
                if ln.startswith("HETATM")][::3]
    assert [cg.bead_types[k] for k in cg.bead_type] == residues
    np.testing.assert_array_equal(np.bincount(cg.bead_type), [48, 48])
    water = np.flatnonzero(cg.bead_type == 1)
    np.testing.assert_allclose(cg.bead_masses[water], 15.99943 + 2 * 1.007947)  # spce-water.xml's masses
    np.testing.assert_allclose(cg.bead_masses[cg.bead_type == 0], 15.035 + 15.999 + 1.008)
    np.testing.assert_allclose(cg.forces.sum(axis=1), 0.0, atol=0.05)
    com = np.stack([np.bincount(frames.molecule_index, frames.masses * frames.positions[0][:, k]) for k in range(3)],
                   axis=1) / np.bincount(frames.molecule_index, frames.masses)[:, None]
    np.testing.assert_allclose(cg.positions[0], com, atol=1e-9)  # molecules are whole in the frames
    targets = pipeline.read(config, "targets").frames(300.0)
    np.testing.assert_array_equal(targets.bead_type, cg.bead_type)
    assert targets.bead_types == ("MOH", "HOH")
    assert np.all(np.isfinite(targets.targets["t1"])) and np.abs(targets.targets["t1"]).max() > 0
    assert len(targets.attrs["force_baseline_pair_function"]) == 3 * config.targets.baseline_n_basis


@pytest.mark.slow
def test_methanol_through_the_whole_pipeline(tmp_path):
    """64 TraPPE-UA methanols at two temperatures: reference (the decomposition checked in every
    frame), targets, fm and trf2, CG MD, evaluation and the report, as `thermocg run` runs them.
    One bead per residue at its centre of mass; the mapped forces obey Newton's third law."""
    from thermocg import pipeline

    config = _methanol_config(tmp_path)
    pipeline.run(config, show_progress=False)
    reference = pipeline.read(config, "reference")
    for t in config.reference.temperatures_K:
        cg = reference.cg_frames(t)
        assert cg.positions.shape[1] == 64
        np.testing.assert_allclose(cg.forces.sum(axis=1), 0.0, atol=0.05)
    manifest = pipeline.stage("reference").stage_dir(config).read_manifest()
    assert all(s["nvt"]["max_decomposition_rel_error"] < 1e-5 for s in manifest["summary"].values())
    results = pipeline.read(config, "evaluate")
    entry = results.by_temperature[340.0]
    assert np.isfinite(entry.reference.D_A2_per_ps.value) and entry.reference.D_A2_per_ps.value > 0
    simulated = {name: m for name, m in entry.models.items() if m.rdf_iae is not None}
    assert {"fm", "trf2"} <= set(simulated) and all(np.isfinite(m.rdf_iae.value) for m in simulated.values())
    assert (config.run_dir / "report" / "report.html").exists()


@pytest.mark.slow
def test_a_mixture_through_the_whole_pipeline(tmp_path):
    """The methanol-water mixture at two temperatures through every stage: models of two bead
    types (their species; em on per-molecule energies), CG MD of the typed beads, the evaluation
    and the report."""
    from thermocg import load_model, pipeline

    config = _mixture_config(tmp_path, **{'variants = ["fm", "em", "trf2"]':
                                          'variants = ["fm", "em", "trf2"]\nem_energy = "per-molecule"'})
    pipeline.run(config, show_progress=False)
    trained = pipeline.read(config, "train")
    # em fitted the per-molecule energies starting from each type's mean (set_type_offsets)
    em = load_model(trained.path("em")).model
    assert em.settings.n_types == 2
    model = load_model(trained.path("trf2"))
    assert model.bead_types == ("MOH", "HOH") and model.model.settings.n_types == 2
    cg = pipeline.read(config, "reference").cg_frames(340.0)
    with pytest.raises(ValueError, match="pass each bead's type"):
        model.forces(cg.positions[0], cg.box[0], 340.0)
    swapped = model.forces(cg.positions[0], cg.box[0], 340.0, 1 - cg.bead_type)
    assert np.abs(swapped - model.forces(cg.positions[0], cg.box[0], 340.0, cg.bead_type)).max() > 1e-3
    runs = pipeline.read(config, "simulate")
    import MDAnalysis as mda
    u = mda.Universe(str(runs.directory / "trf2" / "beads.pdb"))
    assert sorted(set(u.residues.resnames)) == ["HOH", "MOH"] and len(u.select_atoms("resname HOH")) == 48
    results = pipeline.read(config, "evaluate")
    simulated = {n: m for n, m in results.by_temperature[340.0].models.items() if m.rdf_iae is not None}
    assert {"fm", "trf2"} <= set(simulated) and all(np.isfinite(m.rdf_iae.value) for m in simulated.values())
    for m in simulated.values():  # partial RDFs and D per bead type, against the reference's
        assert set(m.rdf_partial_iae) == {"MOH-MOH", "MOH-HOH", "HOH-HOH"}
        assert all(np.isfinite(e.value) and e.value > 0 for e in m.rdf_partial_iae.values())
        assert set(m.D_ratio_by_type) == {"MOH", "HOH"} and all(e.value > 0 for e in m.D_ratio_by_type.values())
    ref = results.by_temperature[340.0].reference
    # the composition-weighted partials give the total g(r) (48 + 48 beads)
    g = ref.rdf_partial
    weighted = (48 * 47 * g["MOH-MOH"].y + 2 * 48 * 48 * g["MOH-HOH"].y + 48 * 47 * g["HOH-HOH"].y) / (96 * 95)
    np.testing.assert_allclose(weighted, ref.rdf.y, rtol=1e-9, atol=1e-12)
    assert 'id="mixture"' in (config.run_dir / "report" / "report.html").read_text()
