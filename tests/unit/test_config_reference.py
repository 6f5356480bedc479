"""The config reference page is written from the pydantic models (issue 30): every table the
config can hold and every key in it is on the page, with its default and words from config.py."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from thermocg.config import Config
from thermocg.config_reference import SECTIONS, comment_groups, markdown


def _tables(model: type[BaseModel], seen: set) -> set:
    """Every model reachable from ``model``'s fields (sections, subsections, list items)."""
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                if t not in seen:
                    seen.add(t)
                    _tables(t, seen)
            else:
                stack.extend(typing.get_args(t))
    return seen


def test_every_table_and_every_key_is_on_the_page():
    assert _tables(Config, set()) == {model for _, model in SECTIONS}
    page = markdown()
    for table, model in SECTIONS:
        section = page.split(f"## `{table if table.startswith('[[') else f'[{table}]'}`")[1].split("\n## ")[0]
        described = {n for names, text in comment_groups(model) for n in names if text.strip()}
        for name, field in model.model_fields.items():
            assert f"`{name}`" in section, f"[{table}] {name} is not on the config reference page"
            assert name in described, f"[{table}] {name} has no #: comment in config.py to describe it"
    # defaults and bounds come from the models themselves
    assert "| `restrained_configurations`" not in page  # grouped under the comment of restraint_k
    assert '`"restrained"`' in page and "≥ 0, < 2147483648" in page
