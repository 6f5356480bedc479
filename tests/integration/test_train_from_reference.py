"""One command from reference data to a trained trf2 model: the pipeline runs the targets
stage (here with HIP-NN-TS baselines, which the targets stage picks by its config) and then trains."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from thermocg import load_model
from thermocg.config import config_from_dict
from thermocg.io.h5md import read_h5md
from thermocg import pipeline
from tests.helpers import TINY, stage_path

# slow: trains HIP-NN-TS baselines: ~10 s on 2 cores; CI runs it (`pytest -m slow`)
pytestmark = pytest.mark.slow


def test_train_runs_hipnn_baselines_and_targets_first(tiny_reference, tmp_path):
    config, _ = tiny_reference
    data = {**TINY, "run": {**TINY["run"], "directory": str(tmp_path / "run")},
            "targets": {**TINY["targets"], "baseline": "hipnn", "cv_folds": 2, "baseline_max_epochs": 1,
                        "baseline_n_features": 8},
            "train": {**TINY["train"], "variants": ["trf2"], "training_temperatures_K": [], "max_epochs": 1}}
    mine = config_from_dict(data, source=tmp_path / "config.toml")
    # the reference stage is the same config
    shutil.copytree(stage_path(config, "reference"), stage_path(mine, "reference"))

    manifest = pipeline.run(mine, ["targets", "train"], show_progress=False)["train"]
    assert manifest["complete"] and (stage_path(mine, "train") / "trf2.pt").exists()
    el = read_h5md(stage_path(mine, "targets") / "T300K.h5md")
    assert el.attrs["baseline"] == "hipnn" and "baseline_knots_A" not in el.attrs
    t2 = el.elements["thermocg/t2"]
    assert t2.shape == (40, 64, 3) and np.all(np.isfinite(t2)) and np.abs(t2).max() > 0
    model = load_model(stage_path(mine, "train") / "trf2.pt")
    assert model.metadata["source_files"] == ["T300K.h5md"]
    # the targets stage is now up to date: a second call trains nothing and fits nothing
    assert pipeline.run(mine, ["targets", "train"], show_progress=False)["train"] == manifest
