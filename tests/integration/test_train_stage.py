"""The train stage on the tiny run: saved models per variant that load without the training
code and reproduce the trained model; temperature dependence only where the variant has it."""

from __future__ import annotations

import numpy as np
import pytest

from thermocg import load_model
from thermocg.errors import DataFormatError
from thermocg.io.h5md import read_h5md
from thermocg.units import KB, beta_of
from tests.helpers import run_stage, stage_path


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def _frame(config):
    d = read_h5md(stage_path(config, "targets") / "T300K.h5md", frames=slice(0, 1))
    return d.elements["particles/all/position"][0], d.elements["particles/all/box/edges"][0]


@pytest.mark.slow  # ~30 s for the tiny run's every variant, shared on 2 cores; CI runs it
def test_models_are_saved_and_load(trained):
    config, manifest = trained
    assert manifest["complete"] and set(manifest["outputs"]) == {"fm", "trf2", "trf-multi", "fm-each-T300K",
                                                                  "fm-each-T500K", "em"}
    x, box = _frame(config)
    fm, trf2 = load_model(stage_path(config, "train") / "fm.pt"), load_model(stage_path(config, "train") / "trf2.pt")
    assert fm.metadata["order"] == 0 and trf2.metadata["order"] == 2
    assert trf2.metadata["T0_K"] == pytest.approx(300.0) and trf2.metadata["training_temperatures_K"] == [300.0]
    assert trf2.metadata["units"]["energy"] == "kcal mol-1" and "prior" in trf2.metadata
    f = trf2.forces(x, box, 300.0)
    assert f.shape == (64, 3) and np.all(np.isfinite(f))
    # fm has no temperature dependence; trf2 does
    np.testing.assert_array_equal(fm.forces(x, box, 250.0), fm.forces(x, box, 600.0))
    assert np.abs(trf2.forces(x, box, 250.0) - trf2.forces(x, box, 600.0)).max() > 0
    # two loads give identical predictions (weights and prior restored exactly)
    np.testing.assert_array_equal(load_model(stage_path(config, "train") / "trf2.pt").forces(x, box, 450.0),
                                  trf2.forces(x, box, 450.0))
    assert not list(stage_path(config, "train").glob(".*")), "checkpoints or temporary files left behind"


@pytest.mark.slow  # ~30 s for the tiny run's every variant, shared on 2 cores; CI runs it
def test_fm_each_and_trf_multi_carry_their_temperatures(trained):
    config, _ = trained
    multi = load_model(stage_path(config, "train") / "trf-multi.pt")
    assert multi.metadata["training_temperatures_K"] == [300.0, 500.0] and multi.metadata["order"] == 2
    assert multi.metadata["T0_K"] == pytest.approx(300.0)
    each = load_model(stage_path(config, "train") / "fm-each-T500K.pt")
    assert each.metadata["order"] == 0 and each.metadata["T0_K"] == pytest.approx(500.0)
    assert each.metadata["source_files"] == ["T500K.h5md"]


@pytest.mark.slow  # ~30 s for the tiny run's every variant, shared on 2 cores; CI runs it
def test_em_is_linear_in_beta_with_slope_from_the_energy_head(trained):
    """em: W = W0 + dB (U - W0)/beta0 (THEORY.md §4); its forces are linear in beta and
    the saved per-bead constant is the mean total energy per molecule of the data."""
    config, _ = trained
    em = load_model(stage_path(config, "train") / "em.pt")
    assert em.metadata["form"] == "em" and em.metadata["order"] == 1
    x, box = _frame(config)
    betas = [beta_of(t) for t in (250.0, 300.0, 450.0)]
    f = [em.forces(x, box, 1.0 / (KB * b)) for b in betas]
    slope = (f[2] - f[1]) / (betas[2] - betas[1])
    np.testing.assert_allclose(f[0], f[1] + (betas[0] - betas[1]) * slope, atol=1e-4 * np.abs(f[1]).max())
    assert np.abs(slope).max() > 0
    energy = read_h5md(stage_path(config, "targets") / "T300K.h5md").elements["observables/potential_energy"]
    assert float(em.model.bead_offset[1]) == pytest.approx(energy.mean() / 64, rel=0.05)


def test_em_energy_targets(tiny_targets):
    """em fits U to the total energies or to the per-molecule ones, which add up to them."""
    from thermocg.models.stage import training_data
    config, _ = tiny_targets
    from thermocg.io.records import TargetSet

    total, _ = training_data(TargetSet.read(stage_path(config, "targets")), [300.0], 1, em="total")
    per_mol, _ = training_data(TargetSet.read(stage_path(config, "targets")), [300.0], 1, em="per-molecule")
    assert set(total.targets) == {0} and total.energies[1].shape == (40,)
    assert per_mol.energies[1].shape == (40, 64)
    np.testing.assert_allclose(per_mol.energies[1].sum(1), total.energies[1], rtol=1e-5)


@pytest.mark.slow  # ~12 s of training on 2 cores; CI runs it
def test_save_load_roundtrip_is_exact(tmp_path, tiny_targets):
    import torch
    from thermocg.models.prior import RepulsivePrior
    from thermocg.models.stage import save_model
    from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network
    config, _ = tiny_targets
    x, box = _frame(config)
    torch.manual_seed(3)
    settings = NetworkSettings(cutoff_A=6.0, n_features=8, n_sensitivities=6, shared=False)
    model = ThermalForceField(build_network(settings), RepulsivePrior(2.4, 12.0), beta_of(350.0), 2, settings,
                              form="energy-entropy")
    save_model(tmp_path / "m.pt", model, {"variant": "trf2"})
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.metadata["form"] == "energy-entropy"
    np.testing.assert_array_equal(loaded.model.forces_numpy(x, box, 280.0), model.forces_numpy(x, box, 280.0))
    assert loaded.model.energy_numpy(x, box, 280.0) == model.energy_numpy(x, box, 280.0)
    # what the loaded model computes by default, its inference form: the same function in float32
    f, w = model.forces_numpy(x, box, 280.0), model.energy_numpy(x, box, 280.0)
    np.testing.assert_allclose(loaded.forces(x, box, 280.0), f, rtol=0, atol=1e-5 * np.abs(f).max())
    np.testing.assert_allclose(loaded.energy(x, box, 280.0), w, rtol=1e-6)


@pytest.mark.slow  # ~30 s for the tiny run's every variant, shared on 2 cores; CI runs it
def test_rerun_is_up_to_date(trained):
    config, manifest = trained
    assert run_stage("train", config, show_progress=False) == manifest


def test_not_a_model_file(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"junk")
    with pytest.raises(DataFormatError, match="junk.pt: not a readable thermocg model"):
        load_model(p)


@pytest.mark.slow  # ~30 s for the tiny run's every variant, shared on 2 cores; CI runs it
def test_ase_calculator_matches_the_model(trained):
    from ase import Atoms
    from ase.units import kcal, mol

    from thermocg.models.ase_calculator import ThermocgCalculator
    config, _ = trained
    x, box = _frame(config)
    model = load_model(stage_path(config, "train") / "trf2.pt")
    atoms = Atoms("O" * len(x), positions=x, cell=np.diag(box), pbc=True)
    atoms.calc = ThermocgCalculator(stage_path(config, "train") / "trf2.pt", temperature_K=420.0)
    np.testing.assert_allclose(atoms.get_forces(), model.forces(x, box, 420.0) * kcal / mol, rtol=1e-6)
    assert atoms.get_potential_energy() == pytest.approx(float(model.energy(x, box, 420.0)) * kcal / mol,
                                                         rel=1e-6)
    atoms.pbc = False
    with pytest.raises(ValueError, match="periodic orthorhombic cell"):
        atoms.get_forces()


@pytest.mark.slow  # ~30 s for the tiny run's every variant, shared on 2 cores; CI runs it
def test_trf2_and_em_are_fm_at_T0(trained):
    """At T0 the beta expansion's force is W0's alone, and em's too (W1 enters with dB = 0):
    trained on fm's W0 they predict fm's forces there to float32 round-off (W1 and W2 still
    enter the graph, times zero), and away from T0 they differ. The fm-each at T0 is fm
    itself (same frames, same seed)."""
    config, manifest = trained
    x, box = _frame(config)
    fm = load_model(stage_path(config, "train") / "fm.pt").forces(x, box, 300.0)
    tol = 1e-6 * np.abs(fm).max()  # float32: ~10 ulp of the largest component
    for name in ("trf2", "em"):
        np.testing.assert_allclose(load_model(stage_path(config, "train") / f"{name}.pt").forces(x, box, 300.0), fm,
                                   rtol=0, atol=tol)
    np.testing.assert_array_equal(load_model(stage_path(config, "train") / "fm-each-T300K.pt").forces(x, box, 300.0), fm)
    for name in ("trf2", "em"):
        assert manifest["summary"][name]["w0_from"] == "fm"
        assert np.abs(load_model(stage_path(config, "train") / f"{name}.pt").forces(x, box, 500.0) - fm).max() > 100 * tol
    assert set(manifest["summary"]["trf2"]["phases"]) == {"trf2-thermal"}  # W0 was not fitted again
    assert set(manifest["summary"]["fm"]["phases"]) == {"fm"}


def test_seeds_make_one_model_per_seed_sharing_W0_within_a_seed():
    from thermocg.config import Config
    from thermocg.models.stage import model_plan, w0_donors

    config = Config.model_validate({"reference": {"temperatures_K": [250.0, 300.0, 400.0]},
                                    "train": {"variants": ["fm", "fm-each", "trf2", "trf-multi", "trf1-regression"],
                                              "seeds": [4, 9], "training_temperatures_K": [250.0, 400.0]}})
    plan = model_plan(config)
    names = [m.name for m in plan]
    assert len(names) == 2 * 7 and "fm-each-T250K-seed9" in names and "trf-multi-seed4" in names
    assert {m.seed for m in plan if m.group == "trf2"} == {4, 9}
    assert {(m.variant, m.order) for m in plan if m.group == "trf1-regression"} == {("trf1-regression", 1)}
    # trf1-regression is trf1 on other thermal targets: the same W0, fm's
    assert w0_donors(plan) == {"trf2-seed4": "fm-seed4", "trf2-seed9": "fm-seed9",
                               "fm-each-T300K-seed4": "fm-seed4", "fm-each-T300K-seed9": "fm-seed9",
                               "trf1-regression-seed4": "fm-seed4", "trf1-regression-seed9": "fm-seed9"}
    single = model_plan(Config.model_validate({"train": {"variants": ["trf2"]}, "run": {"seed": 11}}))
    assert [(m.name, m.seed) for m in single] == [("trf2", 11)] and w0_donors(single) == {}


def test_further_seeds_are_simulated_only_at_seed_temperatures(tmp_path):
    from thermocg.config import Config
    from thermocg.io.records import TrainedModels
    from thermocg.models.stage import model_plan
    from thermocg.simulate.plan import simulation_jobs

    config = Config.model_validate({"reference": {"temperatures_K": [250.0, 300.0, 400.0]},
                                    "train": {"variants": ["fm", "fm-each"], "seeds": [4, 9]},
                                    "simulate": {"seed_temperatures_K": [250.0]}})
    jobs = simulation_jobs(config, TrainedModels(tmp_path, tuple(model_plan(config))))
    assert jobs["fm-seed4"] == (250.0, 300.0, 400.0) and jobs["fm-seed9"] == (250.0,)
    assert jobs["fm-each-T400K-seed4"] == (400.0,) and "fm-each-T400K-seed9" not in jobs
    assert jobs["fm-each-T250K-seed9"] == (250.0,)
