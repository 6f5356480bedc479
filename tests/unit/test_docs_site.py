"""The documentation site builds with ``mkdocs build --strict`` (issue 30): a broken link, a
missing page or an API name mkdocstrings cannot find fails the build, and so this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strict(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    page = (tmp_path / "site" / "config" / "index.html").read_text()
    assert "restrained_configurations" in page and "w0_targets" in page  # the generated reference
    assert "CGForceField" in (tmp_path / "site" / "api" / "index.html").read_text()
    # the report's HTML page links into these docs for what its numbers mean: every page and
    # anchor it names exists (a renamed heading would otherwise leave the report pointing nowhere)
    from thermocg.report.html import DOCS_LINKS

    for target in DOCS_LINKS.values():
        page_name, anchor = target.split("#")
        built = tmp_path / "site" / page_name.removesuffix(".md") / "index.html"
        assert built.exists(), f"the report links to {target}, which is not a page of docs/"
        assert f'id="{anchor}"' in built.read_text(), f"the report links to {target}: no such anchor"
