"""What made a report: the run's provenance (command, commit, machine, date, each stage's wall
time) and the outputs of the bench scripts a study adds (claims 4 and 5)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from thermocg import __version__
from thermocg.config import Config
from thermocg.errors import DataFormatError


def _bench_output(path: Path, script: str, read):
    """``read(data)`` of a bench script's JSON output at ``path``, or None when it has not been run;
    a file of another shape is refused naming the script. Not a stage: after a new run, rebuild
    the report with ``thermocg report --force``."""
    if not path.exists():
        return None
    try:
        return read(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise DataFormatError(f"{path}: not an output of {script} ({err!r}); run it again") from err


def convergence_summary(config: Config) -> dict | None:
    """The variants of ``bench/convergence.py``'s summary for this run (claim 4), or None when
    it has not been run."""
    return _bench_output(config.run_dir / "convergence" / "summary.json", "bench/convergence.py",
                         lambda data: data["variants"])


def reference_check(config: Config) -> dict | None:
    """``bench/reference_check.py``'s output for this run (``<run>/reference_check.json``, claim
    5), or None when it has not been run."""
    def read(data):
        data["yeh_hummer_fit"], data["published"]  # noqa: B018 - the keys claim 5 reads
        return data

    return _bench_output(config.run_dir / "reference_check.json", "bench/reference_check.py", read)


def exact_response(config: Config) -> dict | None:
    """Each model group's error against the exact mean force, from ``bench/restrained_response.py``
    run with ``--out <run>/exact_response.json`` (issue 29: W0's error before and after), or None
    when it has not been run: ``{"frames_at_K", "configurations", "T0_K", "models": {group:
    {"T0": [mean, s.e.], "<T>": [mean, s.e.], ...}}}``, MSE beyond the sampling noise in
    (kcal/mol/Å)², mean and standard error over seeds."""
    def read(data):
        models = {group: {"T0": g["mean_sem"]["T0_mse"],
                          **{t: v["mse_beyond_noise"] for t, v in g["mean_sem"].items() if t != "T0_mse"}}
                  for group, g in data["models"].items()}
        return {"frames_at_K": data["frames_at_K"], "configurations": len(data["frames"]), "T0_K": data["T0_K"],
                "commit": data.get("commit"), "models": models}

    return _bench_output(config.run_dir / "exact_response.json", "bench/restrained_response.py", read)


def provenance(config: Config, walls_s: dict) -> dict:
    """What made this run: command, code (version and git commit, when thermocg runs from a
    checkout), machine, date, and each stage's wall time (``walls_s``: stage name -> seconds
    over every run that worked on its outputs, None when unknown)."""
    import datetime
    import os
    import subprocess
    import sys

    source = Path(__file__).resolve().parents[1]
    commit = "unknown (not a git checkout)"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=source,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            commit = head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    machine = f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
    try:
        import torch
        if torch.cuda.is_available():
            machine += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    walls = [f"{name} {wall / 60:.1f} min" if isinstance(wall, (int, float)) else f"{name} n/a"
             for name, wall in walls_s.items()]
    argv = sys.argv
    command = " ".join(["thermocg", *argv[1:]]) if argv and Path(argv[0]).name in ("thermocg", "main.py") else "?"
    return {"command": command, "config": str(config.source), "thermocg": __version__, "commit": commit,
            "machine": machine, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall time per stage": ", ".join(walls)}
