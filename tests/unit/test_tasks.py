"""The executor every stage's tasks go through (thermocg.tasks): results handed back as tasks
end, events from running tasks, "after" ordering, errors named once, keep_going, and a dead
worker named at once."""

from __future__ import annotations

import os

import pytest

from thermocg import tasks
from thermocg.errors import SimulationError, TrainingError


def square(x):
    tasks.emit(("started", x))
    if x == 3:
        raise SimulationError("three is refused")
    if x == 4:
        raise SimulationError("task 4 NVE segment 0: blew up")  # names itself, with more after the name
    return x * x


def die(x):
    if x == 0:
        os._exit(7)  # a worker killed mid-task
    return x


def label(x):
    return f"task {x}"


@pytest.mark.parametrize("executor", [tasks.Serial(), tasks.LocalProcesses(2, 1)], ids=["serial", "processes"])
def test_results_events_and_errors(executor):
    got, events = {}, []
    executor.map(square, [1, 2, 5], label=label, finished=lambda t, r: got.__setitem__(t, r),
                 events=lambda t, e: events.append((t, e)))
    assert got == {1: 1, 2: 4, 5: 25}
    assert sorted(events) == [(1, ("started", 1)), (2, ("started", 2)), (5, ("started", 5))]
    with pytest.raises(SimulationError, match="^task 3: three is refused$"):
        executor.map(square, [3], label=label, finished=lambda t, r: None)
    # keep_going: the others finish, both errors are raised together, each named once
    got.clear()
    with pytest.raises(SimulationError) as err:
        executor.map(square, [3, 1, 4, 2], label=label, finished=lambda t, r: got.__setitem__(t, r),
                     keep_going=True)
    assert got == {1: 1, 2: 4}
    assert str(err.value) == "task 3: three is refused; task 4 NVE segment 0: blew up"


def test_after_orders_the_tasks():
    """A task starts only when the tasks it comes after have finished (the train stage: a model
    after the model it takes W0 from), whatever order they were given in."""
    order = []
    deps = {"b": ["a"], "c": ["b"], "a": []}
    tasks.Serial().map(lambda t: order.append(t), ["c", "b", "a"], label=str, finished=lambda t, r: None,
                       after=lambda t: deps[t])
    assert order == ["a", "b", "c"]
    with pytest.raises(Exception, match=r"no task can start: \['x'\]"):
        tasks.Serial().map(lambda t: t, ["x"], label=str, finished=lambda t, r: None, after=lambda t: ["never"])


def test_a_dead_worker_is_named_at_once_even_when_keeping_going():
    """A worker process that dies breaks its pool: the error names the task and says to re-run,
    and is raised at once (with keep_going the next submission would otherwise hit the broken
    pool with a bare traceback)."""
    with pytest.raises(TrainingError, match=r"^task \d: a worker process died .*re-run the same command to resume$"):
        # the pool cannot tell which of its running tasks lost the process: one of them is named
        tasks.LocalProcesses(2, 1).map(die, [0, 1, 2, 3], label=label, finished=lambda t, r: None,
                                       keep_going=True, died=TrainingError)


def test_the_executor_follows_run_processes_and_scheduler():
    assert isinstance(tasks.executor(1, 5, gpu=False), tasks.LocalProcesses)
    assert tasks.executor(1, 5, gpu=False).describe() == f"1 process(es) x {os.cpu_count()} thread(s)"
    assert tasks.executor("auto", 5, gpu=True).procs == 1  # one process on a GPU
    dask = tasks.executor("auto", 5, gpu=False, scheduler="local:2")
    assert isinstance(dask, tasks.Dask) and dask.threads is None and "local:2" in dask.describe()
