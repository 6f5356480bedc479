"""One process per run directory: an OS-level lock file.

Every stage runs inside :func:`run_directory_lock`: ``fcntl.flock`` on the run directory
itself, which the kernel releases when the holding process dies, however it dies (kill
-9 included), so a lock left by a dead process is never an obstacle. The file
``<run.directory>/.thermocg.lock`` names the holder (PID, host, command) for the message;
after a dead holder it still names it, and the next run takes over and says so.
Deleting that file does not break the lock. A second run on the same directory while the first is
alive is refused with an error that names the holder's PID, host and command.

Re-entrant within one process (``thermocg run`` holds it across its stages, and
:meth:`thermocg.pipeline.Stage.run` inside holds it again). Worker processes of a stage do not
take it: they die with their parent (:mod:`thermocg.workers`).

Why our own code: the standard library's ``fcntl.flock`` is the mechanism; what is
added is the holder's identity in the file and the one-line refusal. (``filelock``
would add a dependency for the same flock call and give no holder in its message.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from thermocg.errors import ThermocgError

log = logging.getLogger(__name__)

LOCK_NAME = ".thermocg.lock"

#: run directory -> [directory fd, depth] for the locks this process holds
_held: dict[Path, list] = {}


class RunDirectoryBusy(ThermocgError):
    """Another live process is running a stage in this run directory."""


def _describe(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return (f"PID {info.get('pid', '?')} on host {info.get('host', '?')} (since {since}: "
            f"{info.get('command', '?')})")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return {}


def _write(path: Path, info: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info) if info else "")
    os.replace(tmp, path)


@contextmanager
def run_directory_lock(run_dir: Path):
    """Hold the run directory's lock inside the block (creating the directory if needed).

    The lock is taken on the directory itself, so deleting the holder file cannot break
    it; ``.thermocg.lock`` only names the holder, for the message a second run gets.
    Raises RunDirectoryBusy when another live process holds it.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        _held[run_dir][1] += 1
        try:
            yield
        finally:
            _held[run_dir][1] -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    info = run_dir / LOCK_NAME
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirectoryBusy(f"{run_dir}: in use by {_describe(_read(info))}; wait for it to finish or stop it, "
                               "or use another run.directory") from None
    except BaseException:
        os.close(fd)
        raise
    stale = _read(info)
    if stale.get("pid") and stale.get("pid") != os.getpid():
        log.info("%s: taking over the lock of %s, which is no longer running", run_dir, _describe(stale))
    try:
        _write(info, {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                      "command": " ".join(sys.argv)[:300]})
    except BaseException:
        os.close(fd)
        raise
    _held[run_dir] = [fd, 1]
    try:
        yield
    finally:
        _held[run_dir][1] -= 1
        if _held[run_dir][1] == 0:
            del _held[run_dir]
            try:
                _write(info, {})  # no holder named: the directory is free
            except OSError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
