"""A stage's output directory: manifest, config hash, up-to-date checks, atomic writes.

Every stage writes into ``<run.directory>/<stage>/`` with a ``manifest.json`` that
records the hash of the config sections its outputs depend on. One way to decide
what a re-run does, shared by all stages:

* manifest complete, same hash, all outputs present -> up to date, nothing to do;
* different hash -> ConfigError, unless ``force`` (then the directory is emptied);
* otherwise -> (re)start; per-file checks in the stage resume what they can.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from thermocg.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp"):
    """Yield a temporary name beside ``path``; rename it to ``path`` when the block succeeds.

    A stale temporary from an earlier, interrupted write is removed first; on an
    error the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{suffix}")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to a temporary name in the same directory, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class StageDir:
    """The output directory of one stage for one config."""

    def __init__(self, path: Path, stage: str, config_hash: str, sections: str):
        self.path = Path(path)
        self.stage = stage
        self.config_hash = config_hash
        self.sections = sections  # for messages, e.g. "[reference]"
        self.manifest_path = self.path / "manifest.json"

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"{self.manifest_path}: unreadable stage manifest ({err}); "
                              "remove it or pass --force") from err

    def prepare(self, force: bool) -> dict | None:
        """Create the directory; return the manifest if the stage is up to date, else None.

        Raises ConfigError if the directory holds another config's outputs and not ``force``.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.read_manifest()
        if manifest is not None and manifest.get("config_hash") != self.config_hash:
            if not force:
                raise ConfigError(
                    f"{self.path}: made by a different {self.sections} config (hash {manifest.get('config_hash')}, "
                    f"this config {self.config_hash}); pass --force to regenerate it, or set another "
                    "run.directory")
            log.warning("--force: removing the %s outputs in %s", self.stage, self.path)
            shutil.rmtree(self.path)
            self.path.mkdir(parents=True)
            manifest = None
        if manifest is not None and manifest.get("complete"):
            missing = [name for files in manifest.get("outputs", {}).values() for name in files
                       if not (self.path / name).exists()]
            if not missing:
                log.info("%s: up to date (%s)", self.stage, self.path)
                return manifest
            log.warning("%s: %d output file(s) missing (%s); regenerating them", self.stage, len(missing),
                        missing[0])
        return None

    def write_manifest(self, complete: bool, config: dict, outputs: dict | None = None,
                       summary: dict | None = None) -> dict:
        manifest = {"stage": self.stage, "config_hash": self.config_hash, "complete": complete,
                    "outputs": outputs or {}, "summary": summary or {}, "config": config}
        atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2))
        return manifest

    def require_finished(self) -> dict:
        """The manifest of this (upstream) stage, or a DataFormatError telling the user to run it."""
        manifest = self.read_manifest()
        if manifest is None or not manifest.get("complete") or manifest.get("config_hash") != self.config_hash:
            raise DataFormatError(f"{self.path}: no finished {self.stage} stage of this config; run "
                                  f"`thermocg {self.stage}` first")
        return manifest

    def begin(self, force: bool, config) -> tuple[dict | None, dict]:
        """Start the stage for ``config``: (the manifest, if it is already up to date, else None;
        the config as JSON). When not up to date, an incomplete manifest is written first."""
        manifest = self.prepare(force)
        config_json = json.loads(config.model_dump_json(exclude={"source"}))
        if manifest is None:
            self.write_manifest(False, config_json)
        return manifest, config_json
