"""Per-temperature work on Dask distributed: ``[run] scheduler`` (issue 17); the backend of
:class:`thermocg.tasks.Dask`.

The tasks: the reference stage's temperatures, restrained configurations, the simulate stage's
models (each a batch of its temperatures) and the evaluate stage's temperatures.

Without a scheduler, per-temperature work runs in local worker processes
(:mod:`thermocg.workers`). With ``scheduler = "local:N"`` it runs on a Dask ``LocalCluster`` of
N single-threaded worker processes; with an address (``"tcp://host:8786"``) on the cluster whose
scheduler listens there (dask-jobqueue on SLURM or PBS, ``dask scheduler`` / ``dask worker`` by
hand: docs/dask.md shows how). The workers need thermocg installed and the run directory on a
file system they share with this process: the tasks read and write their own files there.

The tasks are the same pure functions of (config, temperature, inputs) the local processes run,
each writing its outputs atomically and resuming its own partial files, so a task Dask retries
after its worker died continues where the dead worker's last complete frame left it and never
writes a frame twice. Dask reschedules the task of a worker that died (up to its
``distributed.scheduler.allowed-failures``, 3 by default); a task that raised is not retried
(our errors are deterministic: a failed energy check fails again), the stage stops with the
task named, and re-running it resumes. A ``local:N`` cluster's worker processes end with this
process, however it dies (Dask's own watch of their parent: gone within a second of a kill -9;
tested). Not handled: after Ctrl-C, a task already running on a remote worker runs on (Dask
cannot stop it); wait for it before re-running on the same run directory.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

from thermocg.errors import ConfigError, SimulationError

log = logging.getLogger(__name__)

#: how long to wait for a scheduler at an address before giving up
CONNECT_TIMEOUT_S = 5.0
_LOCAL = re.compile(r"^local:(\d+)$")
_ADDRESS = re.compile(r"^(tcp|tls|ucx|inproc|ws|wss)://\S+$")


def check_scheduler(value: str) -> str:
    """A valid ``[run] scheduler``: ``"local:N"`` (N >= 1) or a scheduler address."""
    m = _LOCAL.match(value)
    if m and int(m.group(1)) >= 1:
        return value
    if _ADDRESS.match(value):
        return value
    raise ValueError(f"scheduler = {value!r}: expected \"local:N\" (N >= 1 worker processes) or a Dask scheduler "
                     "address such as \"tcp://host:8786\"")


@contextmanager
def client_for(scheduler: str):
    """A Dask client for ``scheduler`` (closed, with its local cluster, on exit). An address no
    scheduler answers at raises SimulationError within :data:`CONNECT_TIMEOUT_S`."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:  # pragma: no cover - dask is a dependency
        raise ConfigError(f"[run] scheduler = {scheduler!r} needs dask[distributed] ({err})") from err
    cluster = None
    m = _LOCAL.match(scheduler)
    if m:
        cluster = LocalCluster(n_workers=int(m.group(1)), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            raise SimulationError(f"[run] scheduler = {scheduler!r}: no Dask scheduler answered within "
                                  f"{CONNECT_TIMEOUT_S:g} s ({type(err).__name__})") from None
    log.info("dask: %s, %d worker(s)", scheduler, len(client.scheduler_info().get("workers", {})))
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def worker_threads() -> int | None:
    """The threads of the Dask worker running the calling task (``dask worker --nthreads``; 1 on
    a ``local:N`` cluster), or None outside a worker. A torch task uses that many threads, so N
    workers on one machine do not each take every core."""
    try:
        from distributed import get_worker
        return int(get_worker().state.nthreads)
    except (ImportError, ValueError):  # ValueError: not in a worker
        return None


def use_worker_threads() -> None:
    """In a task on a Dask worker: torch uses the worker's threads (:func:`worker_threads`), and so
    does the PME kernel of OpenMM's CPU platform (``OPENMM_CPU_THREADS``, read at its first
    context in the process; a value the user set is kept)."""
    threads = worker_threads()
    if threads:
        import os

        import torch
        torch.set_num_threads(threads)
        os.environ.setdefault("OPENMM_CPU_THREADS", str(threads))
