"""Shared fixtures: the tiny water run, stage by stage (session-scoped); helpers live in
``tests/helpers.py``."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import WATER64, run_stage, tiny_config


def pytest_collection_modifyitems(config, items):
    """The browser tests need the browser extra and a Chromium: they run when ``-m`` names them
    (``pytest -m browser``), not with the slow tests of the module they live in."""
    if "browser" in (config.getoption("markexpr") or ""):
        return
    browser = [item for item in items if item.get_closest_marker("browser") is not None]
    if browser:
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if item.get_closest_marker("browser") is None]

@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory):
    """The reference stage run once on the tiny config (two temperatures in two processes)."""
    
    tmp = tmp_path_factory.mktemp("tiny")
    config = tiny_config(tmp)
    manifest = run_stage("reference", config, show_progress=False)
    return config, manifest


@pytest.fixture(scope="session")
def tiny_targets(tiny_reference):
    """The targets stage run once on the tiny reference run."""
    
    config, _ = tiny_reference
    return config, run_stage("targets", config, show_progress=False)


@pytest.fixture(scope="session")
def tiny_trained(tiny_targets):
    """The train stage run once on the tiny targets (every variant, two epochs)."""
    
    config, _ = tiny_targets
    return config, run_stage("train", config, show_progress=False)


@pytest.fixture(scope="session")
def water64():
    """The committed reference frames (tests/data/make_water64.py): 40 frames of 64 SPC/E waters
    at 300 K, all-atom (:class:`~thermocg.frames.ReferenceFrames`) and mapped to beads."""
    from thermocg.frames import read_reference
    from thermocg.mapping import map_reference

    frames = read_reference(WATER64)
    return frames, map_reference(frames)


@pytest.fixture(scope="session")
def water_model(water64):
    """An untrained HIP-NN-TS force field with the repulsive prior (float64) and the water frames
    mapped to beads."""
    from thermocg.models.prior import RepulsivePrior
    from thermocg.models.thermal import NetworkSettings, ThermalForceField, beta_of, build_network

    _, cg = water64
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        net = build_network(NetworkSettings(cutoff_A=5.0, dist_soft_max_A=4.5, n_features=8, n_sensitivities=6))
        prior = RepulsivePrior.fit(cg.positions, cg.box, cg.forces)
        model = ThermalForceField(net, prior, beta_of(300.0), order=2)
    finally:
        torch.set_default_dtype(old)
    return model, cg
