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
from thermocg.stagedir import StageContext, StageResult

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


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module_name(p): p for p in SRC.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The thermocg modules a file imports, at module level or inside functions (a function's
    import is a dependency at run time all the same). ``from thermocg import __version__`` reads
    a constant of the root package, the lazy facade of the public API (tested below), and is no
    edge."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thermocg"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                out.update(".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in MODULES)
    return {m for m in out if m in MODULES and m != "thermocg"}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _cycle(graph: dict) -> list[str] | None:
    """One import cycle of ``graph`` (node -> nodes it imports), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle_anywhere_in_the_package():
    """Every module of the package, imports inside functions included: no circle of imports
    (a stage module importing the pipeline that runs it was one, invisible at module level)."""
    assert len(MODULES) > 40 and "thermocg.tasks" in GRAPH["thermocg.reference.stage"]
    assert _cycle(GRAPH) is None, " -> ".join(_cycle(GRAPH))
    # and between the stages' packages: data flows one way (reference -> ... -> report)
    package = lambda m: m.split(".")[1] if len(m.split(".")) > 2 else None  # noqa: E731
    packages = {p: set() for p in STAGE_PACKAGES}
    for m, deps in GRAPH.items():
        if package(m) in packages:
            packages[package(m)] |= {package(d) for d in deps if package(d) in packages} - {package(m)}
    assert _cycle(packages) is None, " -> ".join(_cycle(packages))
    # the test sees a circle when there is one
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_stage_module_imports_the_pipeline():
    """The envelope belongs to the pipeline: stages get a StageContext, never the pipeline."""
    importers = sorted(m for m, deps in GRAPH.items() if "thermocg.pipeline" in deps)
    assert importers == ["thermocg.cli.main"], importers
    # the executor's backends do not import each other
    assert "thermocg.cluster" not in GRAPH["thermocg.workers"] and "thermocg.workers" not in GRAPH["thermocg.cluster"]
    # the root package is a lazy facade: it imports nothing when imported
    body = ast.parse((SRC / "__init__.py").read_text()).body
    assert not [n for n in body if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_the_pipeline_imports_no_stage_when_imported():
    """It composes the stages by name; a stage's modules (OpenMM, torch) load when it runs."""
    body = ast.parse((SRC / "pipeline.py").read_text()).body
    top = {n.module for n in body if isinstance(n, ast.ImportFrom) and n.module}
    top |= {a.name for n in body if isinstance(n, ast.Import) for a in n.names}
    assert not {m.split(".")[1] for m in top if m.startswith("thermocg.")} & set(STAGE_PACKAGES), top
    # the neutral modules import no stage
    for neutral in ("labels.py", "device.py", "stagedir.py", "tasks.py", "io/records.py", "io/trajectory.py"):
        deps = _imports(SRC / neutral)
        stages = {m.split(".")[1] for m in deps if len(m.split(".")) > 1} & set(STAGE_PACKAGES)
        assert not stages, (neutral, stages)


# -- a new stage: this module and one row ---------------------------------------------------

@dataclass(frozen=True)
class Inventory:
    """A toy record: how many files the run directory holds."""

    directory: Path
    n_files: int

    @classmethod
    def read(cls, directory):
        from thermocg.io.records import manifest_record
        return cls(Path(directory), manifest_record(directory, "inventory")["n_files"])


def run_inventory(ctx: StageContext) -> StageResult:
    n = sum(1 for _ in ctx.config.run_dir.rglob("*.toml"))
    return StageResult({}, {"n_files": n}, {"n_files": n})


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
