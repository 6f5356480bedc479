"""Local worker processes for the stages that run independent tasks in parallel (reference
temperatures, model trainings): how many, a pool whose workers die with the stage, and how
to stop it.

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


def task_result(call, name: str, lost=(), died=RuntimeError):
    """``call()`` (a task's result, here or from a worker) with a ThermocgError raised again with
    ``name`` in front, and an exception of the type(s) ``lost`` (the worker running the task died)
    raised as ``died`` naming the task: one message for every stage's workers."""
    from thermocg.errors import ThermocgError

    try:
        return call()
    except lost as err:
        raise died(f"{name}: a worker process died ({err}); re-run the same command to resume") from err
    except ThermocgError as err:
        if str(err).startswith(f"{name}:"):  # the task named itself already
            raise
        raise type(err)(f"{name}: {err}") from err


def run_tasks(fn, tasks: list, procs: int, threads: int | None, finished, label, died=RuntimeError,
              scheduler: str | None = None) -> None:
    """``fn(task)`` for every task, independent of each other, in ``procs`` worker processes
    (here, in order, when ``procs`` is 1 or there is one task); ``finished(task, result)`` runs in
    this process as each ends. A :class:`~thermocg.errors.ThermocgError` is raised again with
    ``label(task)`` in front; a worker that died raises ``died`` naming the task. Ctrl-C, SIGTERM
    or an error stops every worker before it propagates (:func:`stop_workers`). ``scheduler``
    (``[run] scheduler``): on Dask instead (:mod:`thermocg.cluster`; ``procs`` is then unused)."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    if scheduler is not None and tasks:
        from thermocg import cluster
        with cluster.client_for(scheduler) as client:
            cluster.run_tasks(client, fn, tasks, finished, label)
        return

    if procs == 1 or len(tasks) <= 1:
        for task in tasks:
            finished(task, task_result(lambda: fn(task), label(task)))
        return
    pool, _ = start_pool(procs, threads)
    try:
        pending = {pool.submit(fn, task): task for task in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                task = pending.pop(fut)
                finished(task, task_result(fut.result, label(task), BrokenProcessPool, died))
    except BaseException:
        stop_workers(pool)
        raise
    pool.shutdown(wait=True)
