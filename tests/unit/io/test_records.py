"""The typed records the stages hand to each other: exact round trips through the manifest
and results.json, strict JSON, and clear errors for a stage that has not finished."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from thermocg.errors import DataFormatError
from thermocg.io.records import ModelEntry, ReferenceRun, TargetSet, TrainedModels, Trajectories, TrajectoryRun
from thermocg.io.targets_file import TargetFrames
from thermocg.io.results import Curve, Estimate, Measures, Results, TemperatureResults
from thermocg.labels import temperature_label
from thermocg.stagedir import StageDir


def _finish(directory, stage, record):
    s = StageDir(directory, stage, "hash", f"[{stage}]")
    directory.mkdir(parents=True, exist_ok=True)
    s.write_manifest(True, {}, {}, {}, record.to_json())


def test_labels_exist_only_for_file_names():
    assert temperature_label(300.0) == "T300K" and temperature_label(272.5) == "T272.5K"
    assert temperature_label(300) == "T300K"


def test_records_round_trip_through_the_manifest(tmp_path):
    ref = ReferenceRun(tmp_path / "reference", (250.0, 272.5, 300.0), 2)
    _finish(ref.directory, "reference", ref)
    back = ReferenceRun.read(ref.directory)
    assert back == ref
    assert back.nvt_path(272.5).name == "T272.5K.h5md"
    assert [p.name for p in back.nve_paths(300.0)] == ["T300K-nve00.h5md", "T300K-nve01.h5md"]
    with pytest.raises(DataFormatError, match=r"no data at 310 K \(have \[250.0, 272.5, 300.0\]\)"):
        back.nvt_path(310.0)

    targets = TargetSet(tmp_path / "targets", (300.0, 500.0))
    _finish(targets.directory, "targets", targets)
    assert TargetSet.read(targets.directory) == targets

    models = TrainedModels(tmp_path / "train", (ModelEntry("fm", "fm", 0, 300.0, (300.0,)),
                                                ModelEntry("fm-each-T500K-seed1", "fm-each", 0, 500.0, (500.0,), 1,
                                                           "fm-each-T500K"),
                                                ModelEntry("fm-each-T500K-seed2", "fm-each", 0, 500.0, (500.0,), 2,
                                                           "fm-each-T500K"),
                                                ModelEntry("trf-multi", "trf-multi", 2, 300.0, (250.0, 400.0))),
                           (32, 40))
    _finish(models.directory, "train", models)
    back = TrainedModels.read(models.directory)
    assert back == models and back.held_out == slice(32, 40)
    assert back.floor(500.0) == ["fm-each-T500K-seed1", "fm-each-T500K-seed2"]  # one per seed
    assert back.floor(300.0) == []  # no fm-each at 300 K
    assert back.path("trf-multi").name == "trf-multi.pt" and back["fm-each-T500K-seed2"].single_temperature
    assert back["fm-each-T500K-seed2"].seed == 2 and back["fm"].group == "fm"

    runs = Trajectories(tmp_path / "simulate", (
        TrajectoryRun("fm", 300.0, 0, "fm/T300K.h5md", ("fm/T300K-nve00.h5md",)),
        TrajectoryRun("fm", 420.0, 0, "fm/T420K.h5md", ()), TrajectoryRun("fm", 420.0, 1, "fm/T420K-r01.h5md", ())))
    _finish(runs.directory, "simulate", runs)
    back = Trajectories.read(runs.directory)
    assert back == runs and back.models == ["fm"] and back.temperatures("fm") == [300.0, 420.0]
    assert back.nvt_path("fm", 420.0, replica=1) == runs.directory / "fm/T420K-r01.h5md"
    with pytest.raises(DataFormatError, match="no simulation of trf2 at 300 K"):
        back.nvt_path("trf2", 300.0)


def test_an_unfinished_or_old_stage_is_named(tmp_path):
    d = tmp_path / "train"
    with pytest.raises(DataFormatError, match="no train stage here; run `thermocg train` first"):
        TrainedModels.read(d)
    d.mkdir()
    StageDir(d, "train", "h", "[train]").write_manifest(False, {})
    with pytest.raises(DataFormatError, match="the train stage is not finished; run `thermocg train`"):
        TrainedModels.read(d)
    (d / "manifest.json").write_text(json.dumps({"complete": True, "config_hash": "h"}))
    with pytest.raises(DataFormatError, match="older thermocg"):
        TrainedModels.read(d)
    # and the stage itself redoes (and so re-records) a finished stage without a record
    assert StageDir(d, "train", "h", "[train]").prepare(force=False) is None


def test_results_round_trip_as_strict_json(tmp_path):
    """Every measure survives write and read; an unknown error (NaN) is written as null, and
    the file is strict JSON (Python's parser refuses NaN when asked)."""
    r = np.linspace(0, 6, 5)
    m = Measures(rdf=Curve(r, r**2), adf=Curve(r, r + 1), s2_kB=Estimate(-3.2, 0.1), rdf_iae=Estimate(0.4, 0.05),
                 rdf_peak_position=Estimate(2.8, float("nan")), mean_kinetic_temperature_K=301.5,
                 D_A2_per_ps=Estimate(0.25, 0.02), segments=2, msd=Curve(r, 6 * 0.25 * r),
                 yeh_hummer_times_viscosity=0.07, D_ratio_CG_over_FG=Estimate(7.9, 0.8),
                 force_mse=Estimate(12.4, 0.3), force_mse_excess=0.11)
    res = Results(temperatures_K=(300.0, 420.0), models=("fm",), T0_K=300.0,
                  training_temperatures_K={"fm": (300.0,)}, variants={"fm": "fm"},
                  by_temperature={300.0: TemperatureResults(300.0, Measures(s2_kB=Estimate(-3.0, 0.1)), {"fm": m}),
                                  420.0: TemperatureResults(420.0, None, {"fm": Measures(rdf=Curve(r, r))})})
    path = tmp_path / "results.json"
    res.write(path)
    text = path.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    data = json.loads(text)
    assert set(data["by_temperature"]) == {"T300K", "T420K"}  # labels only as keys of the file
    assert data["by_temperature"]["T300K"]["models"]["fm"]["rdf_peak_position"] == {"value": 2.8, "error": None}
    back = Results.read(path)
    got = back.model("fm", 300.0)
    assert math.isnan(got.rdf_peak_position.error) and got.rdf_peak_position.value == 2.8
    assert got.force_mse == Estimate(12.4, 0.3) and got.force_mse_excess == 0.11 and got.segments == 2
    np.testing.assert_array_equal(got.msd.y, 6 * 0.25 * r)
    assert back.by_temperature[420.0].reference is None and back.model("fm", 420.0).force_mse is None
    assert back.model("fm", 420.0).simulated and not Measures().simulated
    assert back.training_temperatures_K == {"fm": (300.0,)} and back.variants == {"fm": "fm"}
    with pytest.raises(DataFormatError, match="unknown measure 'rdf_iea'"):
        Measures.from_json({"rdf_iea": {"value": 1.0, "error": 0.1}})


def test_results_over_seeds(tmp_path):
    """Mean, spread (sample standard deviation) and within-run error of a measure over the
    seeds of a group, by hand: values 1, 2, 4 with errors 0.3, 0.4, 1.2 -> mean 7/3,
    spread sqrt(7/3), within sqrt(0.09 + 0.16 + 1.44)/3 = 1.3/3. A seed that did not measure
    it (not simulated there) is left out; a group of one seed has no spread."""
    ms = {"trf2-seed1": Measures(rdf_iae=Estimate(1.0, 0.3)), "trf2-seed2": Measures(rdf_iae=Estimate(2.0, 0.4)),
          "trf2-seed3": Measures(rdf_iae=Estimate(4.0, 1.2)), "trf2-seed4": Measures(), "fm": Measures(rdf_iae=Estimate(5.0))}
    res = Results(temperatures_K=(300.0,), models=tuple(ms), T0_K=300.0,
                  training_temperatures_K={m: (300.0,) for m in ms}, variants={m: m[:4] for m in ms},
                  by_temperature={300.0: TemperatureResults(300.0, None, ms)},
                  groups={**{m: "trf2" for m in ms if m != "fm"}, "fm": "fm"},
                  seeds={"trf2-seed1": 1, "trf2-seed2": 2, "trf2-seed3": 3, "trf2-seed4": 4, "fm": 2026})
    res.write(tmp_path / "results.json")
    back = Results.read(tmp_path / "results.json")
    assert back.group_names == ["trf2", "fm"] and back.seeds["trf2-seed3"] == 3
    s = back.over_seeds("trf2", 300.0, "rdf_iae")
    assert s.n == 3 and s.mean == pytest.approx(7 / 3) and s.spread == pytest.approx(math.sqrt(7 / 3))
    assert s.within == pytest.approx(1.3 / 3)
    one = back.over_seeds("fm", 300.0, "rdf_iae")
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.spread) and math.isnan(one.within)
    assert back.over_seeds("trf2", 300.0, "adf_iae") is None


def test_target_frames_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    f, n = 3, 5
    targets = {k: rng.normal(size=(f, n, 3)) for k in ("t1", "t2", "t1_global", "t2_global", "f0")}
    targets.update({k: rng.normal(size=(f, n)) for k in ("u_loc", "c", "v", "u_baseline", "bead_energy")})
    targets.update({k: rng.normal(size=f) for k in ("u_global", "c_global")})
    frames = TargetFrames(temperature_K=350.0, positions=rng.uniform(0, 9, (f, n, 3)), forces=rng.normal(size=(f, n, 3)),
                          box=np.full((f, 3), 9.0), potential_energy=rng.normal(size=f), bead_masses=np.full(n, 18.0),
                          step=np.array([10, 20, 30]), targets=targets, attrs={"r_e_A": 4.5, "baseline": "pair-spline"})
    frames.write(tmp_path / "T350K.h5md", "test")
    back = TargetFrames.read(tmp_path / "T350K.h5md", frames=slice(1, 3))
    assert back.temperature_K == 350.0 and back.attrs["r_e_A"] == 4.5
    assert back.attrs["beta_mol_per_kcal"] == pytest.approx(1 / (0.0019872041 * 350.0), rel=1e-6)
    np.testing.assert_array_equal(back.positions, frames.positions[1:])
    for k, v in targets.items():
        np.testing.assert_array_equal(back.targets[k], v[1:])
    with pytest.raises(ValueError, match=r"targets \['v'\] are missing"):
        TargetFrames(**{**frames.__dict__, "targets": {k: v for k, v in targets.items() if k != "v"}}).write(
            tmp_path / "bad.h5md", "test")
    assert not (tmp_path / "bad.h5md").exists()
    # a mixture's bead types travel with the targets; a file without them is one type
    typed = TargetFrames(**{**frames.__dict__, "bead_type": np.array([1, 0, 1, 1, 0]), "bead_types": ("MOH", "HOH")})
    typed.write(tmp_path / "typed.h5md", "test")
    back = TargetFrames.read(tmp_path / "typed.h5md")
    assert back.bead_type.tolist() == [1, 0, 1, 1, 0] and back.bead_types == ("MOH", "HOH")
    assert TargetFrames.read(tmp_path / "T350K.h5md").bead_type.tolist() == [0] * 5


def test_mixture_measures_round_trip():
    """Partial RDFs, their IAE and D per bead type survive results.json."""
    m = Measures(rdf_partial={"A-B": Curve(np.array([1.0, 2.0]), np.array([0.0, 1.5]))},
                 rdf_partial_iae={"A-A": Estimate(0.3, 0.01), "A-B": Estimate(0.2)},
                 D_by_type_A2_per_ps={"A": Estimate(0.5, 0.02)}, D_ratio_by_type={"A": Estimate(1.1, float("nan"))})
    back = Measures.from_json(json.loads(json.dumps(m.to_json())))
    np.testing.assert_array_equal(back.rdf_partial["A-B"].y, [0.0, 1.5])
    assert back.rdf_partial_iae["A-A"] == Estimate(0.3, 0.01) and back.D_by_type_A2_per_ps["A"].value == 0.5
    assert math.isnan(back.D_ratio_by_type["A"].error) and math.isnan(back.rdf_partial_iae["A-B"].error)
