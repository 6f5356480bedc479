"""The train stage's scheduler: a model that takes another's W0 starts only after that model
is saved, in parallel workers too; a failure names its model."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from thermocg import workers
from thermocg.config import Config
from thermocg.errors import TrainingError
from thermocg.models import stage
from thermocg.models.stage import TrainJob, model_plan, w0_donors
from thermocg.tasks import LocalProcesses, Serial


def _jobs(variants, seeds=()):
    config = Config.model_validate({"reference": {"temperatures_K": [250.0, 300.0]},
                                    "train": {"variants": variants, "seeds": list(seeds)}})
    plan = model_plan(config)
    donors = w0_donors(plan)
    jobs = [TrainJob(config, e, None, Path("."), {}, "cpu",
                     None if e.name not in donors else Path(f"{donors[e.name]}.pt"), False) for e in plan]
    return jobs, donors


@pytest.mark.parametrize("procs", [1, 2, 3])
def test_dependents_start_after_their_donor_is_saved(monkeypatch, procs):
    jobs, donors = _jobs(["fm", "fm-each", "em", "trf2"], seeds=(1, 2))
    events, lock = [], threading.Lock()

    def fake_train(job):
        with lock:
            events.append(("start", job.entry.name))
        time.sleep(0.05 if job.entry.variant == "fm" else 0.01)  # fm is the slow one
        return {"seconds": 0.0, "w0_from": None, "phases": {}}

    monkeypatch.setattr(stage, "train_one", fake_train)
    progress = queue.Queue()  # threads in this process stand in for the worker processes
    monkeypatch.setattr(workers, "start_pool", lambda n, threads=None: (ThreadPoolExecutor(n), progress))
    monkeypatch.setattr(workers, "PROGRESS", progress)
    def saved(job, result):
        with lock:
            events.append(("saved", job.entry.name))

    stage._run_jobs(jobs, LocalProcesses(procs, 1), donors, saved)
    assert sorted(n for kind, n in events if kind == "saved") == sorted(j.entry.name for j in jobs)
    for name, donor in donors.items():
        assert events.index(("saved", donor)) < events.index(("start", name)), events


def test_a_failure_names_its_model(monkeypatch):
    jobs, donors = _jobs(["fm", "trf2"])

    def failing(job):
        if job.entry.variant == "trf2":
            raise TrainingError("training did not improve")
        return {"seconds": 0.0, "w0_from": None, "phases": {}}

    monkeypatch.setattr(stage, "train_one", failing)
    with pytest.raises(TrainingError, match="train trf2: training did not improve"):
        stage._run_jobs(jobs, Serial(), donors, lambda job, result: None)
