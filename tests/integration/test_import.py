"""``[reference] source = "files"``: the user's own frames (extended XYZ, via ASE) as the
reference stage (issue 17). The tiny OpenMM run is written out as a user would have it (eV,
wrapped coordinates, per-atom energies, molecule ids from 101) and imported again: the frames,
and the targets every later stage reads, must come back as they were; and every way a file can
fail the method is refused with the file, the frame and what is missing."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg.config import config_from_dict
from thermocg.errors import ConfigError, DataFormatError
from thermocg.geometry import minimum_image, wrap
from thermocg.io.records import ReferenceRun, TargetSet
from tests.helpers import run_stage, stage_path

# slow: the reference and targets stages on imported frames: ~25 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow


def _write_extxyz(path, frames, energy_unit="eV", wrapped=True, energies=True, mol_key="mol-id", n=None,
                  nve=False):
    """``frames`` (ReferenceFrames, or an NVE file's H5MD data) as extended XYZ the way ASE writes a
    user's data: each molecule's energy split over its atoms (O half, each H a quarter)."""
    import ase
    import ase.io
    import ase.units as au
    from ase.calculators.singlepoint import SinglePointCalculator

    from thermocg.reference.imported import energy_factor

    per_unit = 1.0 / energy_factor(energy_unit)  # kcal/mol -> the file's unit
    share = np.where(frames.species == 8, 0.5, 0.25)
    images = []
    for k in range(len(frames.positions) if n is None else n):
        box = frames.box[k]
        x = wrap(frames.positions[k], box) if wrapped else frames.positions[k]
        atoms = ase.Atoms(numbers=frames.species, positions=x, cell=np.diag(box), pbc=True,
                          masses=frames.masses)
        atoms.new_array(mol_key, frames.molecule_index + 101)
        if frames.velocities is not None:
            atoms.set_velocities(frames.velocities[k] / (au.fs * 1000.0))
        if not nve:
            results = {"energy": frames.potential_energy[k] * per_unit, "forces": frames.forces[k] * per_unit}
            if energies:
                results["energies"] = frames.molecule_energy[k][frames.molecule_index] * share * per_unit
            atoms.calc = SinglePointCalculator(atoms, **results)
        images.append(atoms)
    ase.io.write(path, images, format="extxyz")
    return path


class _NVE:
    """An NVE segment of the reference stage in the shape _write_extxyz reads."""

    def __init__(self, path):
        from thermocg.io.h5md import read_h5md

        d = read_h5md(path)
        self.positions, self.box = d.elements["particles/all/position"], d.elements["particles/all/box/edges"]
        self.velocities = d.elements["particles/all/velocity"]
        self.species, self.masses = d.particles["species"], d.particles["mass"]
        self.molecule_index = d.static["molecule_index"]


def _files_config(tiny_reference, tmp_path, energy_unit="eV", **write):
    """The tiny config with its reference frames written as extended XYZ and read back."""
    config, _ = tiny_reference
    ref = ReferenceRun.read(stage_path(config, "reference"))
    data = []
    for t in config.reference.temperatures_K:
        label = f"T{t:g}K"
        frames = _write_extxyz(tmp_path / f"{label}.extxyz", ref.frames(t), energy_unit, **write)
        nve = [_write_extxyz(tmp_path / f"{label}-nve{k}.xyz", _NVE(p), nve=True) for k, p in
               enumerate(ref.nve_paths(t))]
        data.append({"temperature_K": t, "frames": frames.name, "nve": [p.name for p in nve]})
    raw = config.model_dump(exclude={"source"}, mode="json")
    raw["run"]["directory"] = str(tmp_path / "run")
    for key in ("water_model", "n_molecules", "density_g_cm3", "temperatures_K"):
        raw["reference"].pop(key)
    raw["reference"].update(source="files", data=data, energy_unit=energy_unit)
    return config_from_dict(raw, source=tmp_path / "config.toml")


@pytest.fixture(scope="module")
def imported(tiny_reference, tmp_path_factory):
    config = _files_config(tiny_reference, tmp_path_factory.mktemp("import"))
    return config, run_stage("reference", config, show_progress=False)


def _same_frames(a, b, atol_forces: float, atol_energies: float) -> None:
    """Imported frames ``b`` against the frames ``a`` they were written from: the same atoms and
    molecules, positions up to whole box vectors, forces and energies to the given tolerances."""
    np.testing.assert_array_equal(b.molecule_index, a.molecule_index)
    np.testing.assert_array_equal(b.species, a.species)
    np.testing.assert_allclose(b.masses, a.masses, atol=1e-6)
    shift = (b.positions - a.positions) / a.box[:, None, :]
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)  # whole box vectors only
    np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=atol_forces)
    np.testing.assert_allclose(b.molecule_energy, a.molecule_energy, rtol=0, atol=atol_energies)
    np.testing.assert_allclose(b.potential_energy, a.potential_energy, rtol=1e-12)


def test_imported_frames_are_the_frames_written(tiny_reference, imported):
    """Positions (made whole again from wrapped ones: the same molecules up to whole box shifts),
    forces and energies through eV and back, per-molecule energies summed from per-atom ones,
    molecule ids renumbered from 101 to 0, masses, velocities; NVE segments unwrapped in time.
    To the 8 decimals extended XYZ keeps (ASE's writer): 5e-9 eV is 1.2e-7 kcal/mol."""
    original = ReferenceRun.read(stage_path(tiny_reference[0], "reference"))
    config, manifest = imported
    assert manifest["complete"]
    run = ReferenceRun.read(stage_path(config, "reference"))
    for t in config.reference.temperatures_K:
        a, b = original.frames(t), run.frames(t)
        _same_frames(a, b, atol_forces=1.2e-7, atol_energies=4e-7)
        shift = (b.positions - a.positions) / a.box[:, None, :]
        per_molecule = np.round(shift)[:, :, None, :] == np.round(shift)[:, None, :, :]
        same = b.molecule_index[:, None] == b.molecule_index[None, :]
        assert np.all(per_molecule.all(-1)[:, same]), "a molecule was split across images"
        np.testing.assert_allclose(b.velocities, a.velocities, rtol=0, atol=1e-6)  # 5e-9 ASE units: 5e-7 Å/ps
        for pa, pb in zip(original.nve_paths(t), run.nve_paths(t)):
            xa, xb = _NVE(pa).positions, _NVE(pb).positions
            np.testing.assert_allclose(xb - xb[0], xa - xa[0], atol=2e-8)  # the same unwrapped motion
    summary = manifest["summary"]["T300K"]["imported"]
    assert summary["frames"] == config.reference.n_frames and summary["molecules"] == 64
    # the OpenMM run's own decomposition error (its per-molecule energies vs its total), kept
    own = tiny_reference[1]["summary"]["T300K"]["nvt"]["max_decomposition_rel_error"]
    assert summary["max_decomposition_rel_error"] == pytest.approx(own, abs=1e-8)


def test_every_later_stage_reads_the_import_unchanged(tiny_targets, imported):
    """The targets of the imported frames equal those of the OpenMM run they came from (to the
    files' 8 decimals carried through the products of forces and local energies: 1e-6 of the
    largest target, where a wrong unit, sign or molecule would be of order 1)."""
    config, _ = imported
    run_stage("targets", config, show_progress=False)
    theirs, ours = TargetSet.read(stage_path(tiny_targets[0], "targets")), TargetSet.read(stage_path(config, "targets"))
    for t in config.reference.temperatures_K:
        a, b = theirs.frames(t), ours.frames(t)
        np.testing.assert_allclose(minimum_image(b.positions - a.positions, a.box[:, None, :]), 0.0, atol=1e-8)
        np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=4e-7)
        for name in ("t1", "t2", "bead_energy", "u_loc"):
            np.testing.assert_allclose(b.targets[name], a.targets[name], rtol=1e-6, atol=1e-6 * np.abs(
                a.targets[name]).max(), err_msg=name)


def test_a_changed_source_is_imported_again(tiny_reference, tmp_path):
    config = _files_config(tiny_reference, tmp_path, energy_unit="kJ/mol", n=None)
    first = run_stage("reference", config, show_progress=False)
    assert run_stage("reference", config, show_progress=False)["files"] == first["files"]  # up to date: skipped
    ref = ReferenceRun.read(stage_path(config, "reference"))
    before = ref.frames(500.0).forces.copy()
    # the user regenerates their 500 K data with forces 1 % larger (and the energies as they were)
    frames = ref.frames(500.0)
    scaled = type(frames)(**{**frames.__dict__, "forces": frames.forces * 1.01})
    _write_extxyz(tmp_path / "T500K.extxyz", scaled, "kJ/mol")
    again = run_stage("reference", config, show_progress=False)
    assert again["files"]["T500K.h5md"] != first["files"]["T500K.h5md"]
    np.testing.assert_allclose(ReferenceRun.read(stage_path(config, "reference")).frames(500.0).forces, before * 1.01,
                               rtol=0, atol=1e-7)


@pytest.mark.parametrize("change, message", [
    ({"energies": False}, "frame 0: no per-atom energies"),
    ({"mol_key": "resid"}, "frame 0: no molecule ids"),
    ({"n": 5}, "5 frame(s), but reference.n_frames = 40"),
])
def test_a_file_the_method_cannot_use_is_refused(tiny_reference, tmp_path, change, message):
    config = _files_config(tiny_reference, tmp_path, **change)
    with pytest.raises(DataFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_stage("reference", config, show_progress=False)


def test_energies_that_do_not_add_up_are_refused(tiny_reference, tmp_path):
    """Per-atom energies that do not sum to the total: named with the file, frame and sizes."""
    import ase.io

    config = _files_config(tiny_reference, tmp_path)
    path = tmp_path / "T300K.extxyz"
    images = ase.io.read(path, index=":")
    images[3].calc.results["energies"][0] += 1e-3  # eV: ~1e-7 of the total, above energy_check_rtol
    ase.io.write(path, images, format="extxyz")
    with pytest.raises(DataFormatError, match=r"T300K.extxyz: frame 3: the per-atom energies sum to .*relative "
                                              r"error .* > energy_check_rtol"):
        run_stage("reference", config, show_progress=False)


def test_boxes_and_configs_that_cannot_work(tiny_reference, tmp_path):
    import ase.io

    config = _files_config(tiny_reference, tmp_path)
    # a triclinic box
    path = tmp_path / "T500K.extxyz"
    images = ase.io.read(path, index=":")
    cell = images[0].cell[:].copy()
    cell[1, 0] = 1.0
    images[0].set_cell(cell)
    ase.io.write(path, images, format="extxyz")
    with pytest.raises(DataFormatError, match="T500K.extxyz: frame 0: the box must be orthorhombic"):
        run_stage("reference", config, show_progress=False)
    # a train cutoff beyond half the files' box (12.4 / 2 Å), known only once the frames are read
    raw = config.model_dump(exclude={"source"}, mode="json")
    raw["train"]["cutoff_A"] = 6.5
    raw["run"]["directory"] = str(tmp_path / "run2")
    with pytest.raises(ConfigError, match=r"train.cutoff_A = 6.5 Å must be below half the smallest box edge"):
        run_stage("reference", config_from_dict(raw, source=tmp_path / "config.toml"), show_progress=False)
    # restrained targets need the OpenMM system; temperatures must match the data
    raw["targets"]["method"] = "restrained"
    with pytest.raises(ConfigError, match="does not have; use method = \"regression\""):
        config_from_dict(raw)
    raw["targets"]["method"] = "regression"
    raw["reference"]["temperatures_K"] = [300.0]
    with pytest.raises(ConfigError, match=r"temperatures_K \[300.0\] differ from the temperatures of"):
        config_from_dict(raw)


def test_a_mixture_gets_a_bead_type_per_molecular_formula(tmp_path):
    """Water, methanol, water in one file: two bead types, named by formula (Hill order) in order
    of first appearance, each molecule typed by its own atoms, kept in the written file."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from thermocg.frames import read_reference
    from thermocg.reference.imported import read_frames, write_frames

    atoms = ase.Atoms("OH2COH4OH2", positions=np.random.default_rng(0).random((12, 3)) * 3, cell=[12.0] * 3, pbc=True)
    atoms.new_array("mol-id", np.array([7, 7, 7, 2, 2, 2, 2, 2, 2, 9, 9, 9]))
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((12, 3)), energies=np.full(12, -1 / 12))
    ase.io.write(tmp_path / "mix.extxyz", [atoms], format="extxyz")
    frames = read_frames(tmp_path / "mix.extxyz", 1)
    assert frames.bead_types == ("H2O", "CH4O")
    np.testing.assert_array_equal(frames.static["molecule_type"], [0, 1, 0])
    write_frames(tmp_path / "T300K.h5md", frames, 300.0, tmp_path / "mix.extxyz", "x", "eV", 1.0, "imported")
    back = read_reference(tmp_path / "T300K.h5md")
    assert back.bead_types == ("H2O", "CH4O")
    np.testing.assert_array_equal(back.molecule_type, [0, 1, 0])


def test_temperatures_whose_molecules_differ_in_kind_or_order_are_refused(tmp_path):
    """A mixture imported at two temperatures whose files list water and methanol in other
    orders: a bead would change type between temperatures, so the import stops naming both files
    (one kind of molecule in any order is fine: every bead is alike)."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    def write(name, formula, ids):
        rng = np.random.default_rng(len(name))
        n = len(ids)
        atoms = ase.Atoms(formula, positions=rng.random((n, 3)) * 2 + 10, cell=[40.0] * 3, pbc=True)
        atoms.new_array("mol-id", np.array(ids))
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((n, 3)), energies=np.full(n, -1 / n))
        ase.io.write(tmp_path / name, [atoms, atoms], format="extxyz")

    write("a.extxyz", "OH2COH4", [1, 1, 1, 2, 2, 2, 2, 2, 2])
    write("b.extxyz", "COH4OH2", [1, 1, 1, 1, 1, 1, 2, 2, 2])
    raw = {"run": {"directory": str(tmp_path / "run")},
           "reference": {"source": "files", "n_frames": 2, "nve": {"n_segments": 0},
                         "data": [{"temperature_K": 300.0, "frames": "a.extxyz"},
                                  {"temperature_K": 400.0, "frames": "b.extxyz"}]},
           "train": {"T0_K": 300.0, "training_temperatures_K": [300.0, 400.0], "test_frames": 0}}
    with pytest.raises(DataFormatError, match=r"b.extxyz: its molecules' types \['CH4O', 'H2O'\] \(in file order\) "
                                              r"differ from those of .*a.extxyz \(\['H2O', 'CH4O'\]\)"):
        run_stage("reference", config_from_dict(raw, source=tmp_path / "c.toml"), show_progress=False)


def _write_lammps(tmp_path, frames, name, columns=("c_pe", "v_pe"), n=None, bad_total=False):
    """``frames`` as LAMMPS would write them in units real: a data file (atom_style full, types by
    element, molecule ids from 101) and a text dump with id mol type x y z fx fy fz and the
    per-atom and total energy columns (10 decimals; atoms listed in reverse id order, as a
    parallel run may write them)."""
    types = np.where(frames.species == 8, 1, 2)
    n_atoms = len(types)
    data = tmp_path / "system.data"
    if not data.exists():
        box = frames.box[0]
        lines = ["written by thermocg's tests", "", f"{n_atoms} atoms", "2 atom types", "",
                 f"0.0 {box[0]:.10f} xlo xhi", f"0.0 {box[1]:.10f} ylo yhi", f"0.0 {box[2]:.10f} zlo zhi", "",
                 "Masses", "", f"1 {frames.masses[frames.species == 8][0]:.6f}",
                 f"2 {frames.masses[frames.species == 1][0]:.6f}", "", "Atoms # full", ""]
        lines += [f"{i + 1} {frames.molecule_index[i] + 101} {types[i]} 0.0 {x:.10f} {y:.10f} {z:.10f}"
                  for i, (x, y, z) in enumerate(wrap(frames.positions[0], frames.box[0]))]
        data.write_text("\n".join(lines) + "\n")
    share = np.where(frames.species == 8, 0.5, 0.25)
    out = []
    for k in range(len(frames.positions) if n is None else n):
        box = frames.box[k]
        x = wrap(frames.positions[k], box)
        pe = frames.molecule_energy[k][frames.molecule_index] * share
        total = np.full(n_atoms, frames.potential_energy[k])
        if bad_total:
            total[5] += 1.0
        out += ["ITEM: TIMESTEP", str(k), "ITEM: NUMBER OF ATOMS", str(n_atoms), "ITEM: BOX BOUNDS pp pp pp"]
        out += [f"0.0 {e:.10f}" for e in box]
        out.append("ITEM: ATOMS id mol type x y z fx fy fz " + " ".join(columns))
        for i in reversed(range(n_atoms)):
            f = frames.forces[k, i]
            out.append(f"{i + 1} {frames.molecule_index[i] + 101} {types[i]} {x[i, 0]:.10f} {x[i, 1]:.10f} "
                       f"{x[i, 2]:.10f} {f[0]:.10f} {f[1]:.10f} {f[2]:.10f} {pe[i]:.10f} {total[i]:.10f}")
    path = tmp_path / name
    path.write_text("\n".join(out) + "\n")
    return path


def _lammps_config(tiny_reference, tmp_path, **write):
    config, _ = tiny_reference
    ref = ReferenceRun.read(stage_path(config, "reference"))
    data = [{"temperature_K": t, "frames": _write_lammps(tmp_path, ref.frames(t), f"T{t:g}K.lammpstrj", **write).name}
            for t in config.reference.temperatures_K]
    raw = config.model_dump(exclude={"source"}, mode="json")
    raw["run"]["directory"] = str(tmp_path / "run")
    for key in ("water_model", "n_molecules", "density_g_cm3", "temperatures_K"):
        raw["reference"].pop(key)
    raw["reference"]["nve"]["n_segments"] = 0
    raw["reference"].update(source="files", data=data, energy_unit="kcal/mol", lammps_data="system.data")
    return config_from_dict(raw, source=tmp_path / "config.toml")


def test_lammps_dumps_with_a_data_file(tiny_reference, tmp_path):
    """A LAMMPS run in units real (dump + data file) imports to the frames it was written from:
    elements and masses from the data file, forces through ASE's unit conversion and back."""
    config = _lammps_config(tiny_reference, tmp_path)
    manifest = run_stage("reference", config, show_progress=False)
    original = ReferenceRun.read(stage_path(tiny_reference[0], "reference"))
    run = ReferenceRun.read(stage_path(config, "reference"))
    for t in config.reference.temperatures_K:
        a, b = original.frames(t), run.frames(t)
        _same_frames(a, b, atol_forces=1e-9, atol_energies=1e-9)  # 10 decimals in the dump
        assert b.velocities is None
    assert manifest["summary"]["T500K"]["imported"]["frames"] == config.reference.n_frames


@pytest.mark.parametrize("change, error, message", [
    # the dump has the forces and v_pe: only the per-atom energies are named (issue 33)
    ({"columns": ("c_peatom", "v_pe")}, DataFormatError,
     r"missing the column\(s\) c_pe \(per-atom energies: compute pe/atom\); found"),
    ({"bad_total": True}, DataFormatError, "column v_pe varies between atoms"),
])
def test_lammps_dumps_the_method_cannot_use(tiny_reference, tmp_path, change, error, message):
    with pytest.raises(error, match=message):
        run_stage("reference", _lammps_config(tiny_reference, tmp_path, **change), show_progress=False)


def test_lammps_settings_that_cannot_work(tiny_reference, tmp_path):
    config = _lammps_config(tiny_reference, tmp_path, n=1)
    raw = config.model_dump(exclude={"source"}, mode="json")
    raw["reference"]["lammps_data"] = None
    with pytest.raises(ConfigError, match="a LAMMPS dump needs reference.lammps_data"):
        run_stage("reference", config_from_dict(raw, source=tmp_path / "config.toml"), show_progress=False)
    raw["reference"].update(lammps_data="system.data", energy_unit="kJ/mol")
    raw["run"]["directory"] = str(tmp_path / "run2")  # the first attempt's run directory holds its config
    with pytest.raises(ConfigError, match=r"LAMMPS dumps are read in units real \("):
        run_stage("reference", config_from_dict(raw, source=tmp_path / "config.toml"), show_progress=False)
