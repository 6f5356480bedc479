"""The config reference, written from the pydantic models of :mod:`thermocg.config` (issue 30).

Every section's keys with their type, default and constraints, and the words of the ``#:``
comment above them in config.py (the one place a key is described: a comment above several keys
describes them together, as in the source). The documentation site builds its "Config
reference" page from :func:`markdown` (docs/hooks.py), so the page cannot drift from the code;
tests/unit/test_config_reference.py checks that every field is on it.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import typing

from pydantic import BaseModel

from thermocg import config as cfg

#: (TOML table, model) in the order of a config file
SECTIONS = (("run", cfg.RunSection), ("reference", cfg.ReferenceSection), ("reference.nve", cfg.NVESection),
            ("[[reference.data]]", cfg.ImportedTemperature), ("targets", cfg.TargetsSection),
            ("train", cfg.TrainSection), ("simulate", cfg.SimulateSection),
            ("simulate.nve", cfg.SimulateNVESection), ("evaluate", cfg.EvaluateSection))


def comment_groups(model: type[BaseModel]) -> list[tuple[list[str], str]]:
    """The model's fields in source order, grouped under the ``#:`` comment above them: a
    comment describes the fields that follow it up to the next comment or blank line. Fields
    inherited (a subclass that only changes defaults) take their parent's groups."""
    own = [n for n in model.model_fields if n in vars(model).get("__annotations__", {})]
    if not own:
        return comment_groups(model.__mro__[1])
    source = textwrap.dedent(inspect.getsource(model))
    lines = source.splitlines()
    tree = ast.parse(source).body[0]
    groups: list[tuple[list[str], str]] = []
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        if name not in model.model_fields:
            continue
        k, comment = node.lineno - 2, []
        while k >= 0 and lines[k].strip().startswith("#:"):
            comment.insert(0, lines[k].strip()[2:].strip())
            k -= 1
        joined = " ".join(comment)
        if comment or not groups or lines[node.lineno - 2].strip() == "":
            groups.append(([name], joined))
        else:  # no comment of its own, right below another field: described with it
            groups[-1][0].append(name)
    inherited = [n for n in model.model_fields if n not in own]
    if inherited:
        parent = {n: text for names_, text in comment_groups(model.__mro__[1]) for n in names_}
        groups = [([n], parent.get(n, "")) for n in inherited] + groups
    return groups


def _type(annotation) -> str:
    """A field's type in words a TOML user reads: number, integer, string, list of ..., table."""
    import types as pytypes
    from pathlib import Path

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, pytypes.UnionType):
        return " or ".join("unset" if a is type(None) else _type(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type(args[0])}"
        return "[" + ", ".join(_type(a) for a in args) + "]"
    if origin is dict:
        return f"table of {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return {int: "integer", float: "number", str: "string", bool: "boolean", Path: "path"}.get(annotation,
                                                                                             str(annotation))


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(a table)"
    if isinstance(value, tuple):
        value = list(value)
    try:
        return f"`{json.dumps(value)}`" if value is not None else "unset"
    except TypeError:
        return f"`{value}`"


def _constraints(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "length ≥")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sign} {v}")
    return ", ".join(out)


def markdown() -> str:
    """The config reference page (markdown)."""
    out = ["# Config reference", "",
           "Generated from `thermocg/config.py` when the site is built (`thermocg.config_reference`): every key "
           "of every table, its type, default and bounds, and the comment above it in the source. Units are in "
           "the key names (`_A`: Å, `_K`: kelvin, `_ps`, `_fs`, `_g_cm3`). Rules that join keys (cutoffs below "
           "half the box, restrained targets against the reference, ...) are listed under each table and "
           "checked when a config is read: a bad config stops with one line naming the key, what was "
           "expected and what was found.", ""]
    for table, model in SECTIONS:
        heading = table if table.startswith("[[") else f"[{table}]"
        out += [f"## `{heading}`", "", (inspect.getdoc(model) or "").split("\n\n")[0], "",
                "| key | type | default | bounds | what it is |", "|---|---|---|---|---|"]
        for names, text in comment_groups(model):
            fields = [model.model_fields[n] for n in names]
            keys = "<br>".join(f"`{n}`" for n in names)
            types = "<br>".join(_type(f.annotation) for f in fields)
            defaults = "<br>".join(_default(f) for f in fields)
            bounds = "<br>".join(_constraints(f) for f in fields)
            out.append(f"| {keys} | {types} | {defaults} | {bounds} | {text.replace('|', '/')} |")
        rules = [inspect.getdoc(getattr(model, n)) for n in dir(model)
                 if n.startswith("_check") and callable(getattr(model, n, None)) and inspect.getdoc(getattr(model, n))]
        if rules:
            out += ["", "Rules: " + " ".join(r.replace("\n", " ") for r in rules)]
        out.append("")
    cross = inspect.getdoc(cfg.Config._check_across_sections)
    out += ["## Rules across tables", "", (cross or "").replace("\n", " "), ""]
    return "\n".join(out)
