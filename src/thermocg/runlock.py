"""One process per run directory: an OS-level lock file.

Every stage runs inside :func:`run_directory_lock` on ``<run.directory>/.thermocg.lock``.
The lock is ``fcntl.flock`` on that file: the kernel releases it when the holding
process dies, however it dies (kill -9 included), so a lock left by a dead process
is never an obstacle; its file only still names the dead holder, and the next run
takes it over and says so. A second run on the same directory while the first is
alive is refused with an error that names the holder's PID, host and command.

Re-entrant within one process (``thermocg run`` holds it across its stages, and a
stage run inside holds it again). Worker processes of a stage do not take it: they
die with their parent (:mod:`thermocg.reference.stage`).

Why our own code: the standard library's ``fcntl.flock`` is the mechanism; what is
added is the holder's identity in the file and the one-line refusal. (``filelock``
would add a dependency for the same flock call and give no holder in its message.)
"""

from __future__ import annotations

import fcntl
import functools
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

#: lock file path -> (open file, depth) for the locks this process holds
_held: dict[Path, list] = {}


class RunDirectoryBusy(ThermocgError):
    """Another live process is running a stage in this run directory."""


def _describe(info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return (f"PID {info.get('pid', '?')} on host {info.get('host', '?')} (since {since}: "
            f"{info.get('command', '?')})")


def _read(fh) -> dict:
    fh.seek(0)
    try:
        return json.loads(fh.read() or "{}")
    except json.JSONDecodeError:
        return {}


@contextmanager
def run_directory_lock(run_dir: Path):
    """Hold the run directory's lock inside the block (creating the directory if needed).

    Raises RunDirectoryBusy when another live process holds it.
    """
    run_dir = Path(run_dir).resolve()
    path = run_dir / LOCK_NAME
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fh)
        fh.close()
        raise RunDirectoryBusy(f"{run_dir}: in use by {_describe(holder)}; wait for it to finish or stop it, "
                               "or use another run.directory") from None
    except BaseException:
        fh.close()
        raise
    stale = _read(fh)
    if stale.get("pid") and stale.get("pid") != os.getpid():
        log.info("%s: taking over the lock of %s, which is no longer running", run_dir, _describe(stale))
    fh.seek(0)
    fh.truncate()
    fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                         "command": " ".join(sys.argv)[:300]}))
    fh.flush()
    _held[path] = [fh, 1]
    try:
        yield
    finally:
        _held[path][1] -= 1
        if _held[path][1] == 0:
            del _held[path]
            fh.seek(0)
            fh.truncate()  # no holder named: the directory is free
            fh.flush()
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()


def locked_stage(run):
    """Decorate a stage's runner ``run(config, ...)``: it runs holding its run directory's lock."""
    @functools.wraps(run)
    def wrapper(config, *args, **kwargs):
        with run_directory_lock(config.run_dir):
            return run(config, *args, **kwargs)
    return wrapper
