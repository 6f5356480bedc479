"""Resumable trajectory output, shared by the reference and simulate stages.

A stage that integrates dynamics writes its frames to hidden ``.NAME.part`` files
(one per trajectory; a batch of systems has several) and, after every frame, a
checkpoint of the dynamics' state. :class:`ResumableTrajectories` is the one
implementation of what that promises:

* **resume** -- the checkpoint restores the state; every part file is truncated to
  the frames the checkpoint has seen, so frames are never duplicated or lost; part
  files with fewer frames than the checkpoint expects (or unreadable) restart the run;
* **finish** -- only when every part holds the expected frames is each renamed to its
  final name, and the checkpoint removed; otherwise nothing is promoted.

What a checkpoint holds is the caller's business (an OpenMM checkpoint, torch tensors):
it passes a function that writes one to a path (written to a temporary name, then
renamed) and one that restores from one and returns its step.

Also here: the small helpers both stages share (:func:`steps`, :func:`nve_start_frames`,
:func:`check_existing`, :func:`frame_fingerprint`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from thermocg.errors import DataFormatError, SimulationError
from thermocg.io.h5md import H5MDWriter, count_frames, read_attrs, read_h5md
from thermocg.stagedir import atomic_path

log = logging.getLogger(__name__)


def steps(duration_fs: float, dt_fs: float) -> int:
    """Whole MD steps of ``dt_fs`` in ``duration_fs`` (the config checks that it divides)."""
    return int(round(duration_fs / dt_fs))


def nve_start_frames(n_frames: int, n_segments: int) -> list[int]:
    """Indices of the sampled frames the NVE segments start from, spread over the run (last one included)."""
    return [(k + 1) * n_frames // n_segments - 1 for k in range(n_segments)]


def frame_fingerprint(path: Path, index: int) -> str:
    """SHA-256 of one frame's positions and velocities: ties a derived file (an NVE segment)
    to the frame it started from."""
    d = read_h5md(path, frames=slice(index, index + 1))
    h = hashlib.sha256()
    for key in ("particles/all/position", "particles/all/velocity"):
        h.update(np.ascontiguousarray(d.elements[key], dtype=np.float64).tobytes())
    return h.hexdigest()


def check_existing(path: Path, config_hash: str, sections: str, n_frames: int | None = None,
                   start: tuple[Path, int] | None = None) -> bool:
    """True if ``path`` is a finished output of this config; False if it is absent, or if it is
    this config's output but damaged (not ``n_frames`` frames, or no longer starting from frame
    ``start[1]`` of file ``start[0]``): such a file is removed, with a warning saying what was
    found.

    Raises DataFormatError if it is unreadable or came from another config (``sections``: what
    the hash covers, for the message): a file thermocg cannot recognise as its own is never
    removed here. (A stage's manifest removes the damaged outputs it recorded itself.)
    """
    if not path.exists():
        return False
    try:
        attrs = read_attrs(path)
        have = count_frames(path) if n_frames is not None else None
    except DataFormatError as err:
        raise DataFormatError(f"{err}; thermocg did not record it as finished: remove it, or run the stage with "
                              "--force to recompute it") from err
    found = attrs.get("config_hash")
    if found != config_hash:
        raise DataFormatError(
            f"{path}: made by a different {sections} config (hash {found}, this config {config_hash}); "
            "pass --force to regenerate, or use another run.directory")
    if have is not None and have != n_frames:
        log.warning("%s: holds %d frames, expected %d; regenerating it", path, have, n_frames)
        path.unlink()
        return False
    if start is not None and attrs.get("start_fingerprint") != frame_fingerprint(*start):
        log.warning("%s: does not start from frame %d of %s as it says (that file was regenerated); "
                    "regenerating it", path, start[1], start[0].name)
        path.unlink()
        return False
    return True


def part_path(final: Path) -> Path:
    """Where the frames of ``final`` collect until it is complete: ``.<name>.part`` beside it."""
    return final.with_name(f".{final.name}.part")


class ResumableTrajectories:
    """Frames of one or more trajectories, appended to part files, promoted when complete.

    Parameters
    ----------
    finals : the final file names, one per trajectory
    checkpoint : the checkpoint file (None: no resume; an interrupted run is redone)
    where : what runs, for messages ("reference T300K", "simulate fm")
    """

    def __init__(self, finals: Sequence[Path], checkpoint: Path | None, where: str):
        self.finals = [Path(f) for f in finals]
        self.parts = [part_path(f) for f in self.finals]
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.where = where
        self.writers: list[H5MDWriter] = []

    def resume(self, checkpoint_step: Callable[[Path], int | None], restore: Callable[[Path], None],
               frames_at: Callable[[int], int]) -> int | None:
        """Resume from the checkpoint if there is a usable one and the part files agree with it.

        ``checkpoint_step(checkpoint)``: the checkpoint's step, or None when it is unusable
        (another config, another layout); it must not change the dynamics. ``frames_at(step)``:
        the frames written by that step. Only when the part files are readable and hold at
        least those frames is ``restore(checkpoint)`` called to restore the dynamics, so a run
        that cannot resume starts from exactly the state a fresh run would. Returns the frames
        kept, or None: nothing to resume (then call :meth:`start`).
        """
        if self.checkpoint is None or not self.checkpoint.exists() or not all(p.exists() for p in self.parts):
            return None
        step = checkpoint_step(self.checkpoint)
        if step is None:
            return None
        writers = []
        try:
            for p in self.parts:
                writers.append(H5MDWriter(p, mode="a"))
        except DataFormatError as err:
            log.warning("%s: %s; restarting", self.where, err)
            for w in writers:
                w.close()
            return None
        done = frames_at(step)
        have = min(w.n_frames for w in writers)
        if have < done:
            log.warning("%s: the part files hold %d frames but the checkpoint expects %d; restarting", self.where,
                        have, done)
            for w in writers:
                w.close()
            return None
        try:
            restore(self.checkpoint)
        except BaseException:
            for w in writers:
                w.close()
            raise
        for w in writers:
            w.truncate(done)
        self.writers = writers
        log.info("%s: resuming at step %d with %d frames", self.where, step, done)
        return done

    def start(self, new_writer: Callable[[Path, int], H5MDWriter]) -> None:
        """Remove stale part files and checkpoint; open a new writer per trajectory
        (``new_writer(part_path, index)``)."""
        for stale in (*self.parts, *([self.checkpoint] if self.checkpoint else [])):
            stale.unlink(missing_ok=True)
        self.writers = []
        try:
            for i, p in enumerate(self.parts):
                self.writers.append(new_writer(p, i))
                self.writers[-1].flush()  # readable from now on: a kill before the first frame can resume
        except BaseException:
            self.close()
            raise

    def save_checkpoint(self, write: Callable[[Path], None]) -> None:
        """``write(path)`` writes the checkpoint to a temporary path, renamed when complete."""
        if self.checkpoint is None:
            raise ValueError(f"{self.where}: no checkpoint file was given")
        with atomic_path(self.checkpoint) as tmp:
            write(tmp)

    def append(self, index: int, step: int, time_ps: float, frame: dict, flush: bool = True) -> None:
        """One frame of trajectory ``index`` (flushed to disk, so a kill loses at most this frame)."""
        self.writers[index].append(step, time_ps, frame)
        if flush:
            self.writers[index].flush()

    @property
    def n_frames(self) -> list[int]:
        return [w.n_frames for w in self.writers]

    def close(self) -> list[int]:
        """Close the writers (the part files stay); returns their frame counts."""
        counts = []
        for w in self.writers:
            counts.append(w.n_frames)
            w.close()
        return counts

    def finish(self, n_frames: int) -> None:
        """Close, check that every trajectory holds ``n_frames``, rename the parts to their
        final names and remove the checkpoint. Raises SimulationError (nothing renamed) otherwise."""
        if len(self.writers) != len(self.parts):
            raise ValueError(f"{self.where}: finish() before start() or resume()")
        counts = self.close()
        if any(c != n_frames for c in counts):
            raise SimulationError(f"{self.where}: part files hold {counts} frames, expected {n_frames}; "
                                  f"kept in {self.parts[0].parent}")
        for p, f in zip(self.parts, self.finals):
            os.replace(p, f)
        if self.checkpoint is not None:
            self.checkpoint.unlink(missing_ok=True)
