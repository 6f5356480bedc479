"""One process per run directory: a second run is refused with the holder's name, a lock left
by a dead process is taken over, and every stage takes the lock before it does anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from thermocg import pipeline
from thermocg.config import config_from_dict
from thermocg.runlock import LOCK_NAME, RunDirectoryBusy, run_directory_lock


def _holder(run_dir, seconds=60):
    """A separate process that takes the lock and holds it; returns it once it holds it."""
    code = textwrap.dedent(f"""
        import sys, time
        from thermocg.runlock import run_directory_lock
        with run_directory_lock({str(run_dir)!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_process_is_refused_and_told_who_holds_it(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunDirectoryBusy, match=rf"in use by PID {holder.pid} on host .*; wait for it"):
            with run_directory_lock(tmp_path / "run"):
                pass
        config = config_from_dict({"run": {"directory": str(tmp_path / "run")}})
        for s in pipeline.STAGES:  # every stage asks for the lock before any work or any other check
            with pytest.raises(RunDirectoryBusy):
                s.run(config, show_progress=False)
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_holder_s_lock_is_taken_over(tmp_path, caplog):
    import logging

    holder = _holder(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)  # no clean-up: its lock file still names it
    holder.wait()
    assert str(holder.pid) in (tmp_path / "run" / LOCK_NAME).read_text()
    with caplog.at_level(logging.INFO):
        with run_directory_lock(tmp_path / "run"):
            assert f'"pid": {os.getpid()}' in (tmp_path / "run" / LOCK_NAME).read_text()
    assert f"taking over the lock of PID {holder.pid}" in caplog.text
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # released: nobody named


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with run_directory_lock(tmp_path):
        with run_directory_lock(tmp_path):
            pass
        # still held by this process after the inner block: another process is refused
        code = f"from thermocg.runlock import run_directory_lock\nwith run_directory_lock({str(tmp_path)!r}): pass"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode != 0 and "RunDirectoryBusy" in out.stderr
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - start < 60


def test_deleting_the_holder_file_does_not_break_the_lock(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        (tmp_path / "run" / LOCK_NAME).unlink()  # a user "cleaning up" a lock file
        with pytest.raises(RunDirectoryBusy):
            with run_directory_lock(tmp_path / "run"):
                pass
    finally:
        holder.kill()
        holder.wait()
