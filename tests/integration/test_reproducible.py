"""The reference stage reproduces itself: the same config and seed on the same machine, with one
OpenMM thread per temperature (what the stage picks when there are at least as many
temperatures as cores), give the same files, byte for byte.

It did not (issue 28): the PME kernel of OpenMM's CPU platform ignored the "Threads" property,
ran on every core and spread the charges in whatever order its threads took the atoms, so the
last bits of the forces varied and two runs of examples/quick.toml were 7-10 Å apart after
15 ps. What a change of thread count, machine or GPU does is in the README.
"""

from __future__ import annotations

import filecmp
import shutil
import tomllib
from pathlib import Path

import pytest

from tests.helpers import run_stage, stage_path
from thermocg.config import config_from_dict

QUICK = Path(__file__).parents[2] / "examples" / "quick.toml"


@pytest.mark.slow
def test_two_runs_of_the_quick_reference_give_identical_files(tmp_path):
    """quick.toml's [reference] and [run] sections as they are (216 waters, 3 temperatures, 2
    processes on 2 cores, 15 ps of NVT and a 4 ps NVE segment each): run, keep the files, run
    again with --force into the same directory, compare every output file's bytes."""
    data = tomllib.loads(QUICK.read_text())
    data["run"] = {**data["run"], "directory": str(tmp_path / "run"), "device": "cpu"}
    config = config_from_dict({"run": data["run"], "reference": data["reference"]}, source=QUICK)
    first = run_stage("reference", config)
    kept = tmp_path / "first"
    shutil.copytree(stage_path(config, "reference"), kept)
    second = run_stage("reference", config, force=True)
    names = sorted(name for files in second["outputs"].values() for name in files)
    assert len(names) == 2 + 3 * 2 and names == sorted(n for f in first["outputs"].values() for n in f)
    _, mismatch, errors = filecmp.cmpfiles(kept, stage_path(config, "reference"), names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    assert second["files"] == first["files"]  # the recorded checksums too
