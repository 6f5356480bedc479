"""Config: defaults, validation messages (file, field, expected, found), hashing."""

from __future__ import annotations

import pytest

from thermocg.config import ENGINE_TIMESTEPS_FS, config_from_dict, load_config
from thermocg.errors import ConfigError


def test_defaults_are_the_design_defaults():
    c = config_from_dict({})
    r = c.reference
    assert r.n_molecules == 512 and r.water_model == "spce" and r.cutoff_A == 9.0
    assert r.temperatures_K == (250, 275, 300, 350, 400, 450, 500, 600, 700)
    assert r.ewald_error_tolerance == 1e-5 and r.timestep_fs == 2.0 and r.friction_per_ps == 1.0
    # 512 molecules of 18.0153 g/mol at 0.997 g/cm3: V = 512 * 18.0153 / 0.997 / 0.602214 Å^3
    assert r.box_length_A == pytest.approx((512 * 18.015324 / 0.997 / 0.602214076) ** (1 / 3), rel=1e-9)


def test_config_is_frozen():
    c = config_from_dict({})
    with pytest.raises(Exception):
        c.reference.n_molecules = 3


def _message(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert msg.startswith(str(p)), msg
    assert "\n" not in msg
    return msg


def test_unknown_key_names_file_and_key(tmp_path):
    msg = _message(tmp_path, "[reference]\ntemperature_K = [300.0]\n")
    assert "unknown key 'reference.temperature_K'" in msg


def test_unknown_section(tmp_path):
    assert "unknown key 'refrence'" in _message(tmp_path, "[refrence]\nn_molecules = 3\n")


def test_nonpositive_temperature(tmp_path):
    msg = _message(tmp_path, "[reference]\ntemperatures_K = [300.0, -5.0]\n")
    assert "reference.temperatures_K[1]" in msg and "greater than 0" in msg and "found -5.0" in msg


def test_zero_temperature(tmp_path):
    assert "temperatures_K[0]" in _message(tmp_path, "[reference]\ntemperatures_K = [0.0]\n")


def test_box_too_small_for_cutoff(tmp_path):
    msg = _message(tmp_path, "[reference]\nn_molecules = 64\ncutoff_A = 9.0\n")
    assert "cutoff_A = 9" in msg and "12.43 Å" in msg and "64 molecules" in msg


def test_wrong_type(tmp_path):
    msg = _message(tmp_path, "[reference]\nn_molecules = 'many'\n")
    assert "reference.n_molecules" in msg and "'many'" in msg


def test_interval_not_multiple_of_timestep(tmp_path):
    msg = _message(tmp_path, "[reference]\nframe_interval_ps = 0.003\n")
    assert "frame_interval_ps" in msg and "timestep_fs" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_bad_toml(tmp_path):
    assert "not valid TOML" in _message(tmp_path, "[reference\n")


def test_run_dir_relative_to_config_file(tmp_path):
    p = tmp_path / "sub" / "c.toml"
    p.parent.mkdir()
    p.write_text('[run]\ndirectory = "out"\n')
    assert load_config(p).run_dir == (tmp_path / "sub" / "out").resolve()


def test_hash_tracks_what_changes_outputs():
    a = config_from_dict({})
    assert a.section_hash("reference") == config_from_dict({"run": {"device": "cpu", "processes": 1}}).section_hash(
        "reference")
    assert a.section_hash("reference") != config_from_dict({"run": {"seed": 1}}).section_hash("reference")
    assert a.section_hash("reference") != config_from_dict(
        {"reference": {"n_frames": 99}}).section_hash("reference")


def test_keys_added_later_leave_existing_hashes_alone():
    """The restrained-sampling keys (issue 15) are not hashed while method = "regression", so run
    directories made before they existed stay up to date; they count once method = "restrained"
    uses them. "restrained" became the default (issue 29): a regression run of before, which did
    not name the method, hashes as it did when it names it now, and the new default is a new run."""
    from thermocg.config import _ADDED_KEYS, _hashed

    base = config_from_dict({"targets": {"method": "regression"}})
    assert not set(_hashed("targets", base.targets)) & set(_ADDED_KEYS["targets"])
    h = base.section_hash("targets")
    assert config_from_dict({"targets": {"method": "regression", "restraint_k": 500.0}}).section_hash(
        "targets") == h  # unused
    restrained = config_from_dict({"targets": {"method": "restrained"}}).section_hash("targets")
    assert restrained != h
    assert config_from_dict({}).section_hash("targets") == restrained  # the default
    stiffer = config_from_dict({"targets": {"method": "restrained", "restraint_k": 500.0}}).section_hash("targets")
    assert stiffer not in (h, restrained)
    assert config_from_dict({"targets": {"method": "regression", "r_e_A": 7.0}}).section_hash(
        "targets") != h  # an old key still counts
    # a restrained run hashes its restrained keys even at their defaults: restraint_k's default
    # moved from 1000 to 4000, and a run sampled at 1000 must not pass for one at 4000
    assert "restraint_k" in _hashed("targets", config_from_dict({"targets": {"method": "restrained"}}).targets)
    old_default = config_from_dict({"targets": {"method": "restrained", "restraint_k": 1000.0}})
    assert old_default.section_hash("targets") != restrained
    # the train key added with them
    assert config_from_dict({"train": {"target_weighting": "uniform"}}).section_hash("train") == \
        base.section_hash("train")
    assert config_from_dict({"train": {"target_weighting": "inverse-variance"}}).section_hash("train") != \
        base.section_hash("train")
    # multiple time stepping (issue 16), in [simulate] and its [simulate.nve] subsection
    sim = _hashed("simulate", base.simulate)
    assert "mts_substeps" not in sim and "mts_substeps" not in sim["nve"] and "timestep_fs" in sim["nve"]
    for change in ({"mts_substeps": 2}, {"nve": {"mts_substeps": 2}}):
        assert config_from_dict({"simulate": change}).section_hash("simulate") != base.section_hash("simulate")
    # the import keys (issue 17), one of them a tuple: at their defaults, the reference hash of
    # every earlier run stands
    assert not set(_hashed("reference", base.reference)) & set(_ADDED_KEYS["reference"])
    # the engine (issue 16): hippynn's graph is what every earlier simulate stage ran, so a config
    # that names it hashes as one without the key; the default inference form is another run
    assert "engine" in sim
    hippynn = config_from_dict({"simulate": {"engine": "hippynn"}})
    assert "engine" not in _hashed("simulate", hippynn.simulate)
    assert hippynn.section_hash("simulate") != base.section_hash("simulate")


def test_distilled_settings():
    base = config_from_dict({})
    # they count only with engine = "distilled"
    assert config_from_dict({"simulate": {"distilled_frames": 5}}).section_hash("simulate") == \
        base.section_hash("simulate")
    distilled = config_from_dict({"simulate": {"engine": "distilled"}})
    assert config_from_dict({"simulate": {"engine": "distilled", "distilled_frames": 5}}).section_hash(
        "simulate") != distilled.section_hash("simulate")
    with pytest.raises(ConfigError, match="distilled_r3_A = 7 Å"):
        config_from_dict({"simulate": {"engine": "distilled", "distilled_r3_A": 7.0}})
    with pytest.raises(ConfigError, match="distilled_r3_A = 2 Å"):
        config_from_dict({"simulate": {"engine": "distilled", "distilled_r3_A": 2.0}})
    assert config_from_dict({"simulate": {"engine": "distilled", "distilled_r3_A": 0.0}}).simulate.distilled_r3_A == 0


def test_unset_timesteps_are_the_engines_measured_defaults():
    """[simulate] and [simulate.nve] timestep_fs, unset, take the engine's default; a value in the
    config wins; the resolved value is what the hash sees (a run at the old 4 fs default is not up
    to date under the new one); an interval that the timestep does not divide names the section and,
    for an unset timestep, the engine's default; an nve object passed in is not changed."""
    for engine, (langevin, nve) in ENGINE_TIMESTEPS_FS.items():
        c = config_from_dict({"simulate": {"engine": engine}}).simulate
        assert (c.timestep_fs, c.nve.timestep_fs) == (langevin, nve)
    c = config_from_dict({"simulate": {"timestep_fs": 4.0, "nve": {"timestep_fs": 2.0}}})
    assert (c.simulate.timestep_fs, c.simulate.nve.timestep_fs) == (4.0, 2.0)
    langevin, nve = ENGINE_TIMESTEPS_FS["fast"]
    explicit = config_from_dict({"simulate": {"timestep_fs": langevin, "nve": {"timestep_fs": nve}}})
    assert explicit.section_hash("simulate") == config_from_dict({}).section_hash("simulate")
    assert c.section_hash("simulate") != explicit.section_hash("simulate")
    with pytest.raises(ConfigError, match="simulate.nve.: frame_interval_fs .100 fs. must be a whole multiple of "
                       "timestep_fs .3 fs"):
        config_from_dict({"simulate": {"nve": {"timestep_fs": 3.0}}})
    with pytest.raises(ConfigError, match="frame_interval_ps .2 fs. must be a whole multiple of timestep_fs .5 fs, "
                       "engine 'fast''s default: it is unset"):
        config_from_dict({"simulate": {"frame_interval_ps": 0.002}})
    with pytest.raises(ConfigError, match="nve.frame_interval_fs .2.5 fs. must be a whole multiple of nve.timestep_fs "
                       ".2 fs, engine 'distilled''s default: it is unset"):
        config_from_dict({"simulate": {"engine": "distilled", "nve": {"frame_interval_fs": 2.5}}})
    with pytest.raises(ConfigError, match="length_ps .1000 fs. must be a whole multiple of frame_interval_fs .300 fs"):
        config_from_dict({"simulate": {"nve": {"length_ps": 1.0, "frame_interval_fs": 300.0}}})  # timestep unset
    from thermocg.config import SimulateNVESection, SimulateSection

    shared = SimulateNVESection()
    assert SimulateSection(engine="fast", nve=shared).nve.timestep_fs == nve
    assert SimulateSection(engine="distilled", nve=shared).nve.timestep_fs == ENGINE_TIMESTEPS_FS["distilled"][1]
    assert shared.timestep_fs is None


def test_the_timestep_defaults_follow_the_timestep_study():
    """The defaults are no larger than the largest timesteps that passed the issue-32 study
    (bench/timestep.py: g(r), ADF and D within noise of 2 fs at 250-700 K; NVE drift below 0.01
    kB T per DOF per ns) for each form, and divide the usual frame intervals."""
    import json
    from pathlib import Path

    results = Path(__file__).resolve().parents[2] / "bench" / "results"
    for engine, form in (("fast", "network"), ("distilled", "distilled_compressed")):
        study = json.loads((results / f"issue32_timestep_{form}.json").read_text())
        langevin, nve = ENGINE_TIMESTEPS_FS[engine]
        assert langevin <= study["largest_langevin_timestep_fs"] and nve <= study["largest_nve_timestep_fs"]
        assert study["largest_nve_timestep_fs"] == nve  # the largest that passed, not a smaller one
        assert all(abs(fs / langevin - round(fs / langevin)) < 1e-9 for fs in (100.0, 500.0, 1000.0))
    # the network's default, chosen between two passing timesteps, was run and passed too
    five = json.loads((results / "issue32_timestep_network_5fs.json").read_text())
    assert five["langevin_pass"][f"{ENGINE_TIMESTEPS_FS['fast'][0]:g}x1"] is True
    distilled = json.loads((results / "issue32_timestep_distilled_compressed.json").read_text())
    assert distilled["langevin_pass"][f"{ENGINE_TIMESTEPS_FS['distilled'][0]:g}x1"] is True
    assert set(five["temperatures"]) == {"250", "300", "500", "700"}
    assert ENGINE_TIMESTEPS_FS["hippynn"] == ENGINE_TIMESTEPS_FS["fast"]  # the same function


def test_multiple_time_steps_need_the_fast_engine():
    with pytest.raises(ConfigError, match="mts_substeps > 1 needs engine"):
        config_from_dict({"simulate": {"engine": "hippynn", "nve": {"mts_substeps": 3}}})
    assert config_from_dict({"simulate": {"engine": "hippynn", "mts_substeps": 1}}).simulate.mts_substeps == 1


def test_examples_are_valid():
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "examples"
    for name in ("quick.toml", "water.toml"):
        load_config(root / name)


def test_train_T0_must_be_a_reference_temperature(tmp_path):
    msg = _message(tmp_path, "[reference]\ntemperatures_K = [250.0, 400.0]\n[train]\nT0_K = 300.0\n")
    assert "train temperature 300 K (T0_K or training_temperatures_K) is not one of" in msg
    msg = _message(tmp_path, "[reference]\ntemperatures_K = [300.0]\n[train]\ntraining_temperatures_K = [350.0]\n")
    assert "train temperature 350 K" in msg


@pytest.mark.parametrize("text, expect", [
    # numbers that must be finite (inf used to pass, or to raise OverflowError)
    ("[reference]\ntemperatures_K = [300.0, inf]\n", "reference.temperatures_K[1]': expected a finite number, found inf"),
    ("[reference]\nequilibration_ps = inf\n", "reference.equilibration_ps': expected a finite number"),
    ("[reference.nve]\nlength_ps = inf\n", "reference.nve.length_ps': expected a finite number"),
    ("[reference]\nframe_interval_ps = inf\n", "reference.frame_interval_ps': expected a finite number"),
    ("[train]\nlearning_rate = inf\n", "train.learning_rate': expected a finite number"),
    ("[train]\nlearning_rate = nan\n", "train.learning_rate': expected a finite number"),
    # a boolean is not a number, nor a number a boolean
    ("[reference]\nn_frames = true\n", "reference.n_frames': expected a valid integer, found True"),
    ("[reference]\ntimestep_fs = true\n", "reference.timestep_fs': expected a valid number, found True"),
    ("[train]\nshared_representation = 1\n", "train.shared_representation': expected a valid boolean, found 1"),
    # a frame interval of zero steps (it looped forever and filled the disk)
    ("[reference.nve]\nframe_interval_fs = 1e-300\n", "frame_interval_fs (1e-300 fs) must be at least one timestep_fs"),
    ("[simulate]\nframe_interval_ps = 1e-300\n", "frame_interval_ps (1e-297 fs) must be at least one timestep_fs"),
    # cross-section rules, known at load time
    ("[simulate]\nn_frames = 3\n[simulate.nve]\nn_segments = 4\n", "nve.n_segments = 4 exceeds n_frames = 3"),
    ("[reference]\nn_frames = 10\n[train]\ntest_frames = 9\n", "leaves 1 training frame(s) of reference.n_frames = 10"),
    ("[train]\nloss_weights = [0.0, 1.0, 1.0]\n", "loss_weights must be >= 0 with the order-0 weight > 0"),
    ("[train]\nloss_weights = [1.0, -1.0, 1.0]\n", "found [1.0, -1.0, 1.0]"),
    ("[train]\nloss_weights = [nan, 1.0, 1.0]\n", "train.loss_weights[0]': expected a finite number"),
    ("[evaluate]\nmsd_fit_window = [0.6, 0.2]\n", "0 <= start < end <= 1 (fractions of the longest lag), found [0.6, 0.2]"),
    ("[reference]\ntemperatures_K = [250.0, 500.0]\n", "train temperature 300 K (T0_K or training_temperatures_K) is "
                                                       "not one of reference.temperatures_K [250.0, 500.0]"),
    # restrained targets (issue 15)
    ('[targets]\nmethod = "restrained"\nrestrained_configurations = 95\n[reference]\nn_frames = 100\n'
     '[train]\ntest_frames = 10\n', "restrained_configurations = 95 exceeds the 90 training frames"),
    ('[targets]\nmethod = "restrained"\nrestrained_interval_fs = 5.0\n',
     "targets.restrained_interval_fs (5 fs) must be a whole multiple of reference.timestep_fs (2 fs)"),
    ("[targets]\nrestrained_samples = 20\nrestrained_blocks = 10\n", "restrained_blocks = 10: at most"),
    ('[targets]\nmethod = "restrained"\nrestrained_temperatures_K = [310.0]\n',
     "targets.restrained_temperatures_K: 310 K is not one of reference.temperatures_K"),
    ('[targets]\nmethod = "restrained"\nrestrained_temperatures_K = [250.0]\n[train]\nvariants = ["fm", "trf1"]\n',
     "train.variants has trf1, which needs thermal targets at 300 K, but targets.restrained_temperatures_K = "
     "[250.0] leaves it out"),
    ("[targets]\nrestrained_offset_radius_A = -1.0\n", "restrained_offset_radius_A"),
    # the regression variants and the restrained W0 (issue 29) need the other method
    ('[targets]\nmethod = "regression"\n[train]\nvariants = ["fm", "trf2-regression"]\n',
     "train.variants ['trf2-regression']: with targets.method = \"regression\" trf1 and trf2 already have "
     "regression targets"),
    ('[targets]\nmethod = "regression"\n[train]\nw0_targets = "restrained"\n',
     'train.w0_targets = "restrained" fits W0 to restrained mean forces'),
])
def test_every_rule_the_config_can_know_is_checked_at_load(tmp_path, text, expect):
    assert expect in _message(tmp_path, text)


@pytest.mark.parametrize("text, expect", [
    ("[train]\nvariants = []\n", "train.variants': expected Tuple should have at least 1 item"),
    ('[train]\nvariants = ["fm", "fm"]\n', "variants has duplicates: ['fm', 'fm']"),
    ("[reference]\ntemperatures_K = [300.0, 300.0000001, 400.0]\n", "(T300K) would write the same files"),
    ("[evaluate]\nviscosity_mPa_s = {T300 = 0.73}\n", "evaluate.viscosity_mPa_s: ['T300'] name no temperature"),
    ("[evaluate]\nrdf_bins = 99999999999999999999999\n", "evaluate.rdf_bins"),
])
def test_inputs_that_used_to_fail_late_are_refused_at_load(tmp_path, text, expect):
    assert expect in _message(tmp_path, text)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    p = tmp_path / "c.toml"
    p.write_bytes(b"# temperatures in \xb0K\n[run]\n")
    with pytest.raises(ConfigError, match=r"c.toml: not UTF-8 text \(byte 18: b'\\xb0'\)"):
        load_config(p)


def test_run_directory_expands_the_home_directory(tmp_path):
    from pathlib import Path

    c = config_from_dict({"run": {"directory": "~/thermocg-runs/x"}}, source=tmp_path / "c.toml")
    assert c.run_dir == Path.home().resolve() / "thermocg-runs" / "x"


def test_the_reference_stage_records_the_checksums_of_the_users_files(tmp_path):
    """Every file the reference stage reads is in Config.user_files, resolved against the
    config file's directory, and the reference stage's directory checks them (an edited PDB
    or force field makes the stage run again: tests/unit/test_stagedir.py); OpenMM's built-in
    force-field names are not files."""
    from thermocg import pipeline

    (tmp_path / "ff.xml").write_text("<ForceField/>")
    cfg = tmp_path / "pdb.toml"
    cfg.write_text('[reference]\nsystem = "pdb"\npdb = "box.pdb"\nforcefield = ["ff.xml", "tip3p.xml"]\n')
    pdb = load_config(cfg)
    assert pdb.user_files() == [tmp_path / "box.pdb", tmp_path / "ff.xml"]
    cfg = tmp_path / "files.toml"
    cfg.write_text('[reference]\nsource = "files"\nformat = "lammps-dump"\nlammps_data = "~/w.data"\n'
                   '[[reference.data]]\ntemperature_K = 300\nframes = "a/T300.dump"\nnve = ["n0.dump", "n1.dump"]\n'
                   '[[reference.data]]\ntemperature_K = 400\nframes = "/abs/T400.dump"\nnve = ["n2.dump", "n3.dump"]\n'
                   '[reference.nve]\nn_segments = 2\n')
    files = load_config(cfg)
    from pathlib import Path
    assert files.user_files() == [tmp_path / "a/T300.dump", tmp_path / "n0.dump", tmp_path / "n1.dump",
                                  Path("/abs/T400.dump"), tmp_path / "n2.dump", tmp_path / "n3.dump",
                                  Path("~/w.data").expanduser().resolve()]
    assert config_from_dict({}).user_files() == []  # thermocg's own water: nothing of the user's
    for config in (pdb, files):
        assert pipeline.stage("reference").stage_dir(config).files == tuple(config.user_files())
        assert pipeline.stage("targets").stage_dir(config).files == ()  # it reads the reference's outputs


def test_restrained_targets_are_the_default_but_an_imported_reference_regresses(tmp_path):
    """Issue 29: restrained thermal targets by default; an imported reference (no OpenMM system to
    sample) falls back to regression when the method is not set, and is refused when it is."""
    assert config_from_dict({}).targets.method == "restrained"
    frames = tmp_path / "T300K.h5md"
    imported = {"reference": {"source": "files", "temperatures_K": [300.0], "nve": {"n_segments": 0},
                              "data": [{"temperature_K": 300.0, "frames": str(frames)}]},
                "train": {"variants": ["fm", "trf2"]}}
    assert config_from_dict(imported).targets.method == "regression"
    with pytest.raises(ConfigError, match='reference.source = "files" does not have; use method = "regression"'):
        config_from_dict({**imported, "targets": {"method": "restrained"}})


def test_restrained_configurations_default_to_the_training_frames_when_fewer():
    """Unset, restrained_configurations is 25 or every training frame when there are fewer (a
    small config need not name it); set, it is checked against the frames."""
    nve = {"n_segments": 0}
    assert config_from_dict({}).targets.restrained_configurations == 25
    assert config_from_dict({"reference": {"n_frames": 30, "nve": nve},
                             "train": {"test_frames": 10}}).targets.restrained_configurations == 20
    with pytest.raises(ConfigError, match="restrained_configurations = 25 exceeds the 3 training frames"):
        config_from_dict({"reference": {"n_frames": 3, "nve": nve}, "targets": {"restrained_configurations": 25}})
