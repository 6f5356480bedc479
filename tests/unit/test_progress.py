"""Progress in a log file (issue 33): plain lines, a tenth of the work apart, the last one once;
bars only on a terminal."""

from __future__ import annotations

import logging

import pytest
from tqdm.auto import tqdm as plain

from thermocg import progress


def test_a_log_gets_a_line_per_tenth_and_the_end_once(caplog, monkeypatch):
    monkeypatch.setattr(progress.LineProgress, "every_s", 0.0)
    with caplog.at_level(logging.INFO, logger="thermocg"):
        bar = progress.tqdm(total=1000, desc="reference T300K", unit="step", mininterval=0)
        for _ in range(1000):
            bar.update(1)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert 10 <= len(lines) <= 11, lines  # every tenth (the last tenth and the end may coincide)
    assert all(line.startswith("reference T300K:") and "\r" not in line for line in lines)
    assert lines[-1].startswith("reference T300K: 100% 1000/1000")
    assert sum("100%" in line for line in lines) == 1


def test_time_between_lines_and_hidden_bars(caplog, monkeypatch):
    monkeypatch.setattr(progress.LineProgress, "every_s", 3600.0)  # a tenth done, but too soon: no line
    with caplog.at_level(logging.INFO, logger="thermocg"):
        with progress.tqdm(total=50, desc="train", mininterval=0) as bar:
            bar.update(25)
        assert caplog.records == []  # not finished, and no hour has passed
        hidden = progress.tqdm(total=5, desc="hidden", disable=True)
        hidden.update(5)
        hidden.close()
    assert caplog.records == []


@pytest.mark.parametrize("setting, kind", [("bars", plain), ("lines", progress.LineProgress)])
def test_the_environment_can_choose(monkeypatch, setting, kind):
    monkeypatch.setenv("THERMOCG_PROGRESS", setting)
    bar = progress.tqdm(total=1, disable=True)
    assert type(bar) is kind
    bar.close()


def test_not_a_terminal_means_lines(monkeypatch):
    monkeypatch.delenv("THERMOCG_PROGRESS", raising=False)
    bar = progress.tqdm(total=1, disable=True)  # pytest's captured stderr is not a terminal
    assert type(bar) is progress.LineProgress
    bar.close()
