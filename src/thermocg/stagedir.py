"""A stage's output directory: manifest, config hash, up-to-date checks, atomic writes.

Every stage writes into ``<run.directory>/<stage>/`` with a ``manifest.json`` that
records the hash of the config sections its outputs depend on. One way to decide
what a re-run does, shared by all stages:

* manifest complete, same hash, made from the same upstream outputs, and every output still
  matching the size and checksum recorded when it was written -> up to date;
* ``force`` -> the directory is emptied and the stage recomputed, config change or not;
* different hash -> ConfigError (pass ``force``);
* upstream outputs changed since -> the directory is emptied and the stage recomputed;
* outputs damaged or missing -> those are removed and regenerated (and reported);
* otherwise -> (re)start; per-file checks in the stage resume what they can.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from thermocg.errors import ConfigError, DataFormatError
from thermocg.io.strict import dumps, strict_json

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


def file_digest(path: Path) -> dict:
    """Size and SHA-256 of a file: what a manifest records of each output."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


class StageDir:
    """The output directory of one stage for one config.

    ``upstream``: the StageDirs of the stages this one reads. The manifest records a digest of
    their outputs, so a stage whose inputs were regenerated is not "up to date" with them.
    ``files``: the user's files it reads (a PDB, force-field XML, imported frames): their
    checksums are recorded too, so editing one in place makes the stage run again. A file that
    has gone since is not a change (the outputs made from it are kept, with a warning).
    """

    def __init__(self, path: Path, stage: str, config_hash: str, sections: str, upstream: tuple = (),
                 files: tuple = ()):
        self.path = Path(path)
        self.stage = stage
        self.config_hash = config_hash
        self.sections = sections  # for messages, e.g. "[reference]"
        self.upstream = tuple(upstream)
        self.files = tuple(Path(f) for f in files)
        self._file_digests: dict[str, str | None] | None = None  # computed once: files can be large
        self.manifest_path = self.path / "manifest.json"
        #: outputs known good: name -> size and checksum, recorded when each was finished
        self.recorded: dict[str, dict] = {}
        #: wall time spent on this stage's outputs by earlier (interrupted) runs, and when this run began
        self._wall_before, self._started = 0.0, time.monotonic()

    def _wall_s(self) -> float:
        """Seconds spent making these outputs, over every run that worked on them."""
        return self._wall_before + time.monotonic() - self._started

    def read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{self.manifest_path}: unreadable stage manifest ({err}); run "
                              f"`thermocg {self.stage} --force` to recompute the stage") from err
        if not isinstance(manifest, dict):
            raise ConfigError(f"{self.manifest_path}: not a stage manifest (a JSON {type(manifest).__name__}, "
                              f"expected an object); run `thermocg {self.stage} --force` to recompute the stage")
        return manifest

    def _inputs(self) -> dict:
        """What this stage's outputs were made from: the digest of each upstream stage's outputs
        and the checksum of each user file (``"file <absolute path>"``; None: the file is gone)."""
        return {**{up.stage: (up.read_manifest() or {}).get("files_digest") for up in self.upstream},
                **self._user_file_digests()}

    def _user_file_digests(self) -> dict[str, str | None]:
        if self._file_digests is None:
            self._file_digests = {f"file {f}": file_digest(f)["sha256"] if f.is_file() else None
                                  for f in self.files}
        return self._file_digests

    def checksum(self, path) -> str:
        """The SHA-256 of ``path``: of a user file, the one computed for the stage's inputs (a
        large imported file is read once per run)."""
        known = self._user_file_digests().get(f"file {Path(path)}")
        return known if known is not None else file_digest(path)["sha256"]

    def _changed_inputs(self, recorded: dict) -> list[str]:
        """The inputs that differ from those ``recorded`` in the manifest; a user file that is
        gone is reported (a warning) and not counted: its outputs are all that is left of it."""
        inputs, changed = self._inputs(), []
        for key, now in inputs.items():
            if key.startswith("file ") and now is None and key in recorded:
                log.warning("%s: %s no longer exists; keeping the outputs made from it", self.stage, key[5:])
            elif recorded.get(key) != now:
                changed.append(key)
        return changed + [k for k in recorded if k not in inputs]

    def _damaged(self, manifest: dict) -> list[tuple[str, str]]:
        """(file, what is wrong) for every recorded output that is missing or no longer matches."""
        problems = []
        for name, want in manifest.get("files", {}).items():
            path = self.path / name
            if not path.exists():
                problems.append((name, "missing"))
                continue
            size = path.stat().st_size
            if size != want["bytes"]:
                problems.append((name, f"{size} bytes, {want['bytes']} when it was written"))
            elif file_digest(path)["sha256"] != want["sha256"]:
                problems.append((name, "its checksum differs from the one recorded when it was written"))
        return problems

    def _holds_only_the_manifest(self) -> bool:
        return all(p.name == self.manifest_path.name for p in self.path.iterdir())

    def _clear(self) -> None:
        shutil.rmtree(self.path)
        self.path.mkdir(parents=True)

    def prepare(self, force: bool) -> dict | None:
        """Create the directory; return the manifest if the stage is up to date, else None.

        Up to date: complete, made by this config from the same upstream outputs, and every
        recorded output still matches its size and checksum. Damaged or missing outputs are
        removed (the stage regenerates them) and reported. ``force``: remove every output
        first, whatever the manifest says. Raises ConfigError if the directory holds another
        config's outputs and not ``force``.
        """
        self._wall_before, self._started = 0.0, time.monotonic()
        if force and self.path.exists():
            log.warning("--force: removing the %s outputs in %s", self.stage, self.path)
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.read_manifest()
        if manifest is None:
            return None
        if manifest.get("config_hash") != self.config_hash:
            if not manifest.get("complete") and self._holds_only_the_manifest():
                # begun by another config and stopped before it made anything (a missing PDB, a
                # cutoff too long for the box): nothing to protect, so no --force needed
                log.info("%s: an earlier run of another config stopped before it wrote anything; starting anew",
                         self.stage)
                self._clear()
                return None
            raise ConfigError(
                f"{self.path}: made by a different {self.sections} config (hash {manifest.get('config_hash')}, "
                f"this config {self.config_hash}); run `thermocg {self.stage} --force` to regenerate it, or set "
                "another run.directory")
        changed = self._changed_inputs(manifest.get("inputs", {}))
        if changed:
            stages = [k for k in changed if not k.startswith("file ")]
            recorded = manifest.get("inputs", {})
            files = [k[5:] for k in changed if k.startswith("file ") and k in recorded]
            unknown = [k[5:] for k in changed if k.startswith("file ") and k not in recorded]
            what = ([f"other {' and '.join(stages)} outputs than there are now"] if stages else []) + \
                   ([f"{', '.join(files)} as it was before it changed"] if files else []) + \
                   ([f"files it has no checksum of ({', '.join(unknown)})"] if unknown else [])
            log.warning("%s: made from %s; recomputing it", self.stage, " and from ".join(what) or "other inputs")
            self._clear()
            return None
        damaged = self._damaged(manifest)  # an interrupted run's finished outputs are checked too
        for name, what in damaged:
            log.warning("%s: %s is damaged (%s); regenerating it", self.stage, self.path / name, what)
            (self.path / name).unlink(missing_ok=True)
        bad = {name for name, _ in damaged}
        self.recorded = {k: v for k, v in manifest.get("files", {}).items() if k not in bad}
        # an interrupted run of this config, or one whose outputs were damaged since: the time
        # spent on the outputs kept counts (time after an interrupted run's last finished output
        # is not recorded)
        self._wall_before = float(manifest.get("wall_s") or 0.0)
        if not manifest.get("complete") or damaged:
            return None
        if "record" not in manifest or "files" not in manifest:
            log.warning("%s: the manifest has no record of the outputs (an older thermocg); checking them again",
                        self.stage)
            return None
        log.info("%s: up to date (%s)", self.stage, self.path)
        return manifest

    def add_outputs(self, names) -> None:
        """Record finished outputs (size and checksum) in the manifest of a stage under way, so
        that a re-run after an interruption can trust them, and only them."""
        for name in names:
            self.recorded[name] = file_digest(self.path / name)
        manifest = self.read_manifest() or {}
        manifest["files"] = dict(self.recorded)
        manifest["wall_s"] = self._wall_s()
        atomic_write_text(self.manifest_path, dumps(manifest, indent=2))

    def write_manifest(self, complete: bool, config: dict, outputs: dict | None = None,
                       summary: dict | None = None, record: dict | None = None) -> dict:
        """Write the manifest (strict JSON: non-finite numbers become null). A complete one
        carries the stage's typed record (:mod:`thermocg.io.records`), which the next stage
        reads, and the size and checksum of every output file."""
        if complete and record is None:
            raise ValueError(f"{self.stage}: a complete manifest needs the stage's record")
        manifest = {"stage": self.stage, "config_hash": self.config_hash, "complete": complete,
                    "inputs": self._inputs(), "outputs": outputs or {}, "summary": summary or {}, "config": config,
                    "wall_s": self._wall_s()}
        if record is not None:
            manifest["record"] = record
        if complete:
            names = sorted({name for files in (outputs or {}).values() for name in files})
            manifest["files"] = {name: file_digest(self.path / name) for name in names}
        else:
            manifest["files"] = dict(self.recorded)
        if complete:
            manifest["files_digest"] = hashlib.sha256(json.dumps(manifest["files"], sort_keys=True).encode()
                                                      ).hexdigest()
        manifest = strict_json(manifest)
        atomic_write_text(self.manifest_path, dumps(manifest, indent=2))
        return manifest

    def require_finished(self) -> dict:
        """The manifest of this (upstream) stage, or a DataFormatError telling the user to run it
        (not finished, another config, or an output damaged since it was written)."""
        manifest = self.read_manifest()
        if manifest is None or not manifest.get("complete") or manifest.get("config_hash") != self.config_hash:
            raise DataFormatError(f"{self.path}: no finished {self.stage} stage of this config; run "
                                  f"`thermocg {self.stage}` first")
        damaged = self._damaged(manifest)
        if damaged:
            name, what = damaged[0]
            raise DataFormatError(f"{self.path / name}: damaged ({what}); run `thermocg {self.stage}` to "
                                  "regenerate it")
        return manifest

    def begin(self, force: bool, config) -> tuple[dict | None, dict]:
        """Start the stage for ``config``: (the manifest, if it is already up to date, else None;
        the config as JSON). When not up to date, an incomplete manifest is written first."""
        manifest = self.prepare(force)
        config_json = json.loads(config.model_dump_json(exclude={"source"}))
        if manifest is None:
            self.write_manifest(False, config_json)
        return manifest, config_json


@dataclass(frozen=True)
class StageContext:
    """What a stage's runner is given by :meth:`thermocg.pipeline.Stage.run`, which has taken
    the run directory's lock, read and checked each upstream record once and begun the stage
    (its incomplete manifest written): the config, the stage's directory, the upstream records,
    whether to show progress."""

    config: object  # thermocg.config.Config
    #: the stage's directory: ``path``, ``config_hash``, ``sections``, ``recorded`` outputs, ``add_outputs``
    stage: StageDir
    #: the config as JSON (what the manifest and the outputs' provenance record)
    config_json: dict
    #: stage name -> its typed record (:mod:`thermocg.io.records`), for each upstream stage
    upstream: dict
    show_progress: bool = True
    #: stage name -> wall time (s) its outputs took, for every stage before this one (provenance)
    walls: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.stage.path

    def record(self, name: str):
        """The record of upstream stage ``name``."""
        try:
            return self.upstream[name]
        except KeyError:
            raise ValueError(f"the {self.stage.stage} stage does not read the {name} stage "
                             f"(its upstream: {list(self.upstream)})") from None

    def upstream_hash(self, name: str) -> str:
        """The config hash of upstream stage ``name`` (the provenance of files made from it)."""
        return next(up.config_hash for up in self.stage.upstream if up.stage == name)


@dataclass(frozen=True)
class StageResult:
    """What a runner returns: its outputs by group (file names relative to the stage's
    directory), a summary for the manifest and the CLI, and its record (JSON; None for a stage
    nothing reads). ``scratch``: resume state (relative paths) removed once the manifest is
    written, not before: an interruption in between resumes from it."""

    outputs: dict
    summary: dict
    record: dict | None
    scratch: tuple[str, ...] = ()
