"""The pipeline table: every stage takes its directory, config hash and upstream stages from
one row; the stages' import graph has no cycle; a new stage is a module plus one row."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import thermocg
from thermocg import pipeline
from thermocg.config import config_from_dict

SRC = Path(thermocg.__file__).parent
STAGE_PACKAGES = ("reference", "targets", "models", "simulate", "evaluate", "report")


def test_the_table_is_the_pipeline(tmp_path):
    assert [s.name for s in pipeline.STAGES] == ["reference", "targets", "train", "simulate", "evaluate", "report"]
    config = config_from_dict({"run": {"directory": str(tmp_path)}})
    # each stage's hash covers its own section and every upstream one's (as the stages always did)
    assert pipeline.stage("simulate").config_hash(config) == config.section_hash("reference", "targets", "train",
                                                                                  "simulate")
    assert pipeline.stage("report").config_hash(config) == pipeline.stage("evaluate").config_hash(config)
    assert pipeline.stage("train").section_label == "[reference]/[targets]/[train]"
    assert pipeline.stage("targets").directory(config) == tmp_path.resolve() / "targets"
    assert pipeline.upstream_closure("evaluate") == ["reference", "targets", "train", "simulate"]
    for s in pipeline.STAGES:  # a stage reads only stages before it, and its hash covers theirs
        for up in s.upstream:
            assert pipeline.STAGES.index(pipeline.stage(up)) < pipeline.STAGES.index(s)
            assert set(pipeline.stage(up).sections) <= set(s.sections)
    with pytest.raises(ValueError, match="no stage 'trian'"):
        pipeline.stage("trian")


def _imports(path: Path) -> set[str]:
    """Every thermocg module a file imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thermocg"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("thermocg"))
    return out


def test_stage_packages_import_each_other_without_cycles():
    graph = {p: set() for p in STAGE_PACKAGES}
    for p in STAGE_PACKAGES:
        for f in (SRC / p).rglob("*.py"):
            for m in _imports(f):
                parts = m.split(".")
                if len(parts) > 1 and parts[1] in graph and parts[1] != p:
                    graph[p].add(parts[1])
    # the targets stage receives its baselines; it never imports the models package
    assert "models" not in graph["targets"], graph["targets"]

    def visit(node, path):
        assert node not in path, f"import cycle {' -> '.join([*path, node])}"
        for nxt in graph[node]:
            visit(nxt, [*path, node])
    for p in STAGE_PACKAGES:
        visit(p, [])
    # the neutral modules import no stage
    for neutral in ("labels.py", "device.py", "stagedir.py", "io/records.py", "io/trajectory.py"):
        stages = {m.split(".")[1] for m in _imports(SRC / neutral) if len(m.split(".")) > 1} & set(STAGE_PACKAGES)
        assert not stages, (neutral, stages)
    # the pipeline composes the stages, but imports none when it is imported (only when one runs)
    body = ast.parse((SRC / "pipeline.py").read_text()).body
    top = {n.module for n in body if isinstance(n, ast.ImportFrom) and n.module}
    top |= {a.name for n in body if isinstance(n, ast.Import) for a in n.names}
    assert not {m.split(".")[1] for m in top if m.startswith("thermocg.")} & set(STAGE_PACKAGES), top


# -- a new stage: this module and one row ---------------------------------------------------

@dataclass(frozen=True)
class Inventory:
    """A toy record: how many files the run directory holds."""

    directory: Path
    n_files: int

    @classmethod
    def read(cls, directory):
        from thermocg.io.records import _manifest_record
        return cls(Path(directory), _manifest_record(directory, "inventory")["n_files"])


def run_inventory(config, force=False, show_progress=True):
    stage = pipeline.stage("inventory").stage_dir(config)
    manifest, config_json = stage.begin(force, config)
    if manifest is not None:
        return manifest
    n = sum(1 for _ in config.run_dir.rglob("*.toml"))
    return stage.write_manifest(True, config_json, {}, {"n_files": n}, {"n_files": n})


def describe_inventory(manifest, directory):
    return [f"inventory: {manifest['record']['n_files']} config file(s)"]


def test_a_new_stage_is_one_row(tmp_path, monkeypatch, caplog):
    import logging

    from thermocg.cli.main import build_parser, main

    row = pipeline.Stage("inventory", ("reference",), (), f"{__name__}:run_inventory", f"{__name__}:Inventory",
                         f"{__name__}:describe_inventory", "count the run's config files")
    monkeypatch.setattr(pipeline, "STAGES", (*pipeline.STAGES, row))
    monkeypatch.setattr(pipeline, "BY_NAME", {**pipeline.BY_NAME, "inventory": row})
    monkeypatch.setattr("thermocg.cli.main.STAGES", pipeline.STAGES)
    cfg = tmp_path / "run" / "c.toml"
    cfg.parent.mkdir()
    cfg.write_text('[run]\ndirectory = "."\n')
    assert "inventory" in build_parser().format_help()
    with caplog.at_level(logging.INFO):
        assert main(["inventory", str(cfg), "--quiet"]) == 0
    assert "inventory: 1 config file(s)" in caplog.text
    config = thermocg.load_config(cfg)
    got = pipeline.read(config, "inventory")
    assert isinstance(got, Inventory) and got.n_files == 1
