"""One executor for every stage's independent tasks: temperatures, restrained configurations,
models (after MDAnalysis' analysis backends: serial, multiprocessing, Dask, each with one ``map``).

A stage builds its tasks (picklable, each a pure function of what it carries) and hands them
to :func:`executor`'s choice:

* :class:`Serial` runs them here, one after another;
* :class:`LocalProcesses` in worker processes of this machine that die with this process
  (:mod:`thermocg.workers`);
* :class:`Dask` on a Dask distributed cluster, ``[run] scheduler`` (:mod:`thermocg.cluster`).

Each has one ``map(fn, tasks, label=, finished=, ...)``, with the same guarantees:

* ``finished(task, result)`` runs in this process as each task ends (in the order they end):
  the stage records that task's outputs there, so an interrupted stage keeps them;
* a :class:`~thermocg.errors.ThermocgError` of a task is raised again with ``label(task)`` in
  front (unless the message names it already); a worker that died raises ``died`` naming the
  task and telling the user to re-run;
* Ctrl-C, SIGTERM or an error stops every task still running before it propagates (their
  partial files stay, for the next run to resume);
* ``after(task)``: the tasks that must have finished before it starts (the train stage: a
  model after the model it takes W0 from);
* ``events(task, event)``: what a running task sent with :func:`emit` (the reference stage's
  steps and finished files), here as it happens; on Dask events are not forwarded, so
  ``finished`` must record everything a task made;
* ``keep_going``: a failed task does not stop the others; the errors are raised together at
  the end (the reference stage: a temperature that fails leaves the rest to finish).
"""

from __future__ import annotations

import queue
import time
from contextlib import contextmanager
from typing import Callable, Iterable

from thermocg.errors import SimulationError, ThermocgError


#: how a running task reports an event (set around each task by its backend; a no-op outside)
_emit: Callable[[object], None] = lambda event: None  # noqa: E731


def emit(event) -> None:
    """Send ``event`` (picklable) from the running task to its stage's ``events`` hook."""
    _emit(event)


@contextmanager
def _emitting(sink: Callable[[object], None]):
    global _emit
    previous, _emit = _emit, sink
    try:
        yield
    finally:
        _emit = previous


def task_result(call, name: str, lost=(), died=RuntimeError):
    """``call()`` (a task's result, here or from a worker) with a ThermocgError raised again with
    ``name`` in front, and an exception of the type(s) ``lost`` (the worker running the task died)
    raised as ``died`` naming the task: one message for every backend."""
    try:
        return call()
    except lost as err:
        dead = died(f"{name}: a worker process died ({err}); re-run the same command to resume")
        dead.worker_died = True  # not a task's own failure: nothing else can run on that pool
        raise dead from err
    except ThermocgError as err:
        if str(err).startswith((f"{name}:", f"{name} ")):  # the task named itself already
            raise
        raise type(err)(f"{name}: {err}") from err


class _Failures:
    """The errors of ``keep_going`` tasks, raised together at the end in the tasks' order (not
    the order they failed in, which a pool leaves to chance)."""

    def __init__(self, keep_going: bool, tasks: list):
        self.keep_going, self.errors = keep_going, []
        self._order = {id(t): i for i, t in enumerate(tasks)}

    def call(self, get, task):
        """``get()``, or None when it raised a ThermocgError that is kept for later (a worker's
        death is raised at once: the pool it broke cannot run the others)."""
        try:
            return get(), True
        except ThermocgError as err:
            if not self.keep_going or getattr(err, "worker_died", False):
                raise
            self.errors.append((self._order[id(task)], err))
            self.errors.sort(key=lambda e: e[0])
            return None, False

    def raise_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0][1]
        if self.errors:
            raise SimulationError("; ".join(str(e) for _, e in self.errors))


def _blocked(tasks, label) -> ThermocgError:
    return ThermocgError(f"no task can start: {[label(t) for t in tasks]} wait for tasks that did not finish")


class Executor:
    """Where a stage's tasks run. ``threads``: the CPU threads each task may use (None: the
    libraries' defaults, or the Dask worker's own)."""

    threads: int | None = None

    def describe(self) -> str:
        raise NotImplementedError

    def map(self, fn, tasks: Iterable, *, label: Callable[[object], str], finished: Callable[[object, object], None],
            events: Callable[[object, object], None] | None = None, after: Callable[[object], list] | None = None,
            keep_going: bool = False, died: type[Exception] = SimulationError) -> None:
        tasks = list(tasks)
        if tasks:
            self._map(fn, tasks, label, finished, events or (lambda task, event: None), after or (lambda task: []),
                      _Failures(keep_going, tasks), died)

    def _map(self, fn, tasks, label, finished, events, after, failures, died) -> None:
        raise NotImplementedError


class Serial(Executor):
    """Every task here, one after another (a task whose ``after`` tasks are done first)."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def describe(self) -> str:
        return "in this process" + (f" x {self.threads} thread(s)" if self.threads else "")

    def _map(self, fn, tasks, label, finished, events, after, failures, died) -> None:
        waiting, done = list(tasks), set()
        while waiting:
            task = next((t for t in waiting if all(id(d) in done for d in after(t))), None)
            if task is None:
                failures.raise_any()
                raise _blocked(waiting, label)
            waiting.remove(task)
            with _emitting(lambda event, task=task: events(task, event)):
                result, ok = failures.call(lambda: task_result(lambda: fn(task), label(task)), task)
            if ok:
                done.add(id(task))
                finished(task, result)
        failures.raise_any()


def _submit_loop(tasks, capacity: int, submit, wait_first, result, label, finished, after, failures,
                 drain=lambda: None) -> None:
    """The scheduling loop of the pool backends: submit what is ready (up to ``capacity``
    running), wait for the first to end, hand out its result, repeat."""
    waiting, running, done = list(tasks), {}, set()
    while waiting or running:
        for task in [t for t in waiting if all(id(d) in done for d in after(t))]:
            if len(running) >= capacity:
                break
            waiting.remove(task)
            running[submit(task)] = task
        if not running:
            failures.raise_any()
            raise _blocked(waiting, label)
        ended = wait_first(list(running))
        drain()
        for fut in ended:
            task = running.pop(fut)
            value, ok = failures.call(lambda: result(fut, label(task)), task)
            if ok:
                done.add(id(task))
                finished(task, value)
    drain()
    failures.raise_any()


#: a worker's last message of a task, after all its events (one process's puts arrive in order)
_SETTLED = "thermocg.tasks: settled"


def _in_worker(fn, index: int, task):
    """A task in a local worker process: its events go on the pool's queue with its index, then
    a last message that says there are no more."""
    from thermocg import workers

    progress = workers.PROGRESS
    try:
        with _emitting(lambda event: progress.put((index, event))):
            return fn(task)
    finally:
        progress.put((index, _SETTLED))


class LocalProcesses(Executor):
    """``procs`` worker processes of this machine (spawned; they die with this process), each
    task with ``threads`` threads; with one process or one task, :class:`Serial` here."""

    def __init__(self, procs: int, threads: int | None):
        self.procs, self.threads = max(1, procs), threads

    def describe(self) -> str:
        return f"{self.procs} process(es) x {self.threads} thread(s)"

    def runs_here(self, n_tasks: int) -> bool:
        """Whether ``n_tasks`` tasks run in this process (one worker or one task: no pool),
        where progress bars can be drawn."""
        return self.procs == 1 or n_tasks == 1

    def _map(self, fn, tasks, label, finished, events, after, failures, died) -> None:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        from thermocg import workers

        if self.runs_here(len(tasks)):
            Serial(self.threads)._map(fn, tasks, label, finished, events, after, failures, died)
            return
        index = {id(t): k for k, t in enumerate(tasks)}
        pool, q = workers.start_pool(self.procs, self.threads)
        of_future, settled = {}, set()

        def drain(until: int | None = None):
            """The events on the queue; with ``until``, wait for that task's last one too (a
            result can arrive before the events sent ahead of it: a finished file recorded
            late, or not at all)."""
            deadline = time.monotonic() + 30.0
            while True:
                block = until is not None and until not in settled
                try:
                    k, event = q.get(timeout=max(0.0, deadline - time.monotonic())) if block else q.get_nowait()
                except queue.Empty:
                    return
                if isinstance(event, str) and event == _SETTLED:
                    settled.add(k)
                else:
                    events(tasks[k], event)

        def submit(task):
            def send():
                return pool.submit(_in_worker, fn, index[id(task)], task)

            # a worker that died while others ran breaks the pool before their results are read:
            # the next submission fails, and names a task that was running (the pool cannot say which)
            running = [k for f, k in of_future.items() if not f.done()] or list(of_future.values())
            fut = task_result(send, label(tasks[running[0]] if running else task), BrokenProcessPool, died)
            of_future[fut] = index[id(task)]
            return fut

        def result(fut, name):
            value = task_result(fut.result, name, BrokenProcessPool, died)
            drain(until=of_future[fut])
            return value

        try:
            _submit_loop(tasks, self.procs, submit,
                         lambda futs: wait(futs, timeout=0.2, return_when=FIRST_COMPLETED)[0],
                         result, label, finished, after, failures, drain)
        except BaseException:
            workers.stop_workers(pool)  # Ctrl-C, SIGTERM or an error: no worker may outlive this stage
            raise
        pool.shutdown(wait=True)


def _on_dask(fn, task):
    """A task on a Dask worker: torch on the worker's threads."""
    from thermocg import cluster

    cluster.use_worker_threads()
    return fn(task)


class Dask(Executor):
    """The tasks on the Dask cluster of ``[run] scheduler`` (:mod:`thermocg.cluster`): every
    ready task is submitted (Dask places it), a task that raised is not retried (our errors are
    deterministic), a task whose workers died is Dask's to reschedule."""

    threads = None  # each task takes its worker's threads

    def __init__(self, scheduler: str):
        self.scheduler = scheduler

    def describe(self) -> str:
        return f"on Dask ({self.scheduler})"

    def _map(self, fn, tasks, label, finished, events, after, failures, died) -> None:
        from distributed import wait
        from distributed.scheduler import KilledWorker

        from thermocg import cluster

        with cluster.client_for(self.scheduler) as client:
            futures = []

            def submit(task):
                futures.append(client.submit(_on_dask, fn, task, pure=False, retries=0))
                return futures[-1]

            try:
                _submit_loop(tasks, len(tasks), submit, lambda futs: wait(futs, return_when="FIRST_COMPLETED").done,
                             lambda fut, name: task_result(fut.result, name, KilledWorker, died),
                             label, finished, after, failures)
            except BaseException:
                client.cancel(futures)
                raise


def executor(processes, n_tasks: int, gpu: bool, scheduler: str | None = None) -> Executor:
    """The executor of ``n_tasks`` tasks: on Dask with a ``scheduler``, else in local processes
    (``processes``: ``[run] processes``, an int or "auto": one per core on a CPU, one on a GPU;
    the cores shared out as threads)."""
    if scheduler is not None:
        return Dask(scheduler)
    from thermocg.workers import plan_processes

    return LocalProcesses(*plan_processes(processes, n_tasks, gpu))
