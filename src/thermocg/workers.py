"""Local worker processes, the backend of :class:`thermocg.tasks.LocalProcesses`: how many, a
pool whose workers die with the stage, and how to stop it.

concurrent.futures' ProcessPoolExecutor (spawn) does the work; what it lacks, and this
module adds, is that no worker may outlive the stage's process: a worker left behind after
the parent was killed would go on writing the files that a re-run resumes from.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

#: a worker's progress queue (set by the pool's initializer; None in the main process)
PROGRESS = None


def plan_processes(setting, n_tasks: int, platform_is_gpu: bool) -> tuple[int, int]:
    """(processes, CPU threads per process) for ``n_tasks`` tasks; ``setting``: ``[run] processes``
    (an int, or "auto": one per core on a CPU, one on a GPU)."""
    cores = os.cpu_count() or 1
    if setting != "auto":
        procs = min(setting, n_tasks)
    else:
        procs = 1 if platform_is_gpu else max(1, min(cores, n_tasks))
    procs = max(1, procs)
    return procs, max(1, cores // procs)


#: the thread pools a worker's libraries start (OpenMP: torch and numba's kernels; BLAS; the PME
#: kernel of OpenMM's CPU platform, which ignores its "Threads" property)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "OPENMM_CPU_THREADS")


def start_pool(procs: int, threads: int | None = None) -> tuple[ProcessPoolExecutor, "mp.Queue"]:
    """A spawn pool of ``procs`` workers that die with this process, and the queue they report
    progress on (a worker puts messages on :data:`PROGRESS`). ``threads``: the size of every
    thread pool in a worker (None: the libraries' defaults, one thread per core each)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    pool = ProcessPoolExecutor(procs, mp_context=ctx, initializer=init_worker, initargs=(q, os.getpid(), threads))
    return pool, q


def init_worker(progress_queue, parent_pid: int, threads: int | None = None) -> None:
    """In each worker process: the size of its thread pools, the progress queue, and death
    with the parent.

    Thread pools: set before torch, numba or numpy start theirs (the task's imports come after
    this). Without it, two training workers on 2 cores each ran torch's thread plus a numba
    kernel thread and spun against each other: an epoch of fm on 216 beads took 15 s instead
    of 7 s (2-core CPU).

    On Linux the kernel sends the worker SIGTERM when the parent dies
    (``PR_SET_PDEATHSIG``); on every system a watchdog thread ends it within a second of
    being re-parented.
    """
    global PROGRESS
    PROGRESS = progress_queue
    if threads:
        for name in THREAD_VARIABLES:
            os.environ[name] = str(threads)
    handler = logging.StreamHandler(sys.stderr)  # the worker's own lines, as the CLI prints them
    handler.setFormatter(logging.Formatter("thermocg: %(message)s"))
    ours = logging.getLogger("thermocg")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass
    if os.getppid() != parent_pid:  # the parent died before this line
        os._exit(1)

    def watchdog():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watchdog, name="thermocg-parent-watchdog", daemon=True).start()


def stop_workers(pool: ProcessPoolExecutor, timeout_s: float = 10.0) -> None:
    """Terminate the pool's worker processes now and wait for them (an interrupted task
    resumes from its checkpoint). ProcessPoolExecutor has no public way to stop running tasks,
    hence its ``_processes``."""
    processes = list(getattr(pool, "_processes", {}).values())
    for p in processes:
        if p.is_alive():
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + timeout_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
