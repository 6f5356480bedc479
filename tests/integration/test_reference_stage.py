"""The reference stage end to end on a tiny system: physics of the samples, file format,
MDAnalysis round trip, resume, refusal to overwrite, and clear errors."""

from __future__ import annotations

import json

import MDAnalysis as mda
import numpy as np
import pytest

from tests.helpers import run_stage, stage_path, tiny_config
from thermocg import units
from thermocg.errors import ConfigError, DataFormatError, SimulationError
from thermocg.frames import read_reference
from thermocg.io.h5md import read_h5md
from thermocg.reference import engine


def _decomposition(config):
    import openmm as mm
    out = stage_path(config, "reference")
    system = mm.XmlSerializer.deserialize((out / "system.xml").read_text())
    ctx = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))
    return engine.decomposition_for(system, ctx, np.repeat(np.arange(system.getNumParticles() // 3), 3))


def _block_standard_error(x, n_blocks=5):
    blocks = np.array_split(np.asarray(x), n_blocks)
    means = np.array([b.mean() for b in blocks])
    return means.std(ddof=1) / np.sqrt(n_blocks)


def test_outputs_and_manifest(tiny_reference):
    config, manifest = tiny_reference
    out = stage_path(config, "reference")
    assert manifest["complete"] and set(manifest["outputs"]) == {"T300K", "T500K", "system"}
    assert manifest["outputs"]["system"] == ["system.pdb", "system.xml"]  # recorded, so checked like the rest
    for label, files in manifest["outputs"].items():
        for name in files:
            assert (out / name).exists()
    assert not list(out.glob(".*")), "temporary files left behind"
    assert json.loads((out / "manifest.json").read_text())["config_hash"] == config.section_hash("reference")


def test_per_molecule_energies_sum_to_total_in_every_frame(tiny_reference):
    config, _ = tiny_reference
    for t in config.reference.temperatures_K:
        f = read_reference(stage_path(config, "reference") / f"T{t:g}K.h5md")
        assert f.n_frames == config.reference.n_frames and f.n_molecules == 64
        total = f.molecule_energy.sum(axis=1)
        err = np.abs(total - f.potential_energy)
        over = np.flatnonzero(err > config.reference.energy_check_rtol * np.abs(f.potential_energy))
        assert len(over) <= 1  # only a pair on the cutoff in single precision may exceed it (rare)
        for k in over:  # ... and then that pair's energy explains the difference
            _, ambiguous = _decomposition(config).with_cutoff_ambiguity(f.positions[k], f.box[k])
            assert err[k] <= config.reference.energy_check_rtol * abs(f.potential_energy[k]) + ambiguous
        stored = read_h5md(f.source).elements["thermocg/decomposition_error"]
        np.testing.assert_allclose(stored, total - f.potential_energy, atol=1e-9)


def test_kinetic_temperature_matches_target(tiny_reference):
    """Mean kinetic temperature within 4 block standard errors (false-failure rate ~1e-4 for a
    Gaussian mean; frames 0.1 ps apart are correlated, which the blocks absorb), plus the known
    O(dt^2) bias of kinetic energies from the half-step velocities of a 2 fs leapfrog-type
    integrator: <m v_half^2> = kT / (1 - (w dt / 2)^2) for a mode of frequency w; water's
    librations (~700 cm^-1) give about +1 % at 2 fs (measured here: 304 +- 3 K at 300 K over 20 ps)."""
    config, _ = tiny_reference
    for t in config.reference.temperatures_K:
        d = read_h5md(stage_path(config, "reference") / f"T{t:g}K.h5md")
        temps = d.elements["observables/temperature"]
        # recompute from the stored kinetic energy and the stored number of degrees of freedom
        np.testing.assert_allclose(temps, units.kinetic_temperature(
            d.elements["observables/kinetic_energy"], d.attrs["n_dof"]))
        assert d.attrs["n_dof"] == 64 * 6 - 3
        se = max(_block_standard_error(temps), 0.5)
        assert abs(temps.mean() - t) < 4 * se + 0.02 * t, (temps.mean(), t, se)
        assert abs(temps.mean() - t) > 0 and np.std(temps) > 0.02 * t  # a thermostat, not a fixed velocity scale


def test_density_and_box_match_config(tiny_reference):
    config, _ = tiny_reference
    f = read_reference(stage_path(config, "reference") / "T300K.h5md")
    volume = np.prod(f.box, axis=1)
    density = f.masses.sum() / volume * units.AMU_PER_A3_TO_G_PER_CM3
    np.testing.assert_allclose(density, config.reference.density_g_cm3, rtol=1e-6)


def test_molecules_stay_whole_and_positions_unwrapped(tiny_reference):
    config, _ = tiny_reference
    f = read_reference(stage_path(config, "reference") / "T500K.h5md")
    x = f.positions.reshape(f.n_frames, 64, 3, 3)
    r_oh = np.linalg.norm(x[:, :, 1:] - x[:, :, :1], axis=-1)
    np.testing.assert_allclose(r_oh, 1.0, atol=1e-4)  # rigid SPC/E, O-H 1 Å, molecules whole


def test_mdanalysis_reads_the_files(tiny_reference):
    config, _ = tiny_reference
    out = stage_path(config, "reference")
    ours = read_reference(out / "T300K.h5md")
    u = mda.Universe(str(out / "system.pdb"), str(out / "T300K.h5md"))
    assert u.trajectory.n_frames == ours.n_frames and len(u.atoms) == 192
    assert u.trajectory.units["length"] == "Angstrom"
    for i in (0, ours.n_frames - 1):
        ts = u.trajectory[i]
        np.testing.assert_allclose(ts.positions, ours.positions[i], rtol=1e-6, atol=1e-4)
        # MDAnalysis converts to its base force unit kJ/(mol Å): the unit attribute was read
        np.testing.assert_allclose(ts.forces / 4.184, ours.forces[i], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(ts.velocities, ours.velocities[i], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(ts.dimensions[:3], ours.box[i], rtol=1e-6)
        assert ts.data["step"] == ours.step[i]
    nve = mda.Universe(str(out / "system.pdb"), str(out / "T300K-nve00.h5md"))
    assert nve.trajectory.n_frames == 51


def test_nve_segment_starts_from_a_sampled_frame_and_conserves_energy(tiny_reference):
    config, _ = tiny_reference
    out = stage_path(config, "reference")
    nvt = read_reference(out / "T300K.h5md")
    d = read_h5md(out / "T300K-nve00.h5md")
    start = d.attrs["start_frame"]
    np.testing.assert_allclose(d.elements["particles/all/position"][0], nvt.positions[start], atol=1e-3)
    e = d.elements["observables/total_energy"]
    ke = d.elements["observables/kinetic_energy"]
    # velocity Verlet at 1 fs: total-energy fluctuations are a small fraction of the kinetic fluctuations
    assert np.std(e) < 0.2 * np.std(ke), (np.std(e), np.std(ke))


def test_rerun_does_nothing(tiny_reference):
    config, manifest = tiny_reference
    out = stage_path(config, "reference")
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert run_stage("reference", config, show_progress=False) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_changed_config_is_refused(tiny_reference, tmp_path):
    config, _ = tiny_reference
    changed = config.model_copy(update={"reference": config.reference.model_copy(update={"n_frames": 39})})
    with pytest.raises(ConfigError, match="different \\[reference\\] config.*--force"):
        run_stage("reference", changed, show_progress=False)


# -- interruption, failure, corruption: a one-temperature run ------------------------------

def _small(tmp_path, name="run", **kw):
    settings = {"temperatures_K": [350.0], "n_frames": 8, "equilibration_ps": 0.4,
                "nve": {"n_segments": 1, "length_ps": 0.2, "frame_interval_fs": 20.0, "timestep_fs": 1.0}, **kw}
    c = tiny_config(tmp_path / name, **settings)
    return c.model_copy(update={"run": c.run.model_copy(update={"processes": 1})})


@pytest.mark.slow  # ~20 s on 2 cores; CI runs it
def test_interrupted_run_resumes_to_the_same_frames(tmp_path, monkeypatch):
    """Interrupt mid-sampling, re-run: the same frames as an uninterrupted run (one OpenMM
    thread, the only reproducible setting). Frames written before the interruption are
    bitwise equal; after the resume the CPU platform's internal atom reordering changes the
    summation order, so trajectories differ by round-off that grows chaotically (observed
    1e-6 Å after 50 steps, 6e-5 Å after 300). A lost random stream or a wrong state would
    differ by the thermostat's noise, ~0.1 Å after 50 steps."""
    from thermocg import workers
    monkeypatch.setattr(workers, "plan_processes", lambda setting, n, gpu: (1, 1))
    reference = _small(tmp_path, "straight")
    run_stage("reference", reference, show_progress=False)
    want = read_reference(stage_path(reference, "reference") / "T350K.h5md")

    config = _small(tmp_path, "interrupted")
    real_step = engine.step
    calls = {"n": 0}

    def interrupting_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # equilibration is 4 chunks: 2 frames are in when this fires
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "step", interrupting_step)
    with pytest.raises(KeyboardInterrupt):
        run_stage("reference", config, show_progress=False)
    out = stage_path(config, "reference")
    assert not (out / "T350K.h5md").exists()
    assert read_h5md(out / ".T350K.h5md.part").elements["particles/all/position"].shape[0] == 2
    monkeypatch.setattr(engine, "step", real_step)

    run_stage("reference", config, show_progress=False)
    got = read_reference(out / "T350K.h5md")
    assert got.n_frames == 8
    np.testing.assert_array_equal(got.step, want.step)
    assert len(np.unique(got.step)) == 8
    for name in ("positions", "velocities", "forces", "potential_energy", "molecule_energy"):
        np.testing.assert_array_equal(getattr(got, name)[:2], getattr(want, name)[:2], err_msg=name)
    dx = np.abs(got.positions - want.positions).max(axis=(1, 2))
    assert dx[2] < 1e-5 and dx.max() < 1e-3, dx


@pytest.mark.slow  # ~5 s on 2 cores; CI runs it
def test_nan_energy_stops_and_keeps_written_frames(tmp_path, monkeypatch):
    config = _small(tmp_path)
    real = engine.snapshot
    calls = {"n": 0}

    def poisoned(context, forces=True):
        s = real(context, forces)
        if forces:
            calls["n"] += 1
            if calls["n"] == 3:
                return type(s)(**{**s.__dict__, "potential_energy": float("nan")})
        return s

    monkeypatch.setattr(engine, "snapshot", poisoned)
    with pytest.raises(SimulationError, match=r"T350K.*not finite at step \d+; 2 complete frames are kept"):
        run_stage("reference", config, show_progress=False)
    out = stage_path(config, "reference")
    assert not (out / "T350K.h5md").exists()
    assert read_h5md(out / ".T350K.h5md.part").elements["particles/all/position"].shape[0] == 2


@pytest.mark.slow  # ~4 s on 2 cores; CI runs it
def test_exploding_simulation_is_a_clear_error(tmp_path):
    config = _small(tmp_path, timestep_fs=40.0, frame_interval_ps=0.4, equilibration_ps=0.4)
    with pytest.raises(SimulationError, match="T350K"):
        run_stage("reference", config, show_progress=False)


@pytest.mark.slow  # ~5 s on 2 cores; CI runs it
def test_corrupt_existing_output_is_reported(tmp_path):
    config = _small(tmp_path)
    out = stage_path(config, "reference")
    out.mkdir(parents=True)
    (out / "T350K.h5md").write_bytes(b"not hdf5 at all")
    with pytest.raises(DataFormatError, match=r"T350K\.h5md: not a readable HDF5 file"):
        run_stage("reference", config, show_progress=False)


@pytest.mark.slow  # ~23 s on 2 cores; CI runs it
def test_deleted_output_is_regenerated_and_foreign_file_refused(tmp_path):
    config = _small(tmp_path)
    run_stage("reference", config, show_progress=False)
    out = stage_path(config, "reference")
    nve = out / "T350K-nve00.h5md"
    nve.unlink()
    run_stage("reference", config, show_progress=False)  # regenerates only the missing segment
    assert nve.exists() and read_h5md(nve).elements["particles/all/position"].shape[0] == 11
    # a file from another config in place of an output (no manifest to catch it first)
    (out / "manifest.json").unlink()
    other = _small(tmp_path, "other")
    changed = other.model_copy(update={"run": other.run.model_copy(update={"seed": 99})})
    run_stage("reference", changed, show_progress=False)
    (out / "T350K.h5md").unlink()
    (stage_path(changed, "reference") / "T350K.h5md").rename(out / "T350K.h5md")
    with pytest.raises(DataFormatError, match=r"T350K\.h5md: made by a different \[reference\] config"):
        run_stage("reference", config, show_progress=False)


def test_cli_prints_one_line_for_a_bad_config(tmp_path, capsys):
    from thermocg.cli.main import main
    p = tmp_path / "bad.toml"
    p.write_text("[reference]\nn_molecules = 64\n")
    assert main(["reference", str(p), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.toml" in err[0] and "cutoff_A" in err[0]
