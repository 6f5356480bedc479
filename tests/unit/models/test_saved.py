"""The public model API (thermocg.models.saved): the usual box shapes give the same forces,
a triclinic cell is refused by name, and ``import thermocg; thermocg.load_model`` needs
neither OpenMM nor any stage of the pipeline."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from thermocg.models.prior import RepulsivePrior
from thermocg.models.saved import CGForceField, load_model, orthorhombic_edges, save_model
from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(5)
    settings = NetworkSettings(cutoff_A=4.0, dist_soft_max_A=3.5, n_features=8, n_sensitivities=6)
    model = ThermalForceField(build_network(settings), RepulsivePrior(2.5, 10.0), beta_of(300.0), 2, settings)
    path = tmp_path_factory.mktemp("saved") / "trf2.pt"
    save_model(path, model, {"variant": "trf2"})
    return path, load_model(path)


def _frames(n_frames, edge=10.0, seed=0):
    """Jittered 3 x 3 x 3 lattices in a box of ``edge`` Å (no overlapping beads)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * edge / 3
    return grid + rng.normal(0, 0.3, (n_frames, len(grid), 3))


def test_every_box_shape_gives_the_same_forces(saved):
    _, ff = saved
    x = _frames(2)
    edges = np.array([[10.0, 10.0, 10.0], [10.5, 10.0, 9.5]])
    cells = np.stack([np.diag(e) for e in edges])
    per_frame = ff.forces(x, edges, 350.0)
    assert np.abs(per_frame).max() > 1e-3  # the network and the prior act on these frames
    np.testing.assert_array_equal(ff.forces(x, cells, 350.0), per_frame)
    # a shared box as edges (3,) or as a cell matrix (3, 3): the ASE / MDAnalysis convention
    shared = ff.forces(x, edges[0], 350.0)
    np.testing.assert_array_equal(ff.forces(x, np.diag(edges[0]), 350.0), shared)
    # a single frame (N, 3) with a (3, 3) cell; float32 sums in another batch layout agree to rounding
    one = ff.forces(x[1], cells[1], 350.0)
    np.testing.assert_array_equal(one, ff.forces(x[1], edges[1], 350.0))
    np.testing.assert_allclose(one, per_frame[1], rtol=1e-4, atol=1e-6 * np.abs(one).max())
    np.testing.assert_allclose(shared[0], per_frame[0], rtol=1e-4, atol=1e-6 * np.abs(one).max())
    np.testing.assert_array_equal(ff.energy(x[1], cells[1], 350.0), ff.energy(x[1], edges[1], 350.0))
    # a different box gives different forces (the box is really used)
    assert np.abs(shared[1] - per_frame[1]).max() > 1e-6


def test_a_triclinic_cell_is_refused_by_name(saved):
    _, ff = saved
    cell = np.diag([10.0, 10.0, 10.0])
    cell[1, 0] = 2.0
    with pytest.raises(ValueError, match=r"triclinic cell \(off-diagonal element 2 Å at index \(1, 0\)\)"):
        ff.forces(_frames(1)[0], cell, 300.0)
    with pytest.raises(ValueError, match="triclinic"):
        ff.forces(_frames(2), np.stack([np.diag([10.0] * 3), cell]), 300.0)


def test_ambiguous_and_wrong_boxes_are_errors():
    with pytest.raises(ValueError, match=r"shape \(3, 3\) with 3 frames is ambiguous"):
        orthorhombic_edges(np.full((3, 3), 10.0), n_frames=3)
    np.testing.assert_array_equal(orthorhombic_edges(np.diag([9.0, 10.0, 11.0]), 3), [9.0, 10.0, 11.0])
    with pytest.raises(ValueError, match=r"box: shape \(4, 3\), expected \(3,\), \(2, 3\)"):
        orthorhombic_edges(np.ones((4, 3)), n_frames=2)
    with pytest.raises(ValueError, match="positive and finite"):
        orthorhombic_edges(np.array([10.0, 0.0, 10.0]), n_frames=None)


@pytest.mark.slow  # ~12 s, a fresh interpreter on 2 cores; CI runs it
def test_load_model_imports_neither_openmm_nor_a_stage(saved):
    """In a fresh interpreter: load a saved model through the package's top level; OpenMM, the
    stage modules and the pipeline stay unimported. (Its forces are those of the model saved:
    test_interaction_order_survives_save_and_load.)"""
    path, ff = saved
    code = f"""
import json, sys
import thermocg
ff = thermocg.load_model({str(path)!r})
mods = sorted(m for m in sys.modules if m.split('.')[0] in ('openmm', 'thermocg'))
print(json.dumps({{"modules": mods, "T0_K": ff.metadata["T0_K"], "order": ff.model.order}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    modules = got["modules"]
    assert not [m for m in modules if m.split(".")[0] == "openmm"], modules
    assert not [m for m in modules if m.endswith(".stage") or m == "thermocg.pipeline"], modules
    assert "thermocg.models.saved" in modules
    assert got["order"] == 2 and got["T0_K"] == pytest.approx(300.0)


def test_load_model_refuses_other_files(tmp_path):
    from thermocg.errors import DataFormatError

    p = tmp_path / "x.pt"
    torch.save({"format": "something-else"}, p)
    with pytest.raises(DataFormatError, match="expected format thermocg-model-1, found something-else"):
        load_model(p)
    assert isinstance(CGForceField, type)


def test_a_mixture_model_keeps_its_bead_types_through_saving_and_ase(tmp_path):
    """A model of two bead types, saved and loaded: its type names, its species (forces with the
    types equal the unsaved model's, and differ from those with the types swapped), and the ASE
    calculator reading each bead's type from the atoms' bead_type array or its own types."""
    import ase

    from thermocg.models.ase_calculator import ThermocgCalculator

    torch.manual_seed(6)
    settings = NetworkSettings(cutoff_A=4.0, dist_soft_max_A=3.5, n_features=8, n_sensitivities=6, n_types=2)
    model = ThermalForceField(build_network(settings), RepulsivePrior(2.5, 10.0), beta_of(300.0), 2, settings)
    save_model(tmp_path / "mix.pt", model, {"variant": "trf2", "bead_types": ["MOH", "HOH"]})
    loaded = load_model(tmp_path / "mix.pt")
    assert loaded.bead_types == ("MOH", "HOH")
    x, box = _frames(1)[0], np.full(3, 10.0)
    types = np.arange(27) % 2
    f = loaded.forces(x, box, 350.0, types)
    np.testing.assert_allclose(f, model.forces_numpy(x, box, 350.0, types), rtol=0,
                               atol=1e-5 * np.abs(f).max())  # the inference form against hippynn, float32
    assert np.abs(loaded.forces(x, box, 350.0, 1 - types) - f).max() > 1e-6 * np.abs(f).max()
    atoms = ase.Atoms("O27", positions=x, cell=box, pbc=True)
    atoms.calc = ThermocgCalculator(loaded, temperature_K=350.0, types=types)
    ev = 0.0433641043  # eV per kcal/mol
    np.testing.assert_allclose(atoms.get_forces(), f * ev, rtol=1e-6, atol=1e-9)
    atoms.set_array("bead_type", 1 - types)  # the atoms' own types win, and a retyping is a change
    np.testing.assert_allclose(atoms.get_forces(), loaded.forces(x, box, 350.0, 1 - types) * ev, rtol=1e-6,
                               atol=1e-9)
    atoms.calc = ThermocgCalculator(loaded, temperature_K=350.0)
    del atoms.arrays["bead_type"]
    with pytest.raises(ValueError, match="this model has 2 bead types: pass each bead's type"):
        atoms.get_forces()
