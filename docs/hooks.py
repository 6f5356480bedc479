"""mkdocs hooks: the config reference page is written from thermocg's pydantic models at build
time (thermocg.config_reference), so it cannot drift from the code."""

from __future__ import annotations


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "config.md":
        from thermocg.config_reference import markdown as reference

        return reference()
    return markdown
